"""The DeviceClass users claim NPUs through, and ResourceClaimTemplates for one NPU and
for a share of one. Pure.

The class selects this driver's devices, and with ``extendedResourceName`` it lets a plain
``resources.limits: {aliyun.com/npu: 1}`` pod be served by DRA on nodes that do not
advertise ``aliyun.com/npu`` themselves (KEP-5004, GA in Kubernetes 1.37); nodes with the
device plugin keep serving it as an extended resource. It selects no health: an unhealthy
device carries a ``NoSchedule`` taint in the ResourceSlice (``slices.taint_key``), which
keeps new claims off it. One class serves whole devices and shares: a request that asks no
``compute`` consumes all of it (the device's request policy), so it has the device to
itself, and shares (``capacity.requests: {compute: "30"}``) fit beside each other only.
"""

from __future__ import annotations

from typing import Any

from kubenpu.names import RESOURCE_NPU


def selector(driver: str) -> str:
    """The CEL expression of the class: this driver's devices."""
    return f'device.driver == "{driver}"'


def device_class(
    driver: str, *, name: str | None = None, extended_resource: str | None = RESOURCE_NPU
) -> dict[str, Any]:
    """The DeviceClass ``name`` (default: the driver name) for ``driver``'s NPUs."""
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": selector(driver)}}]}
    if extended_resource:
        spec["extendedResourceName"] = extended_resource
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name or driver},
        "spec": spec,
    }


def share_template(
    name: str, device_class_name: str, compute: int, memory_gib: int = 0
) -> dict[str, Any]:
    """A ResourceClaimTemplate for ``compute`` percent (and ``memory_gib`` GiB, when
    given) of one NPU of ``device_class_name``: the "30% of one NPU" of docs/dra.md."""
    template = claim_template(name, device_class_name)
    requests: dict[str, str] = {"compute": str(compute)}
    if memory_gib:
        requests["memory"] = f"{memory_gib}Gi"
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    request["exactly"]["capacity"] = {"requests": requests}
    return template


def claim_template(name: str, device_class_name: str, count: int = 1) -> dict[str, Any]:
    """A ResourceClaimTemplate for ``count`` whole NPUs of ``device_class_name``."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "npu",
                            "exactly": {
                                "deviceClassName": device_class_name,
                                "allocationMode": "ExactCount",
                                "count": count,
                            },
                        }
                    ]
                }
            }
        },
    }
