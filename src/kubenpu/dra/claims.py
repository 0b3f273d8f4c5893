"""What a ResourceClaim (``resource.k8s.io/v1``) was allocated on this node. Pure, no I/O.

The allocation is read by :mod:`kubenpu.adapters.claims` (the one reader, shared with the
extender and ``kubectl npu``); here the driver takes the entries of its own driver name
and checks they are in its node's pool; every other driver's devices are that driver's to
prepare.

Opaque configuration for this driver (``config[].opaque.parameters`` of the claim or its
DeviceClass, copied into the allocation) has one schema, validated before anything is
prepared; anything else is refused with a message naming the field::

    apiVersion: npu.aliyun.com/v1     # <driver>/v1: another group or version is refused
    kind: NpuConfig
    env:                              # optional: extra environment for the container
      NPU_LOG_LEVEL: debug            # (names the driver sets itself are refused)

A config applies to the requests it names (``config[].requests``; none: every request);
entries are applied in allocation order (the class's, then the claim's), a later one
overriding an earlier one's variable.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kubenpu.adapters import claims as _claims
from kubenpu.adapters.claims import AllocatedDevice, ClaimError, claim_ref

__all__ = [
    "AllocatedDevice",
    "ClaimError",
    "NpuConfig",
    "allocated_devices",
    "claim_configs",
    "claim_ref",
]

#: The kind of this driver's opaque parameters.
CONFIG_KIND: Final = "NpuConfig"
#: The fields of :data:`CONFIG_KIND`.
CONFIG_FIELDS: Final = ("apiVersion", "kind", "env")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def config_api_version(driver: str) -> str:
    """The one ``apiVersion`` of ``driver``'s opaque parameters: ``npu.aliyun.com/v1``."""
    return f"{driver}/v1"


@dataclass(frozen=True, slots=True)
class NpuConfig:
    """One validated opaque config of this driver: the requests it applies to (empty:
    every request) and the environment it adds."""

    requests: tuple[str, ...]
    env: tuple[tuple[str, str], ...]

    def applies_to(self, request: str) -> bool:
        """Whether it applies to the result of ``request`` (``parent/sub`` for a
        ``firstAvailable`` subrequest matches a config naming the parent)."""
        return (
            not self.requests
            or request in self.requests
            or (request.split("/", 1)[0] in self.requests)
        )


def allocated_devices(
    claim: Mapping[str, Any], driver: str, pool: str, *, uid: str | None = None
) -> list[AllocatedDevice]:
    """The devices ``driver`` must prepare for ``claim`` from ``pool`` (this node).

    Raises :class:`ClaimError` when the claim is not the one asked for (``uid``), is not
    allocated, has devices of this driver in another pool, or carries opaque config for
    this driver that is not valid (:func:`claim_configs`)."""
    ref = claim_ref(claim)
    meta = claim.get("metadata") or {}
    if uid is not None and meta.get("uid") != uid:
        raise ClaimError(
            f"claim {ref}: uid {meta.get('uid')!r} in the API, the kubelet asked for {uid!r} "
            "(deleted and created again?)"
        )
    claim_configs(claim, driver)
    found = _claims.allocated_devices(claim, driver)
    for device in found:
        if device.pool != pool:
            raise ClaimError(
                f"claim {ref}: device {device.device} is in pool {device.pool!r}, "
                f"this node serves pool {pool!r}"
            )
    return found


def claim_configs(
    claim: Mapping[str, Any],
    driver: str,
    *,
    reserved_env: Collection[str] = (),
) -> list[NpuConfig]:
    """``driver``'s opaque configs in ``claim``'s allocation, validated (module docstring);
    ClaimError naming the entry and the field otherwise. ``reserved_env``: variables the
    driver sets itself, which a config may not set."""
    ref = claim_ref(claim)
    config = _claims.allocation_devices(claim).get("config") or []
    if not isinstance(config, list):
        raise ClaimError(f"claim {ref}: status.allocation.devices.config is not a list")
    found: list[NpuConfig] = []
    for i, entry in enumerate(config):
        opaque = entry.get("opaque") if isinstance(entry, Mapping) else None
        if not isinstance(opaque, Mapping) or opaque.get("driver") != driver:
            continue  # another driver's: not ours to read
        where = f"claim {ref}: config {i} ({entry.get('source', 'claim')}) for {driver}"
        requests = entry.get("requests") or []
        if not isinstance(requests, list) or not all(isinstance(r, str) for r in requests):
            raise ClaimError(f"{where}: requests must be a list of request names")
        parameters = opaque.get("parameters")
        if parameters in (None, {}):
            continue
        env = _parameters(where, parameters, driver, reserved_env)
        found.append(NpuConfig(tuple(requests), env))
    return found


def _parameters(
    where: str, parameters: Any, driver: str, reserved_env: Collection[str]
) -> tuple[tuple[str, str], ...]:
    version = config_api_version(driver)
    if not isinstance(parameters, Mapping):
        raise ClaimError(
            f"{where}: parameters must be an object (apiVersion: {version}, kind: "
            f"{CONFIG_KIND}), got {_short(parameters)}"
        )
    unknown = sorted(str(k) for k in parameters if k not in CONFIG_FIELDS)
    if unknown:
        raise ClaimError(
            f"{where}: parameters.{unknown[0]}: unknown field ({CONFIG_KIND} has "
            f"{', '.join(CONFIG_FIELDS)})"
        )
    api_version = parameters.get("apiVersion")
    if api_version != version:
        group = str(api_version).rpartition("/")[0] if isinstance(api_version, str) else ""
        what = "an unknown version" if group == driver else "not this driver's API"
        raise ClaimError(
            f"{where}: parameters.apiVersion: {api_version!r} is {what}; this driver "
            f"reads {version}"
        )
    kind = parameters.get("kind")
    if kind != CONFIG_KIND:
        raise ClaimError(
            f"{where}: parameters.kind: {kind!r} is not a kind this driver reads ({CONFIG_KIND})"
        )
    env = parameters.get("env")
    if env is None:
        return ()
    if not isinstance(env, Mapping):
        raise ClaimError(f"{where}: parameters.env must be an object of name: value")
    pairs: list[tuple[str, str]] = []
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ClaimError(f"{where}: parameters.env.{name}: not an environment variable name")
        if name in reserved_env:
            raise ClaimError(
                f"{where}: parameters.env.{name}: set by the driver itself, a config may not set it"
            )
        if not isinstance(value, str):
            raise ClaimError(
                f"{where}: parameters.env.{name}: the value must be a string, got {_short(value)}"
            )
        pairs.append((name, value))
    return tuple(pairs)


def config_env(configs: Sequence[NpuConfig], request: str) -> tuple[tuple[str, str], ...]:
    """The environment ``configs`` give the result of ``request`` (later ones win)."""
    env: dict[str, str] = {}
    for config in configs:
        if config.applies_to(request):
            env.update(config.env)
    return tuple(sorted(env.items()))


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
