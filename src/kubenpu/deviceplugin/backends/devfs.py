"""The devfs backend: generic Linux character devices matching a glob (e.g. /dev/alinpu*)."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence

from kubenpu.deviceplugin.backends.base import (
    Backend,
    char_device_health,
    sysfs_numa_node,
    trailing_index,
)
from kubenpu.deviceplugin.devices import NpuDevice
from kubenpu.names import REFERENCE_NPU_MODEL


class DevfsBackend(Backend):
    """One device per character device node matching ``pattern``.

    The id is the node's file name (``alinpu0``), the index its trailing number, the NUMA
    node comes from sysfs. The interconnect group is ``index // group_size`` when a group
    size is configured, else the NUMA node. Health: the node exists, is a character device
    and can be opened (EBUSY counts as in use, hence healthy). Control devices (e.g. a
    management node) are checked too: when one fails, every device is unhealthy.
    """

    name = "devfs"
    env_var = "ALINPU_VISIBLE_DEVICES"

    def __init__(
        self,
        pattern: str = "/dev/alinpu*",
        *,
        model: str = REFERENCE_NPU_MODEL,
        memory_gib: int = 0,
        group_size: int = 0,
    ) -> None:
        self.pattern = pattern
        self.model = model
        self.memory_gib = memory_gib
        self.group_size = group_size

    def _candidates(self) -> list[tuple[int, str]]:
        found = []
        for path in glob.glob(self.pattern):
            index = trailing_index(os.path.basename(path))
            # Skip siblings without a number (e.g. /dev/alinpu_ctl): those are control nodes.
            if index is not None and path not in self.control_devices():
                found.append((index, path))
        return sorted(found)

    def discover(self) -> list[NpuDevice]:
        """Character devices matching the glob, ordered by index."""
        devices = []
        for index, path in self._candidates():
            numa = sysfs_numa_node(path)
            group = index // self.group_size if self.group_size else (numa or 0)
            devices.append(
                NpuDevice(
                    id=os.path.basename(path),
                    index=index,
                    model=self.model,
                    memory_mib=self.memory_gib * 1024,
                    numa_node=numa,
                    group=group,
                    paths=(path,),
                )
            )
        return devices

    def unhealthy(self, devices: Sequence[NpuDevice]) -> Mapping[str, str]:
        """Devices whose node (or a shared control node) is missing or cannot be opened."""
        for control in self.control_devices():
            reason = char_device_health(control)
            if reason is not None:
                return {d.id: f"control device: {reason}" for d in devices}
        result = {}
        for device in devices:
            for path in device.paths:
                reason = char_device_health(path)
                if reason is not None:
                    result[device.id] = reason
                    break
        return result
