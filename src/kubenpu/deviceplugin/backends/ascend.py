"""The ascend backend: Huawei Ascend NPUs, ``/dev/davinci<N>`` plus management devices."""

from __future__ import annotations

import os

from kubenpu.deviceplugin.backends.devfs import DevfsBackend
from kubenpu.deviceplugin.devices import MountSpec

#: Management device nodes an Ascend container needs besides its davinci<N> nodes.
ASCEND_CONTROL_DEVICES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
#: Driver and tool directories mounted read-only when present on the host.
ASCEND_DRIVER_MOUNTS = ("/usr/local/Ascend/driver", "/usr/local/dcmi", "/usr/local/bin/npu-smi")


class AscendBackend(DevfsBackend):
    """Ascend devices: ids ``davinci<N>``, env ``ASCEND_VISIBLE_DEVICES`` with indices.

    Ascend 910 boards link chips in HCCS groups of four (0-3, 4-7), hence the default
    interconnect group size of 4. The management nodes in ``ASCEND_CONTROL_DEVICES`` that
    exist on the host are given to every container and checked for health; the driver
    directories that exist are mounted read-only.
    """

    name = "ascend"
    env_var = "ASCEND_VISIBLE_DEVICES"

    def __init__(self, *, dev_dir: str = "/dev", model: str = "ascend-910", group_size: int = 4):
        super().__init__(os.path.join(dev_dir, "davinci[0-9]*"), model=model, group_size=group_size)
        self.dev_dir = dev_dir

    def control_devices(self) -> tuple[str, ...]:
        """The management nodes present on the host, then configured extras."""
        own = tuple(
            os.path.join(self.dev_dir, os.path.basename(p))
            for p in ASCEND_CONTROL_DEVICES
            if os.path.exists(os.path.join(self.dev_dir, os.path.basename(p)))
        )
        return own + self.extra_control_devices

    def container_mounts(self) -> tuple[MountSpec, ...]:
        """The driver directories present on the host, then configured mounts."""
        present = tuple(MountSpec(p, p, True) for p in ASCEND_DRIVER_MOUNTS if os.path.exists(p))
        return present + self.mounts
