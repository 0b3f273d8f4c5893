"""The mock backend: N made-up devices for tests and demos, health driven by marker files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from kubenpu.deviceplugin.backends.base import Backend
from kubenpu.deviceplugin.devices import NpuDevice
from kubenpu.names import REFERENCE_NPU_MODEL


class MockBackend(Backend):
    """``count`` devices ``npu-0`` .. ``npu-<count-1>``.

    Devices are spread over ``numa_nodes`` NUMA nodes in contiguous blocks (the first half
    on node 0, the second on node 1 for two nodes), which is also their interconnect group.
    While a file ``<health_dir>/unhealthy-<device id>`` exists, that device is unhealthy.
    Device nodes are ``/dev/mock-npu<index>``; they do not exist and are not needed.
    """

    name = "mock"
    env_var = "MOCK_NPU_VISIBLE_DEVICES"

    def __init__(
        self,
        count: int,
        *,
        health_dir: str | None = None,
        model: str = REFERENCE_NPU_MODEL,
        memory_gib: int = 16,
        numa_nodes: int = 2,
    ) -> None:
        self.count = count
        self.health_dir = health_dir
        self.model = model
        self.memory_gib = memory_gib
        self.numa_nodes = max(1, min(numa_nodes, count)) if count else 1

    def discover(self) -> list[NpuDevice]:
        """The configured number of devices; no I/O."""
        per_node = -(-self.count // self.numa_nodes)  # ceiling: contiguous blocks
        return [
            NpuDevice(
                id=f"npu-{i}",
                index=i,
                model=self.model,
                memory_mib=self.memory_gib * 1024,
                numa_node=i // per_node,
                group=i // per_node,
                paths=(f"/dev/mock-npu{i}",),
            )
            for i in range(self.count)
        ]

    def unhealthy(self, devices: Sequence[NpuDevice]) -> Mapping[str, str]:
        """Devices with an ``unhealthy-<id>`` marker in the health dir (one listdir)."""
        if not self.health_dir:
            return {}
        try:
            names = set(os.listdir(self.health_dir))
        except OSError:
            return {}
        return {
            d.id: f"marker {self.health_dir}/unhealthy-{d.id}"
            for d in devices
            if f"unhealthy-{d.id}" in names
        }
