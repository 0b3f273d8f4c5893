"""The node's ResourceSlice (``resource.k8s.io/v1``): one device per NPU. Pure, no I/O.

One pool per node, named after the node, in one slice named ``<node>-<driver>``. Each NPU
is a device named by its backend id (``npu-0``) with

- attributes (in the driver's domain, so CEL reads ``device.attributes["npu.aliyun.com"]``):
  ``model`` (string), ``index`` (int, the number in its device node), ``group`` (int, the
  interconnect group), ``numaNode`` (int, when known) and ``healthy`` (bool, from the
  backend's health check);
- capacity: ``memory`` (the device's memory, a quantity such as ``16Gi``) and ``compute``
  (``100``: percent of one NPU, the unit of ``aliyun.com/npu-core``).

The DeviceClass kubenpu documents selects only healthy devices, so a device that turns
unhealthy takes no new claims while it is so (device taints are not used yet).
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
COMPUTE_PER_DEVICE: Final = 100


def slice_name(node: str, driver: str) -> str:
    """The name of ``node``'s slice of ``driver``."""
    return f"{node}-{driver}"


def pool_name(node: str) -> str:
    """The pool a node's devices are in (one pool per node)."""
    return node


def device_entry(device: NpuDevice, healthy: bool) -> dict[str, Any]:
    """One ``spec.devices`` entry."""
    attributes: dict[str, Any] = {
        "model": {"string": device.model or "unknown"},
        "index": {"int": device.index},
        "group": {"int": device.group},
        "healthy": {"bool": healthy},
    }
    if device.numa_node is not None:
        attributes["numaNode"] = {"int": device.numa_node}
    capacity: dict[str, Any] = {"compute": {"value": str(COMPUTE_PER_DEVICE)}}
    if device.memory_mib:
        memory = device.memory_mib
        capacity["memory"] = {
            "value": f"{memory // 1024}Gi" if memory % 1024 == 0 else f"{memory}Mi"
        }
    return {"name": device.id, "attributes": attributes, "capacity": capacity}


def slice_spec(
    driver: str,
    node: str,
    devices: Sequence[NpuDevice],
    unhealthy: Mapping[str, str],
    *,
    generation: int = 1,
) -> dict[str, Any]:
    """The ``spec`` of ``node``'s slice: every device, the unhealthy ones marked so."""
    return {
        "driver": driver,
        "nodeName": node,
        "pool": {"name": pool_name(node), "generation": generation, "resourceSliceCount": 1},
        "devices": [device_entry(d, d.id not in unhealthy) for d in devices],
    }


def resource_slice(
    driver: str,
    node: str,
    devices: Sequence[NpuDevice],
    unhealthy: Mapping[str, str],
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
        "spec": slice_spec(driver, node, devices, unhealthy, generation=generation),
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
