"""Pod admission without I/O: what a pod asks for, what is free, and why it cannot have it;
what an admitted pod holds (:class:`PodRecord`).

A pod's request is read by the one NPU-request reader (:mod:`kubenpu.adapters.npurequest`).
The agent's side of Allocate (asking the plugin) is in
:mod:`kubenpu.devcluster.nodeagent.allocation`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubenpu.adapters.npurequest import read_pod_npu
from kubenpu.errors import PlacementError


class ListedDevice(Protocol):
    """A device as a plugin listed it (``kubenpu.devcluster.kubelet.PeerDevice``)."""

    @property
    def id(self) -> str: ...

    @property
    def healthy(self) -> bool: ...


@dataclass(slots=True)
class PodRecord:
    """The devices one admitted pod holds, per container and resource."""

    namespace: str
    name: str
    #: container name -> resource -> {"devices": [...], "response": {...}}.
    containers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def device_ids(self, resource: str) -> set[str]:
        """Every device of ``resource`` this pod holds."""
        return {
            d for per in self.containers.values() for d in per.get(resource, {}).get("devices", [])
        }


class AdmissionError(PlacementError):
    """A pod cannot get its devices; the message says what was asked and what was free."""


def container_requests(pod: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """container name -> NPU resource -> count, for the app containers, as the one reader
    of a pod's NPU request reads them. Init containers are not given devices by this agent.
    """
    return {c.name: c.amounts for c in read_pod_npu(pod).containers if not c.init and c.amounts}


def missing_plugins(
    wanted: Mapping[str, Mapping[str, int]], registered: Iterable[str]
) -> list[str]:
    """The resources ``wanted`` asks for that no plugin serves (yet), sorted."""
    resources = {r for per in wanted.values() for r in per}
    return sorted(resources - set(registered))


def free_devices(
    devices: Mapping[str, Sequence[ListedDevice]], pods: Iterable[PodRecord]
) -> dict[str, list[str]]:
    """resource -> the healthy devices no admitted pod holds, sorted by id."""
    records = list(pods)
    held = {r: set().union(*(p.device_ids(r) for p in records)) for r in devices}
    return {
        r: sorted(d.id for d in devs if d.healthy and d.id not in held[r])
        for r, devs in devices.items()
    }


def check_available(
    wanted: Mapping[str, Mapping[str, int]], free: Mapping[str, Sequence[str]]
) -> None:
    """Raise :class:`AdmissionError` when the pod asks for more of a resource than is free
    (the kubelet's own message)."""
    totals: dict[str, int] = {}
    for per in wanted.values():
        for resource, count in per.items():
            totals[resource] = totals.get(resource, 0) + count
    for resource, count in totals.items():
        available = len(free.get(resource, []))
        if count > available:
            raise AdmissionError(
                f"Allocate failed due to requested number of devices unavailable for "
                f"{resource}. Requested: {count}, Available: {available}, which is unexpected"
            )


def accept_preferred(preferred: Sequence[str], free: Sequence[str], count: int) -> bool:
    """Whether a plugin's preferred allocation is a valid choice (it is advice only)."""
    return len(set(preferred)) == count and set(preferred) <= set(free)
