"""Shared pieces of the DRA driver tests: devices, claims as the API returns them."""

from __future__ import annotations

from typing import Any

from kubenpu.deviceplugin.backends.mock import MockBackend
from kubenpu.deviceplugin.devices import NpuDevice

DRIVER = "npu.aliyun.com"
NODE = "npu-node-1"


def mock_devices(count: int = 4) -> tuple[MockBackend, list[NpuDevice]]:
    backend = MockBackend(count)
    return backend, backend.discover()


def claim(
    devices: list[str],
    *,
    uid: str = "uid-1",
    name: str = "c1",
    namespace: str = "default",
    driver: str = DRIVER,
    pool: str = NODE,
    config: list[dict[str, Any]] | None = None,
    allocated: bool = True,
) -> dict[str, Any]:
    """A ResourceClaim as the API returns it once the scheduler allocated ``devices``."""
    obj: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {"devices": {"requests": [{"name": "npu"}]}},
        "status": {},
    }
    if allocated:
        obj["status"]["allocation"] = {
            "devices": {
                "results": [
                    {"request": "npu", "driver": driver, "pool": pool, "device": d} for d in devices
                ],
                "config": config or [],
            },
            "nodeSelector": {"nodeSelectorTerms": []},
        }
    return obj
