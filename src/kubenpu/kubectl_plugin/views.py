"""What ``kubectl npu`` shows, computed from Nodes and Pods as the API returns them (JSON).

Who holds which device comes from the placement record on pods (``kubenpu.io/devices``,
``kubenpu.io/shares``); a pod without one (placed by a scheduler that records nothing)
counts by its requests: its whole NPUs are allocated on its node, devices unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kubenpu.adapters.kube import (
    ObjectError,
    node_npu_counts,
    placement_from_pod,
    request_from_pod,
)
from kubenpu.names import (
    CORE_UNITS_PER_DEVICE,
    LABEL_NPU_MODEL,
    MILLI_PER_DEVICE,
    RESOURCE_NPU,
    RESOURCE_NPU_CORE,
)

_MILLI_PER_CORE_UNIT = MILLI_PER_DEVICE // CORE_UNITS_PER_DEVICE
_TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True, slots=True)
class PodNpus:
    """The NPUs one pod asks for or holds."""

    namespace: str
    name: str
    node: str
    phase: str
    #: Whole NPUs asked for (from the placement record, else the requests).
    npus: int
    #: Device ids held whole, when recorded.
    devices: tuple[str, ...] = ()
    #: (device id or "" when not recorded, percent of that NPU's compute) per share.
    shares: tuple[tuple[str, int], ...] = ()
    #: Why the pod's NPUs could not be read, if they could not.
    problem: str = ""

    @property
    def holds(self) -> bool:
        """Whether the pod counts against its node (bound and not finished)."""
        return bool(self.node) and self.phase not in _TERMINAL

    def as_dict(self) -> dict[str, Any]:
        """JSON/YAML form."""
        data = asdict(self)
        data["devices"] = list(self.devices)
        data["shares"] = [{"device": d, "core_percent": p} for d, p in self.shares]
        return data


@dataclass(frozen=True, slots=True)
class NodeNpus:
    """One NPU node: its devices and what pods hold of them."""

    name: str
    model: str
    total: int
    unhealthy: int
    allocated: int
    #: Devices shared by pods (recorded ones), and the compute percent given out on them.
    shared_devices: int
    shared_core_percent: int
    pods: list[str] = field(default_factory=list)

    @property
    def free(self) -> int:
        """Healthy devices held by nobody (never negative)."""
        return max(0, self.total - self.unhealthy - self.allocated - self.shared_devices)

    def as_dict(self) -> dict[str, Any]:
        """JSON/YAML form."""
        return {**asdict(self), "free": self.free}


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def asks_for_npu(pod: Mapping[str, Any]) -> bool:
    """Whether any container names aliyun.com/npu or aliyun.com/npu-core."""
    spec = pod.get("spec") or {}
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            res = c.get("resources") or {}
            for amounts in (res.get("limits") or {}, res.get("requests") or {}):
                if RESOURCE_NPU in amounts or RESOURCE_NPU_CORE in amounts:
                    return True
    return False


def pod_npus(pod: Mapping[str, Any]) -> PodNpus:
    """The NPUs of one pod: the placement record when present, else its requests."""
    meta = _meta(pod)
    base = {
        "namespace": str(meta.get("namespace", "")),
        "name": str(meta.get("name", "")),
        "node": str((pod.get("spec") or {}).get("nodeName") or ""),
        "phase": str((pod.get("status") or {}).get("phase") or "Pending"),
    }
    try:
        placement = placement_from_pod(pod)
        request = request_from_pod(pod)
    except ObjectError as exc:
        return PodNpus(**base, npus=0, problem=str(exc))
    if placement is not None and placement.device_ids:
        whole = tuple(
            d
            for d, m in zip(placement.device_ids, placement.shares_milli, strict=True)
            if m >= MILLI_PER_DEVICE
        )
        shares = tuple(
            (d, m // _MILLI_PER_CORE_UNIT)
            for d, m in zip(placement.device_ids, placement.shares_milli, strict=True)
            if m < MILLI_PER_DEVICE
        )
        return PodNpus(**base, npus=len(whole), devices=whole, shares=shares)
    shares = (("", request.share_milli // _MILLI_PER_CORE_UNIT),) if request.share_milli else ()
    return PodNpus(**base, npus=request.npus, shares=shares)


def npu_pods(pods: Iterable[Mapping[str, Any]]) -> list[PodNpus]:
    """The pods asking for NPUs, sorted by namespace and name."""
    found = [pod_npus(p) for p in pods if asks_for_npu(p)]
    return sorted(found, key=lambda p: (p.namespace, p.name))


def npu_nodes(nodes: Iterable[Mapping[str, Any]], pods: Sequence[PodNpus]) -> list[NodeNpus]:
    """Every node with NPUs and what the pods bound to it hold, sorted by name."""
    rows = []
    for node in nodes:
        try:
            total, allocatable = node_npu_counts(node)
        except ObjectError:
            continue
        if not total:
            continue
        name = str(_meta(node).get("name", ""))
        mine = [p for p in pods if p.node == name and p.holds]
        shared = {d for p in mine for d, _ in p.shares if d}
        rows.append(
            NodeNpus(
                name=name,
                model=str((_meta(node).get("labels") or {}).get(LABEL_NPU_MODEL, "")),
                total=total,
                # The device plugin advertises only healthy devices as allocatable.
                unhealthy=max(0, total - allocatable),
                allocated=sum(p.npus for p in mine),
                shared_devices=len(shared),
                shared_core_percent=sum(pct for p in mine for _, pct in p.shares),
                pods=[f"{p.namespace}/{p.name}" for p in mine],
            )
        )
    return sorted(rows, key=lambda r: r.name)


def node_table(rows: Sequence[NodeNpus]) -> list[list[str]]:
    """Header and rows of ``kubectl npu nodes``."""
    table = [["NODE", "MODEL", "TOTAL", "ALLOCATED", "SHARED", "SHARED-CORE", "UNHEALTHY", "FREE"]]
    for r in rows:
        table.append(
            [
                r.name,
                r.model or "<none>",
                str(r.total),
                str(r.allocated),
                str(r.shared_devices),
                f"{r.shared_core_percent}%",
                str(r.unhealthy),
                str(r.free),
            ]
        )
    return table


def pod_table(rows: Sequence[PodNpus], *, all_namespaces: bool) -> list[list[str]]:
    """Header and rows of ``kubectl npu pods`` (a NAMESPACE column with ``-A``)."""
    header = ["NAME", "NODE", "PHASE", "NPUS", "DEVICES", "SHARES"]
    table = [["NAMESPACE", *header] if all_namespaces else header]
    for p in rows:
        if p.problem:
            devices, shares = "?", p.problem
        else:
            devices = ",".join(p.devices) or ("<unrecorded>" if p.npus else "<none>")
            shares = ",".join(f"{d}:{pct}%" if d else f"{pct}%" for d, pct in p.shares) or "<none>"
        row = [p.name, p.node or "<none>", p.phase, str(p.npus), devices, shares]
        table.append([p.namespace, *row] if all_namespaces else row)
    return table


def render(table: Sequence[Sequence[str]]) -> str:
    """Columns padded like kubectl's tables: left-aligned, three spaces apart."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    return "\n".join(lines) + "\n"
