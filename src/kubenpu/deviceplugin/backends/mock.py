"""The mock backend: N made-up devices for tests and demos, health driven by marker files."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence

from kubenpu.deviceplugin.backends.base import Backend
from kubenpu.deviceplugin.devices import NpuDevice
from kubenpu.errors import ConfigError
from kubenpu.names import REFERENCE_NPU_MODEL

#: Major number of the mock device nodes: one of Linux's "local/experimental use" char
#: majors (240-254), which no driver claims. Opening such a node fails (ENXIO), but it is
#: a real device node: the kubelet and runc pass it into containers, and the devices
#: cgroup admits it, exactly as for hardware.
MOCK_MAJOR = 241


class MockBackend(Backend):
    """``count`` devices ``npu-0`` .. ``npu-<count-1>``.

    Devices are spread over ``numa_nodes`` NUMA nodes in contiguous blocks (the first half
    on node 0, the second on node 1 for two nodes), which is also their interconnect group.
    While a file ``<health_dir>/unhealthy-<device id>`` exists, that device is unhealthy.
    Without ``dev_dir`` the device nodes are named ``/dev/mock-npu<index>`` but do not exist
    (enough for the kubelet stand-in). With ``dev_dir`` they are real character devices
    ``<dev_dir>/mock-npu<index>`` (major :data:`MOCK_MAJOR`, minor = index), created at
    discovery, and containers get them as ``/dev/mock-npu<index>``.
    """

    name = "mock"
    env_var = "MOCK_NPU_VISIBLE_DEVICES"

    def __init__(
        self,
        count: int,
        *,
        health_dir: str | None = None,
        dev_dir: str | None = None,
        model: str = REFERENCE_NPU_MODEL,
        memory_gib: int = 16,
        numa_nodes: int = 2,
    ) -> None:
        self.count = count
        self.health_dir = health_dir
        self.dev_dir = dev_dir
        self.model = model
        self.memory_gib = memory_gib
        self.numa_nodes = max(1, min(numa_nodes, count)) if count else 1

    def discover(self) -> list[NpuDevice]:
        """The configured number of devices (creating their nodes in ``dev_dir``, if set)."""
        if self.dev_dir:
            for i in range(self.count):
                _ensure_char_device(os.path.join(self.dev_dir, f"mock-npu{i}"), MOCK_MAJOR, i)
        node_dir = self.dev_dir or "/dev"
        per_node = -(-self.count // self.numa_nodes)  # ceiling: contiguous blocks
        return [
            NpuDevice(
                id=f"npu-{i}",
                index=i,
                model=self.model,
                memory_mib=self.memory_gib * 1024,
                numa_node=i // per_node,
                group=i // per_node,
                paths=(os.path.join(node_dir, f"mock-npu{i}"),),
            )
            for i in range(self.count)
        ]

    def device_node(self, path: str) -> tuple[str, str]:
        """Host path in ``dev_dir``, container path under ``/dev``."""
        return path, "/dev/" + os.path.basename(path)

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


def _ensure_char_device(path: str, major: int, minor: int) -> None:
    """Make ``path`` a character device ``major:minor`` unless it already is one."""
    want = os.makedev(major, minor)
    try:
        st = os.stat(path)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == want:
            return
        os.unlink(path)
    except FileNotFoundError:
        pass
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mknod(path, 0o666 | stat.S_IFCHR, want)
    except PermissionError as err:
        raise ConfigError(
            f"mock-dev-dir: cannot create device node {path} ({err.strerror}); the mock "
            "backend needs CAP_MKNOD for real device nodes (run as root or privileged)"
        ) from err
