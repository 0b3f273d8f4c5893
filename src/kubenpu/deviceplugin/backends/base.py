"""The backend interface: discover devices, report health, describe what a container needs."""

from __future__ import annotations

import os
import re
import stat
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

from kubenpu.deviceplugin.devices import MountSpec, NpuDevice

_TRAILING_NUMBER = re.compile(r"(\d+)$")


class Backend(ABC):
    """A source of devices. Subclasses set ``name`` and ``env_var`` and implement discovery.

    ``unhealthy`` is polled by the daemon's health monitor (every ``health-interval``) and
    must not block for long; providers with an event API drain it without waiting.
    """

    #: Name used in ``--backend``.
    name: str = ""
    #: The backend's own visible-devices variable (set next to ``NPU_VISIBLE_DEVICES``).
    env_var: str = ""

    #: Control devices and mounts from the config, added to the backend's own.
    extra_control_devices: tuple[str, ...] = ()
    mounts: tuple[MountSpec, ...] = ()

    def configure(
        self,
        *,
        control_devices: Sequence[str] = (),
        mounts: Sequence[MountSpec] = (),
        env_var: str | None = None,
    ) -> None:
        """Apply the config's extra control devices, mounts and env variable name."""
        self.extra_control_devices = tuple(control_devices)
        self.mounts = tuple(mounts)
        if env_var:
            self.env_var = env_var

    @abstractmethod
    def discover(self) -> list[NpuDevice]:
        """Find the node's devices, ordered by index; empty when there are none."""

    def unhealthy(self, devices: Sequence[NpuDevice]) -> Mapping[str, str]:
        """Ids of the devices that are unhealthy now, each with a reason (default: none)."""
        return {}

    def device_node(self, path: str) -> tuple[str, str]:
        """(host path, container path) of one of a device's nodes (the same by default)."""
        return path, path

    def control_devices(self) -> tuple[str, ...]:
        """Host device nodes every container with a device needs (management, control)."""
        return self.extra_control_devices

    def container_mounts(self) -> tuple[MountSpec, ...]:
        """Host paths every container with a device gets (default: the configured ones)."""
        return self.mounts

    def env_value(self, devices: Sequence[NpuDevice]) -> str:
        """Value of :attr:`env_var` for ``devices`` (indices by default)."""
        return ",".join(str(d.index) for d in devices)

    def close(self) -> None:  # noqa: B027 (an optional hook; most backends hold nothing)
        """Release backend resources (libraries, event sets)."""


def char_device_health(path: str) -> str | None:
    """Why the device node ``path`` is unusable, or None when it is present and openable.

    EBUSY counts as healthy: the device is open exclusively by a running container, which
    is exactly what a healthy, allocated device looks like.
    """
    try:
        if not stat.S_ISCHR(os.stat(path).st_mode):
            return f"{path} is not a character device"
    except FileNotFoundError:
        return f"{path} is missing"
    except OSError as err:
        return f"{path}: {err.strerror}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == 16:  # EBUSY
            return None
        return f"cannot open {path}: {err.strerror}"
    os.close(fd)
    return None


def trailing_index(name: str) -> int | None:
    """The number a device node name ends with (``alinpu3`` -> 3), or None."""
    match = _TRAILING_NUMBER.search(name)
    return int(match.group(1)) if match else None


def sysfs_numa_node(dev_path: str) -> int | None:
    """NUMA node of a character device from sysfs, or None when unknown."""
    try:
        st = os.stat(dev_path)
        node_file = f"/sys/dev/char/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/device/numa_node"
        with open(node_file) as f:
            node = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None
