"""The nvml backend: NVIDIA GPUs through NVML (``nvidia-ml-py``), so any GPU node can serve.

``pynvml`` is imported only when this backend is chosen. Health comes from NVML's critical
XID events: a device that reports one is unhealthy until the daemon restarts, except for
XIDs that an application causes by itself (a crash of the workload is not a broken GPU).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from kubenpu.deviceplugin.backends.base import Backend
from kubenpu.deviceplugin.devices import NpuDevice
from kubenpu.errors import DeviceError

log = logging.getLogger(__name__)

#: XIDs raised by application faults (illegal address, page fault, watchdog of one context,
#: reset channel ...), which leave the GPU itself fine.
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})
#: Control nodes a CUDA container needs besides its /dev/nvidia<minor>.
NVIDIA_CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlBackend(Backend):
    """NVIDIA devices: id = GPU UUID, env ``NVIDIA_VISIBLE_DEVICES`` with the UUIDs."""

    name = "nvml"
    env_var = "NVIDIA_VISIBLE_DEVICES"

    def __init__(self) -> None:
        self._nvml: Any = None
        self._events: Any = None
        self._handles: dict[str, Any] = {}
        self._failed: dict[str, str] = {}

    def _init(self) -> Any:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as err:
                raise DeviceError(
                    "backend nvml needs nvidia-ml-py: pip install 'kubenpu[nvml]'"
                ) from err
            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError as err:
                raise DeviceError(f"backend nvml: NVML init failed: {err}") from err
            self._nvml = pynvml
        return self._nvml

    def discover(self) -> list[NpuDevice]:
        """Every GPU NVML sees, with UUID, index, name, memory and NUMA node."""
        nvml = self._init()
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            minor = nvml.nvmlDeviceGetMinorNumber(handle)
            numa = self._numa_node(handle)
            devices.append(
                NpuDevice(
                    id=uuid,
                    index=index,
                    model=_text(nvml.nvmlDeviceGetName(handle)).lower().replace(" ", "-"),
                    memory_mib=nvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024),
                    numa_node=numa,
                    group=numa or 0,
                    paths=(f"/dev/nvidia{minor}",),
                )
            )
            self._handles[uuid] = handle
        self._watch_events()
        return devices

    def _numa_node(self, handle: Any) -> int | None:
        bus_id = _text(self._nvml.nvmlDeviceGetPciInfo(handle).busId).lower()
        # sysfs spells the PCI domain with 4 hex digits, NVML with 8.
        path = f"/sys/bus/pci/devices/{bus_id[-12:]}/numa_node"
        try:
            with open(path) as f:
                node = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return node if node >= 0 else None

    def _watch_events(self) -> None:
        nvml = self._nvml
        self._events = nvml.nvmlEventSetCreate()
        for uuid, handle in self._handles.items():
            try:
                nvml.nvmlDeviceRegisterEvents(
                    handle, nvml.nvmlEventTypeXidCriticalError, self._events
                )
            except nvml.NVMLError as err:
                # Some GPUs cannot deliver events; they stay healthy rather than flap.
                log.warning("nvml: no XID events for %s (%s); health not watched", uuid, err)

    def unhealthy(self, devices: Sequence[NpuDevice]) -> Mapping[str, str]:
        """Drain pending XID events without waiting; failed devices stay unhealthy."""
        nvml = self._nvml
        if nvml is None or self._events is None:
            return dict(self._failed)
        while True:
            try:
                event = nvml.nvmlEventSetWait(self._events, 0)
            except nvml.NVMLError_Timeout:
                break
            except nvml.NVMLError as err:
                log.warning("nvml: event wait failed: %s", err)
                break
            xid = int(event.eventData)
            if xid in APPLICATION_XIDS:
                continue
            uuid = _text(nvml.nvmlDeviceGetUUID(event.device))
            self._failed[uuid] = f"critical XID {xid}"
            log.error("nvml: device %s reported critical XID %d; marking unhealthy", uuid, xid)
        return dict(self._failed)

    def control_devices(self) -> tuple[str, ...]:
        """nvidiactl and the UVM nodes present on the host, then configured extras."""
        own = tuple(p for p in NVIDIA_CONTROL_DEVICES if os.path.exists(p))
        return own + self.extra_control_devices

    def env_value(self, devices: Sequence[NpuDevice]) -> str:
        """NVIDIA's runtime takes UUIDs."""
        return ",".join(d.id for d in devices)

    def close(self) -> None:
        """Free the event set and shut NVML down."""
        if self._nvml is not None:
            if self._events is not None:
                self._nvml.nvmlEventSetFree(self._events)
            self._nvml.nvmlShutdown()
            self._nvml = None
