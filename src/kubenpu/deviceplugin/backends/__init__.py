"""Device backends by name, and ``auto``: the first backend that finds devices."""

from __future__ import annotations

import logging
from collections.abc import Callable

from kubenpu.deviceplugin.backends.ascend import AscendBackend
from kubenpu.deviceplugin.backends.base import Backend
from kubenpu.deviceplugin.backends.devfs import DevfsBackend
from kubenpu.deviceplugin.backends.mock import MockBackend
from kubenpu.deviceplugin.backends.nvml import NvmlBackend
from kubenpu.deviceplugin.config import DevicePluginConfig
from kubenpu.deviceplugin.devices import MountSpec, NpuDevice
from kubenpu.errors import DeviceError

log = logging.getLogger(__name__)

#: The order ``auto`` tries; mock is never picked automatically.
AUTO_ORDER = ("nvml", "ascend", "devfs")


def _build(name: str, config: DevicePluginConfig) -> Backend:
    makers: dict[str, Callable[[], Backend]] = {
        "mock": lambda: MockBackend(
            config.mock_devices,
            health_dir=config.mock_health_dir or None,
            dev_dir=config.mock_dev_dir or None,
            memory_gib=config.mock_memory_gib,
            numa_nodes=config.mock_numa_nodes,
        ),
        "devfs": lambda: DevfsBackend(
            config.devfs_glob, memory_gib=config.devfs_memory_gib, group_size=config.group_size
        ),
        "nvml": NvmlBackend,
        "ascend": lambda: AscendBackend(group_size=config.group_size or 4),
    }
    backend = makers[name]()
    backend.configure(
        control_devices=config.control_devices,
        mounts=[MountSpec.parse(m) for m in config.mounts],
        env_var=config.env_var or None,
    )
    return backend


def open_backend(config: DevicePluginConfig) -> tuple[Backend, list[NpuDevice]]:
    """The configured backend and its devices; raises DeviceError when none are found."""
    names = AUTO_ORDER if config.backend == "auto" else (config.backend,)
    tried = []
    for name in names:
        backend = _build(name, config)
        try:
            devices = backend.discover()
        except DeviceError as err:
            backend.close()
            tried.append(f"{name}: {err}")
            continue
        if devices:
            if config.backend == "auto":
                log.info("backend auto: picked %s (%d devices)", name, len(devices))
            return backend, devices
        backend.close()
        tried.append(f"{name}: no devices")
    raise DeviceError(
        f"backend {config.backend} found no devices ({'; '.join(tried)}); "
        "set --backend, --devfs-glob or --mock-devices"
    )
