"""What a ResourceClaim (``resource.k8s.io/v1``) was allocated on this node. Pure, no I/O.

The scheduler's DRA allocator writes ``status.allocation.devices.results``: one entry per
allocated device with the request it serves, the driver, the pool and the device name.
The driver takes the entries of its own driver name and its node's pool; every other
driver's devices are that driver's to prepare. Opaque configuration for this driver is
refused with a clear message: this driver takes no parameters yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubenpu.errors import KubeNpuError


class ClaimError(KubeNpuError):
    """A claim cannot be prepared as it stands (not allocated, unknown device, bad config).

    The message is what the kubelet shows on the pod's events."""


@dataclass(frozen=True, slots=True)
class AllocatedDevice:
    """One device of this driver in a claim's allocation."""

    request: str
    pool: str
    device: str


def claim_ref(claim: Mapping[str, Any]) -> str:
    """``namespace/name`` of a claim object, for messages."""
    meta = claim.get("metadata") or {}
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"


def allocated_devices(
    claim: Mapping[str, Any], driver: str, pool: str, *, uid: str | None = None
) -> list[AllocatedDevice]:
    """The devices ``driver`` must prepare for ``claim`` from ``pool`` (this node).

    Raises :class:`ClaimError` when the claim is not the one asked for (``uid``), is not
    allocated, has devices of this driver in another pool, or carries opaque config for
    this driver."""
    ref = claim_ref(claim)
    meta = claim.get("metadata") or {}
    if uid is not None and meta.get("uid") != uid:
        raise ClaimError(
            f"claim {ref}: uid {meta.get('uid')!r} in the API, the kubelet asked for {uid!r} "
            "(deleted and created again?)"
        )
    allocation = (claim.get("status") or {}).get("allocation")
    if not isinstance(allocation, Mapping):
        raise ClaimError(f"claim {ref} is not allocated (status.allocation is missing)")
    devices = allocation.get("devices") or {}
    if not isinstance(devices, Mapping):
        raise ClaimError(f"claim {ref}: status.allocation.devices is not an object")
    _check_config(ref, devices.get("config") or [], driver)
    found: list[AllocatedDevice] = []
    for i, result in enumerate(devices.get("results") or []):
        if not isinstance(result, Mapping):
            raise ClaimError(f"claim {ref}: allocation result {i} is not an object")
        if result.get("driver") != driver:
            continue
        where = f"claim {ref}: allocation result {i}"
        name, device_pool = result.get("device"), result.get("pool")
        request = result.get("request")
        if not isinstance(name, str) or not name or not isinstance(request, str):
            raise ClaimError(f"{where}: needs a device and a request name")
        if device_pool != pool:
            raise ClaimError(
                f"{where}: device {name} is in pool {device_pool!r}, this node serves pool {pool!r}"
            )
        found.append(AllocatedDevice(request, pool, name))
    return found


def _check_config(ref: str, config: Any, driver: str) -> None:
    if not isinstance(config, list):
        raise ClaimError(f"claim {ref}: status.allocation.devices.config is not a list")
    for i, entry in enumerate(config):
        opaque = entry.get("opaque") if isinstance(entry, Mapping) else None
        if not isinstance(opaque, Mapping) or opaque.get("driver") != driver:
            continue
        parameters = opaque.get("parameters")
        if parameters in (None, {}):
            continue
        raise ClaimError(
            f"claim {ref}: config {i} ({entry.get('source', 'claim')}) gives {driver} opaque "
            f"parameters {_short(parameters)}; this driver takes none yet (remove the "
            "opaque config from the claim or its DeviceClass)"
        )


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
