"""The exception family of kubenpu.

Messages carry numbers (what was asked, what was available) and say where to fix the cause.
"""


class KubeNpuError(Exception):
    """Base of every error kubenpu raises on purpose."""


class ConfigError(KubeNpuError):
    """A setting, flag or config file is invalid; the message names the setting."""


class InputError(KubeNpuError):
    """Input data (a trace, a manifest) is malformed; the message names file, line and problem."""

    def __init__(self, problem: str, *, source: str | None = None, line: int | None = None):
        self.problem = problem
        self.source = source
        self.line = line
        where = source or "<input>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {problem}")


class PlacementError(KubeNpuError):
    """A placement cannot be made or recorded (does not fit, already taken, unknown device)."""


class DeviceError(KubeNpuError):
    """A device backend failed (no devices found, unknown or unhealthy device asked for)."""


class ObjectError(KubeNpuError):
    """A Kubernetes object (pod, node, annotation) is malformed; the message names it."""


class WireError(KubeNpuError):
    """A request on a server's wire is malformed (HTTP body, extender args, AdmissionReview).

    Servers answer it with 400 and the message; it never reaches a log as a traceback.
    """


class ApiError(KubeNpuError):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Conflict(ApiError):
    """409: the object changed since it was read (optimistic concurrency)."""
