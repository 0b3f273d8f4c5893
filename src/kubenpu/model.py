"""The plain-data model: devices, nodes, requests and placements.

No I/O and no Kubernetes types here; adapters translate to and from these. Compute is in
milli-units of one device (``MILLI_PER_DEVICE`` = 1000 = 100%), the unit of the openb trace;
the Kubernetes resource ``aliyun.com/npu-core`` counts percent, so one core unit is 10 milli.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kubenpu.errors import InputError
from kubenpu.names import LABEL_NPU_MODEL, MILLI_PER_DEVICE


@dataclass(frozen=True, slots=True)
class Device:
    """One NPU. A device is held whole by one pod, or shared by pods up to 1000 milli."""

    id: str
    index: int
    model: str = ""
    memory_mib: int = 0
    healthy: bool = True
    #: NUMA node or interconnect group; devices in one group talk fastest to each other.
    group: int = 0


@dataclass(frozen=True, slots=True)
class Node:
    """A worker node with its allocatable CPU and memory and its devices."""

    name: str
    cpu_milli: int
    memory_mib: int
    devices: tuple[Device, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.cpu_milli < 0 or self.memory_mib < 0:
            raise InputError(
                f"node {self.name}: negative capacity "
                f"(cpu_milli={self.cpu_milli}, memory_mib={self.memory_mib})"
            )
        ids = [d.id for d in self.devices]
        if len(set(ids)) != len(ids):
            raise InputError(f"node {self.name}: duplicate device ids {ids}")

    @property
    def model(self) -> str:
        """The device model: the node label if set, else the first device's model."""
        label = self.labels.get(LABEL_NPU_MODEL)
        if label:
            return label
        return self.devices[0].model if self.devices else ""


@dataclass(frozen=True, slots=True)
class Request:
    """What one pod asks for.

    ``npus`` whole devices, or a ``share_milli`` (1..1000) of one device with optional
    ``share_memory_mib`` of its memory; never both. ``models`` empty means any model.
    """

    name: str
    cpu_milli: int = 0
    memory_mib: int = 0
    npus: int = 0
    share_milli: int = 0
    share_memory_mib: int = 0
    models: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for attr in ("cpu_milli", "memory_mib", "npus", "share_milli", "share_memory_mib"):
            if getattr(self, attr) < 0:
                raise InputError(f"pod {self.name}: {attr} must not be negative")
        if self.npus and self.share_milli:
            raise InputError(
                f"pod {self.name}: asks for {self.npus} whole NPUs and a "
                f"{self.share_milli} milli share at once; ask for one or the other"
            )
        if self.share_milli > MILLI_PER_DEVICE:
            raise InputError(
                f"pod {self.name}: a share of {self.share_milli} milli is more than one "
                f"device ({MILLI_PER_DEVICE}); ask for whole NPUs instead"
            )
        if self.share_memory_mib and not self.share_milli:
            raise InputError(f"pod {self.name}: NPU memory is only asked for with a share")

    @property
    def device_milli(self) -> int:
        """Total device compute asked for, in milli (whole devices count 1000 each)."""
        return self.npus * MILLI_PER_DEVICE + self.share_milli

    @property
    def wants_devices(self) -> bool:
        """Whether the pod asks for any NPU at all."""
        return self.npus > 0 or self.share_milli > 0


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a pod went: its node and, per device, the compute share it holds (milli)."""

    pod: str
    node: str
    device_ids: tuple[str, ...] = ()
    shares_milli: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.device_ids) != len(self.shares_milli):
            raise InputError(
                f"placement of {self.pod}: {len(self.device_ids)} devices but "
                f"{len(self.shares_milli)} shares"
            )
