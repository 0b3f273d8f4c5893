"""The node's ResourceSlice (``resource.k8s.io/v1``): one device per NPU. Pure, no I/O.

One pool per node, named after the node, in one slice named ``<node>-<driver>``. Each NPU
is a device named by its backend id (``npu-0``) with

- attributes (in the driver's domain, so CEL reads ``device.attributes["npu.aliyun.com"]``):
  ``model`` (string), ``index`` (int, the number in its device node), ``group`` (int, the
  interconnect group) and ``numaNode`` (int, when known);
- ``allowMultipleAllocations: true`` and consumable capacity (KEP-5075): ``compute``
  (``100``: percent of one NPU, the unit of ``aliyun.com/npu-core``; a claim asks
  1..100 in steps of 1, and a request that asks no compute consumes all 100, so it has
  the device to itself) and ``memory`` (the device's memory, such as ``16Gi``; asked in
  steps of 1Gi, and a request that asks none consumes none: memory bounds shares, compute
  decides who may share). Several claims share a device while their compute adds up to at
  most 100, the rule the device plugin's ``aliyun.com/npu-core`` follows;
- a taint ``<driver>/unhealthy`` (:func:`taint_key`; effect ``NoSchedule``, ``timeAdded``
  when it failed) while the backend reports the device unhealthy: the scheduler gives it to
  no new claim, the claims that hold it keep it. The taint is the one rule; the DeviceClass
  selects no health attribute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from kubenpu import names
from kubenpu.deviceplugin.devices import NpuDevice

#: The driver name kubenpu registers by default (a DNS subdomain, as DRA requires).
DEFAULT_DRIVER: Final = names.DRA_DRIVER
API_VERSION: Final = "resource.k8s.io/v1"
KIND: Final = "ResourceSlice"
#: Percent of one NPU: what ``compute`` counts (the unit of aliyun.com/npu-core).
COMPUTE_PER_DEVICE: Final = names.CORE_UNITS_PER_DEVICE
#: The capacity names a claim asks in ``capacity.requests`` (the driver's domain).
CAPACITY_COMPUTE: Final = "compute"
CAPACITY_MEMORY: Final = "memory"
#: The effect of the taint on a device the backend reports unhealthy.
TAINT_EFFECT: Final = "NoSchedule"


def slice_name(node: str, driver: str) -> str:
    """The name of ``node``'s slice of ``driver``."""
    return f"{node}-{driver}"


def pool_name(node: str) -> str:
    """The pool a node's devices are in (one pool per node)."""
    return node


def memory_quantity(mib: int) -> str:
    """``mib`` MiB as the slice writes it: ``16Gi``, or ``1536Mi`` when not whole GiB."""
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def taint_key(driver: str) -> str:
    """The key of the taint on ``driver``'s unhealthy devices: ``npu.aliyun.com/unhealthy``."""
    return f"{driver}/unhealthy"


def device_entry(
    device: NpuDevice, since: str | None = None, *, driver: str = DEFAULT_DRIVER
) -> dict[str, Any]:
    """One ``spec.devices`` entry; ``since`` (RFC 3339): the device is unhealthy since then,
    and carries the taint."""
    attributes: dict[str, Any] = {
        "model": {"string": device.model or "unknown"},
        "index": {"int": device.index},
        "group": {"int": device.group},
    }
    if device.numa_node is not None:
        attributes["numaNode"] = {"int": device.numa_node}
    capacity: dict[str, Any] = {
        CAPACITY_COMPUTE: {
            "value": str(COMPUTE_PER_DEVICE),
            "requestPolicy": {
                "default": str(COMPUTE_PER_DEVICE),
                "validRange": {"min": "1", "max": str(COMPUTE_PER_DEVICE), "step": "1"},
            },
        }
    }
    if device.memory_mib:
        whole_gib = device.memory_mib // 1024
        valid: dict[str, str] = {"min": "0"}
        if whole_gib:  # the policy's max must be a whole number of steps
            valid.update(max=f"{whole_gib}Gi", step="1Gi")
        capacity[CAPACITY_MEMORY] = {
            "value": memory_quantity(device.memory_mib),
            "requestPolicy": {"default": "0", "validRange": valid},
        }
    entry: dict[str, Any] = {
        "name": device.id,
        "attributes": attributes,
        "capacity": capacity,
        "allowMultipleAllocations": True,
    }
    if since is not None:
        entry["taints"] = [unhealthy_taint(driver, since)]
    return entry


def unhealthy_taint(driver: str, since: str) -> dict[str, str]:
    """The taint of a device unhealthy since ``since`` (RFC 3339, whole seconds)."""
    return {"key": taint_key(driver), "effect": TAINT_EFFECT, "timeAdded": since}


def slice_spec(
    driver: str,
    node: str,
    devices: Sequence[NpuDevice],
    unhealthy_since: Mapping[str, str],
    *,
    generation: int = 1,
) -> dict[str, Any]:
    """The ``spec`` of ``node``'s slice: every device, the unhealthy ones (id -> since
    when, RFC 3339) tainted."""
    return {
        "driver": driver,
        "nodeName": node,
        "pool": {"name": pool_name(node), "generation": generation, "resourceSliceCount": 1},
        "devices": [device_entry(d, unhealthy_since.get(d.id), driver=driver) for d in devices],
    }


def resource_slice(
    driver: str,
    node: str,
    devices: Sequence[NpuDevice],
    unhealthy_since: Mapping[str, str],
    *,
    generation: int = 1,
    owner: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The whole ResourceSlice object. ``owner``: the Node (name, uid), so the slice goes
    with its Node."""
    metadata: dict[str, Any] = {"name": slice_name(node, driver)}
    if owner:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "name": owner["name"],
                "uid": owner["uid"],
                "controller": True,
            }
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": slice_spec(driver, node, devices, unhealthy_since, generation=generation),
    }


def same_devices(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether a slice from the API already says what ``desired`` says (spec fields the API
    server may default, such as the pool generation, are compared as given)."""
    have, want = existing.get("spec", {}), desired.get("spec", {})
    keys = ("driver", "nodeName", "devices")
    if any(have.get(k) != want.get(k) for k in keys):
        return False
    pool_have, pool_want = have.get("pool", {}), want.get("pool", {})
    return bool(
        pool_have.get("name") == pool_want.get("name")
        and pool_have.get("resourceSliceCount") == pool_want.get("resourceSliceCount")
    )


def stale_slices(listed: Sequence[Mapping[str, Any]], driver: str, node: str) -> list[str]:
    """Names of the listed slices of ``driver`` on ``node`` that are not the one it keeps."""
    keep = slice_name(node, driver)
    return [
        s["metadata"]["name"]
        for s in listed
        if s.get("spec", {}).get("driver") == driver
        and s.get("spec", {}).get("nodeName") == node
        and s["metadata"]["name"] != keep
    ]
