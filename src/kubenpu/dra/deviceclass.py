"""The DeviceClass users claim NPUs through, and a ResourceClaimTemplate for one NPU. Pure.

The class selects this driver's healthy devices, and with ``extendedResourceName`` it lets
a plain ``resources.limits: {aliyun.com/npu: 1}`` pod be served by DRA on nodes that do not
advertise ``aliyun.com/npu`` themselves (KEP-5004, GA in Kubernetes 1.37); nodes with the
device plugin keep serving it as an extended resource.
"""

from __future__ import annotations

from typing import Any

from kubenpu.names import RESOURCE_NPU


def selector(driver: str) -> str:
    """The CEL expression of the class: this driver's devices that are healthy now."""
    return f'device.driver == "{driver}" && device.attributes["{driver}"].healthy == true'


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
