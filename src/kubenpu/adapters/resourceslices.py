"""A DRA node's NPUs and what its claims hold, as the engine models them. Pure, no I/O.

kubenpu's DRA driver publishes one ResourceSlice per node (``dra/slices.py`` writes it):
one pool named after the node, one device per NPU named by its backend id, with the
attributes ``index``, ``model`` and ``group`` in the driver's domain, a ``memory`` capacity
and, while the backend reports it failed, a ``NoSchedule`` taint. :func:`slice_devices`
reads that back as engine :class:`~kubenpu.model.Device` s, so the extender can rate DRA
nodes with the same engine as device-plugin nodes.

What a claim holds is read from its allocation (:mod:`adapters.claims`, the one reader):
a device it consumes ``compute`` of (consumable capacity) holds that many percent of it,
a device without ``consumedCapacity`` is held whole. :func:`claim_holdings` gives one
:class:`Holding` per allocated device, at the pool's node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubenpu.adapters.claims import allocated_devices
from kubenpu.adapters.quantity import mebibytes, parse_quantity
from kubenpu.errors import ObjectError
from kubenpu.model import Device
from kubenpu.names import MILLI_PER_CORE_UNIT, MILLI_PER_DEVICE

#: Taint effects that keep new claims off a device: the engine counts it unhealthy.
_KEEPS_OFF = ("NoSchedule", "NoExecute")
#: The consumable capacity that shares a device, in percent (``aliyun.com/npu-core``'s unit).
CAPACITY_COMPUTE = "compute"


@dataclass(frozen=True, slots=True)
class Holding:
    """What one claim holds of one device: ``milli`` of 1000 (1000: the whole device)."""

    node: str
    device: str
    milli: int


def _attribute(device: Mapping[str, Any], name: str, kind: str) -> object:
    value = (device.get("attributes") or {}).get(name)
    return value.get(kind) if isinstance(value, Mapping) else None


def slice_devices(obj: Mapping[str, Any], driver: str) -> tuple[str, tuple[Device, ...]] | None:
    """``(node, devices)`` of a ResourceSlice of ``driver``; None for another driver's, or
    a slice not bound to one node. Raises ``ObjectError`` naming the slice and field."""
    spec = obj.get("spec")
    if not isinstance(spec, Mapping) or spec.get("driver") != driver:
        return None
    node = spec.get("nodeName")
    if not isinstance(node, str) or not node:
        return None
    name = (obj.get("metadata") or {}).get("name", "?")
    devices = []
    for i, entry in enumerate(spec.get("devices") or []):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ObjectError(f"resourceslice {name}: spec.devices[{i}] has no name")
        index, group = _attribute(entry, "index", "int"), _attribute(entry, "group", "int")
        model = _attribute(entry, "model", "string")
        memory = ((entry.get("capacity") or {}).get("memory") or {}).get("value")
        try:
            memory_mib = mebibytes(memory) if memory is not None else 0
        except ValueError as err:
            raise ObjectError(
                f"resourceslice {name}: device {entry['name']}: capacity memory: {err}"
            ) from None
        taints = entry.get("taints") or []
        healthy = not any(isinstance(t, Mapping) and t.get("effect") in _KEEPS_OFF for t in taints)
        devices.append(
            Device(
                id=entry["name"],
                index=index if isinstance(index, int) else i,
                model=model if isinstance(model, str) else "",
                memory_mib=max(memory_mib, 0),
                healthy=healthy,
                group=group if isinstance(group, int) else 0,
            )
        )
    return node, tuple(devices)


def claim_holdings(claim: Mapping[str, Any], driver: str) -> list[Holding]:
    """What an allocated claim holds of ``driver``'s devices; empty when not allocated.
    Raises ``ObjectError`` (``ClaimError``) for a malformed allocation."""
    if not isinstance((claim.get("status") or {}).get("allocation"), Mapping):
        return []
    held = []
    for device in allocated_devices(claim, driver):
        consumed = dict(device.consumed)
        milli = MILLI_PER_DEVICE
        if CAPACITY_COMPUTE in consumed:
            try:
                percent = int(parse_quantity(consumed[CAPACITY_COMPUTE]))
            except ValueError as err:
                raise ObjectError(f"claim consumedCapacity compute: {err}") from None
            milli = min(max(percent, 0) * MILLI_PER_CORE_UNIT, MILLI_PER_DEVICE)
        held.append(Holding(device.pool, device.device, milli))
    return held
