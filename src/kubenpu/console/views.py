"""What the console's pages show, computed from the cache's ``ClusterState`` and the Nodes,
Pods and Events as the API returns them (JSON). Pure: no I/O, no clock (``now`` is given).

Who holds which device is the cache's answer (``ClusterState.holdings``): recorded
placements exactly, bound pods without a record on the devices the engine would have
chosen, the same accounting the extender decides with. Whether a pod asks for NPUs at all
is ``adapters.npurequest``'s reading (the webhook's and the extender's).

The fragmentation shown is the measure of the configured policy: for ``kubenpu``,
``HostAwareFragmentation`` over the task mix estimated as ``policies`` does (every shape,
shares on the share plan's grid); for the others FGD's ``Fragmentation`` over the 95% most
common shapes. The task mix is that of the NPU pods in the cluster, held and waiting.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubenpu.adapters.kube import request_from_pod
from kubenpu.adapters.npurequest import read_pod_npu
from kubenpu.console.reasons import WaitReason, event_time, wait_reason
from kubenpu.engine import policies, share_plan
from kubenpu.engine.fragmentation import Fragmentation, HostAwareFragmentation, task_mix
from kubenpu.engine.state import FULL, ClusterState
from kubenpu.errors import ObjectError
from kubenpu.model import Request
from kubenpu.names import (
    ANNOTATION_DEVICES,
    LABEL_INSTANCE_TYPE,
    LABEL_NPU_MODEL,
    MILLI_PER_CORE_UNIT,
)

_TERMINAL = ("Succeeded", "Failed")
#: Events kept per object (the newest).
EVENTS_PER_OBJECT = 20


@dataclass(frozen=True)
class Inputs:
    """Everything a page is computed from; read under the store's lock."""

    state: ClusterState
    policy: str
    #: Node objects by name, Pod objects by ``namespace/name``.
    nodes: Mapping[str, Mapping[str, Any]]
    pods: Mapping[str, Mapping[str, Any]]
    #: Events by involved object: ``("Node", name)`` or ``("Pod", "namespace/name")``.
    events: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]]
    synced: bool
    #: Unix time "now" (ages of pending pods).
    now: float
    #: Rows kept from earlier views of the same state (the store's); None: build afresh.
    rows: RowCache | None = None


# ---- devices ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """One pod's part of a device."""

    pod: str
    milli: int

    @property
    def percent(self) -> float:
        """Of the device's compute."""
        return 100 * self.milli / FULL


@dataclass(frozen=True, slots=True)
class DeviceCell:
    """One NPU as drawn: whole (one pod), shared (segments), free or unhealthy."""

    id: str
    index: int
    group: int
    healthy: bool
    memory_mib: int
    used_milli: int
    whole: bool
    holders: tuple[Segment, ...] = ()
    #: ``unhealthy``, ``whole``, ``shared`` or ``free`` (see :func:`device_kind`).
    kind: str = "free"

    @property
    def free_milli(self) -> int:
        """Compute left for new pods (none on an unhealthy device)."""
        return max(0, FULL - self.used_milli) if self.healthy else 0

    @property
    def used_percent(self) -> float:
        """Compute held, percent of the device."""
        return 100 * self.used_milli / FULL

    @property
    def title(self) -> str:
        """One line: the device and who holds what of it."""
        who = ", ".join(f"{s.pod} {s.percent:g}%" for s in self.holders) or "nobody"
        health = "" if self.healthy else " UNHEALTHY"
        return f"{self.id} (#{self.index}, group {self.group}){health}: {self.kind}; {who}"


def device_kind(healthy: bool, whole: bool, used_milli: int) -> str:
    """How a device is drawn: unhealthy first, then held whole, shared, or free."""
    if not healthy:
        return "unhealthy"
    if whole:
        return "whole"
    return "shared" if used_milli else "free"


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One NPU node's line of the cluster grid."""

    name: str
    model: str
    devices: tuple[DeviceCell, ...]
    #: Expected fragmentation of the node's free compute (milli), None without a task mix.
    fragmented_milli: float | None = None

    @property
    def capacity_milli(self) -> int:
        """Compute of all its devices."""
        return FULL * len(self.devices)

    @property
    def allocated_milli(self) -> int:
        """Compute held by pods."""
        return sum(d.used_milli for d in self.devices)

    @property
    def allocation_pct(self) -> float:
        """Held, percent of its capacity."""
        return 100 * self.allocated_milli / self.capacity_milli if self.devices else 0.0

    def count(self, kind: str) -> int:
        """Devices of one kind (``DeviceCell.kind``)."""
        return sum(1 for d in self.devices if d.kind == kind)

    @property
    def free_milli(self) -> int:
        """Compute free for new pods."""
        return sum(d.free_milli for d in self.devices)


@dataclass(frozen=True, slots=True)
class Totals:
    """The cluster's sums."""

    nodes: int
    devices: int
    whole: int
    shared: int
    free: int
    unhealthy: int
    allocated_milli: int
    capacity_milli: int
    free_milli: int
    fragmented_milli: float | None
    pending: int
    #: The task shapes of the mix, described ("1 NPU x 4", "30% share x 2").
    mix: tuple[str, ...] = ()

    @property
    def allocation_pct(self) -> float:
        """Held compute, percent of all."""
        return 100 * self.allocated_milli / self.capacity_milli if self.capacity_milli else 0.0

    @property
    def fragmentation_pct(self) -> float | None:
        """Fragmented compute, percent of the free compute (None without a mix)."""
        if self.fragmented_milli is None:
            return None
        return 100 * self.fragmented_milli / self.free_milli if self.free_milli else 0.0

    @property
    def fragmented_npus(self) -> float | None:
        """Fragmented compute in NPUs."""
        return None if self.fragmented_milli is None else self.fragmented_milli / FULL


@dataclass(frozen=True)
class ClusterView:
    """The cluster page."""

    rows: tuple[NodeRow, ...]
    totals: Totals
    policy: str
    measure: str
    synced: bool
    #: Nodes the API has that hold no NPU (not drawn; counted).
    cpu_nodes: int = 0


def _holders(
    state: ClusterState, nodes: Container[int] | None = None
) -> dict[tuple[int, int], list[Segment]]:
    """(node, slot) -> the pods holding it, largest share first (of ``nodes`` only, if
    given)."""
    out: dict[tuple[int, int], list[Segment]] = {}
    for key, holding in state.holdings.items():
        if nodes is not None and holding.node not in nodes:
            continue
        for slot, share in zip(holding.slots, holding.placement.shares_milli, strict=True):
            out.setdefault((holding.node, slot), []).append(Segment(key, int(share)))
    for segments in out.values():
        segments.sort(key=lambda s: (-s.milli, s.pod))
    return out


def _cells(
    state: ClusterState, i: int, holders: Mapping[tuple[int, int], list[Segment]]
) -> tuple[DeviceCell, ...]:
    node = state.nodes[i]
    n = len(node.devices)
    # Plain lists: indexing numpy arrays element by element costs more than all the rest.
    group = state.dev_group[i, :n].tolist()
    healthy = state.dev_healthy[i, :n].tolist()
    memory = state.dev_mem_cap[i, :n].tolist()
    used = state.dev_used[i, :n].tolist()
    whole = state.dev_whole[i, :n].tolist()
    return tuple(
        DeviceCell(
            id=dev.id,
            index=dev.index,
            group=group[j],
            healthy=healthy[j],
            memory_mib=memory[j],
            used_milli=used[j],
            whole=whole[j],
            holders=tuple(holders.get((i, j), ())),
            kind=device_kind(healthy[j], whole[j], used[j]),
        )
        for j, dev in enumerate(node.devices)
    )


@dataclass(frozen=True, slots=True)
class RowParts:
    """One node's cells and their sums, as of one ``node_version``."""

    version: int
    devices: tuple[DeviceCell, ...]
    whole: int
    shared: int
    free: int
    unhealthy: int
    allocated_milli: int
    free_milli: int

    @classmethod
    def of(cls, version: int, devices: tuple[DeviceCell, ...]) -> RowParts:
        """The sums of ``devices``."""
        kinds = [d.kind for d in devices]
        return cls(
            version,
            devices,
            whole=kinds.count("whole"),
            shared=kinds.count("shared"),
            free=kinds.count("free"),
            unhealthy=kinds.count("unhealthy"),
            allocated_milli=sum(d.used_milli for d in devices),
            free_milli=sum(d.free_milli for d in devices),
        )


class RowCache:
    """Each node's cells, rebuilt only for the nodes that changed since the last view.

    Keyed on the ``ClusterState`` (a new one, after the cache rebuilt it, starts afresh)
    and on its ``node_version`` per node, which every reserve, release and health change
    of the node bumps; an unchanged node keeps its very cells (the same objects, which the
    page's renderer keys its own cache on). Not thread-safe: used under the store's lock.
    """

    def __init__(self) -> None:
        self._state: ClusterState | None = None
        self._parts: dict[int, RowParts] = {}

    def parts(self, state: ClusterState, nodes: Sequence[int] | None = None) -> dict[int, RowParts]:
        """Node index -> its parts, for ``nodes`` (default: every node)."""
        if state is not self._state:
            self._state, self._parts = state, {}
        versions = state.node_version.tolist()
        wanted = range(state.num_nodes) if nodes is None else nodes
        stale = [i for i in wanted if (p := self._parts.get(i)) is None or p.version != versions[i]]
        if stale:
            holders = _holders(state, None if len(stale) == state.num_nodes else set(stale))
            for i in stale:
                self._parts[i] = RowParts.of(versions[i], _cells(state, i, holders))
        return {i: self._parts[i] for i in wanted}


# ---- pods ------------------------------------------------------------------------------


def is_pending(pod: Mapping[str, Any]) -> bool:
    """Not bound to a node, not finished, not being deleted."""
    meta = pod.get("metadata") or {}
    return (
        not (pod.get("spec") or {}).get("nodeName")
        and (pod.get("status") or {}).get("phase", "Pending") not in _TERMINAL
        and not meta.get("deletionTimestamp")
    )


def asks_for_npu(pod: Mapping[str, Any]) -> bool:
    """Whether any container names an NPU resource (``adapters.npurequest``)."""
    return read_pod_npu(pod).asks


def pending_npu_pods(pods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Keys of the NPU pods waiting for a node, sorted."""
    return sorted(k for k, p in pods.items() if is_pending(p) and asks_for_npu(p))


def _pending_requests(inputs: Inputs, keys: Iterable[str]) -> list[Request]:
    out = []
    for key in keys:
        try:
            out.append(request_from_pod(inputs.pods[key]))
        except ObjectError:
            continue
    return out


def _mix_requests(inputs: Inputs, pending: Sequence[str]) -> list[Request]:
    held = [h.request for h in inputs.state.holdings.values() if h.request.wants_devices]
    return held + [r for r in _pending_requests(inputs, pending) if r.wants_devices]


def _describe_shape(npus: int, share_milli: int) -> str:
    if npus:
        return f"{npus} NPU" + ("s" if npus > 1 else "")
    return f"{share_milli // MILLI_PER_CORE_UNIT}% share"


def measure_name(policy: str) -> str:
    """Which fragmentation measure ``policy`` decides by (see the module docstring)."""
    names = {name for name, _ in policies.parse(policy or policies.DEFAULT)}
    return "host-aware FGD" if "kubenpu" in names else "FGD"


def fragmentation(
    state: ClusterState, policy: str, requests: Sequence[Request]
) -> np.ndarray | None:
    """Per node, the expected fragmented free compute (milli) for the task mix of
    ``requests`` under the policy's measure; None when no request wants an NPU."""
    wanted = [r for r in requests if r.wants_devices]
    if not wanted or state.num_nodes == 0:
        return None
    frag: Fragmentation
    if measure_name(policy) == "host-aware FGD":
        frag = HostAwareFragmentation(task_mix(wanted, coverage=1.0, grid=share_plan.GRID), state)
    else:
        frag = Fragmentation(task_mix(wanted), state)
    frag.sync()
    return frag.current


def cluster_view(inputs: Inputs) -> ClusterView:
    """The nodes x devices grid, with totals, allocation and fragmentation."""
    state = inputs.state
    pending = pending_npu_pods(inputs.pods)
    requests = _mix_requests(inputs, pending)
    frag = fragmentation(state, inputs.policy, requests)
    parts = (inputs.rows or RowCache()).parts(state)
    frag_of: list[float | None] = [None] * state.num_nodes if frag is None else frag.tolist()
    rows, drawn = [], []
    for i, node in enumerate(state.nodes):
        if not node.devices:
            continue
        part = parts[i]
        drawn.append(part)
        rows.append(NodeRow(node.name, node.model, part.devices, frag_of[i]))
    shapes = Counter((r.npus, r.share_milli) for r in requests)
    labels: dict[str, int] = {}
    for (npus, share), n in shapes.items():
        label = _describe_shape(npus, share)
        labels[label] = labels.get(label, 0) + n
    mix = tuple(f"{label} x {n}" for label, n in sorted(labels.items(), key=lambda kv: -kv[1]))
    devices = sum(len(p.devices) for p in drawn)
    totals = Totals(
        nodes=len(rows),
        devices=devices,
        whole=sum(p.whole for p in drawn),
        shared=sum(p.shared for p in drawn),
        free=sum(p.free for p in drawn),
        unhealthy=sum(p.unhealthy for p in drawn),
        allocated_milli=sum(p.allocated_milli for p in drawn),
        capacity_milli=FULL * devices,
        free_milli=sum(p.free_milli for p in drawn),
        fragmented_milli=None if frag is None else float(frag.sum()),
        pending=len(pending),
        mix=mix,
    )
    return ClusterView(
        rows=tuple(rows),
        totals=totals,
        policy=inputs.policy,
        measure=measure_name(inputs.policy),
        synced=inputs.synced,
        cpu_nodes=max(0, len(inputs.nodes) - len(rows)),
    )


# ---- one node ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventRow:
    """One event, as listed."""

    when: str
    type: str
    reason: str
    message: str
    count: int
    source: str


def event_rows(
    events: Iterable[Mapping[str, Any]], limit: int = EVENTS_PER_OBJECT
) -> list[EventRow]:
    """Newest first."""
    rows = []
    for e in sorted(events, key=event_time, reverse=True)[:limit]:
        source = e.get("source") or {}
        rows.append(
            EventRow(
                when=event_time(e),
                type=str(e.get("type") or ""),
                reason=str(e.get("reason") or ""),
                message=" ".join(str(e.get("message") or "").split()),
                count=int(e.get("count") or (e.get("series") or {}).get("count") or 1),
                source=str(
                    source.get("component")
                    or e.get("reportingComponent")
                    or e.get("reportingController")
                    or ""
                ),
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class PodRow:
    """An NPU pod on a node and what it holds there (the cache's accounting)."""

    namespace: str
    name: str
    phase: str
    #: Devices held whole.
    devices: tuple[str, ...] = ()
    #: (device, percent of its compute) per share.
    shares: tuple[tuple[str, float], ...] = ()
    #: The placement is recorded on the pod (else inferred, or nothing held).
    recorded: bool = False
    #: Why its request cannot be read, if it cannot.
    problem: str = ""

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def _pod_rows(inputs: Inputs, i: int, name: str) -> list[PodRow]:
    state = inputs.state
    keys = {k for k, h in state.holdings.items() if h.node == i and h.request.wants_devices}
    keys |= {
        k
        for k, p in inputs.pods.items()
        if (p.get("spec") or {}).get("nodeName") == name and asks_for_npu(p)
    }
    rows = []
    for key in keys:
        pod = inputs.pods.get(key) or {}
        meta = pod.get("metadata") or {}
        namespace, _, pod_name = key.rpartition("/")
        phase = str((pod.get("status") or {}).get("phase") or "Pending")
        holding = state.holdings.get(key)
        problem = ""
        if pod:
            problem = "; ".join(read_pod_npu(pod).problems)
        if holding is None or holding.node != i:
            rows.append(PodRow(namespace, pod_name, phase, problem=problem))
            continue
        placement = holding.placement
        whole = holding.request.npus > 0
        annotations = meta.get("annotations") or {}
        rows.append(
            PodRow(
                namespace,
                pod_name,
                phase,
                devices=placement.device_ids if whole else (),
                shares=()
                if whole
                else tuple(
                    (d, 100 * m / FULL)
                    for d, m in zip(placement.device_ids, placement.shares_milli, strict=True)
                ),
                recorded=bool(annotations.get(ANNOTATION_DEVICES)),
                problem=problem,
            )
        )
    rows.sort(key=lambda p: (p.phase in _TERMINAL, p.namespace, p.name))
    return rows


@dataclass(frozen=True)
class NodeView:
    """The node page: the seed's node details."""

    name: str
    model: str
    instance_type: str
    ready: str
    unschedulable: bool
    cpu_milli: int
    memory_mib: int
    row: NodeRow
    pods: tuple[PodRow, ...]
    events: tuple[EventRow, ...]
    taints: tuple[str, ...] = ()
    #: Why the cache has no devices for it (its Node could not be read), if so.
    problem: str = ""
    groups: tuple[int, ...] = field(default=())


def _ready(node: Mapping[str, Any]) -> str:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return {"True": "Ready", "False": "NotReady"}.get(str(cond.get("status")), "Unknown")
    return "Unknown"


def node_view(inputs: Inputs, name: str) -> NodeView | None:
    """Details of one node; None when the API has no such node."""
    state = inputs.state
    raw = inputs.nodes.get(name)
    i = state.node_index.get(name)
    if raw is None and i is None:
        return None
    raw = raw or {}
    meta = raw.get("metadata") or {}
    labels = meta.get("labels") or {}
    spec = raw.get("spec") or {}
    if i is not None:
        node = state.nodes[i]
        pending = pending_npu_pods(inputs.pods)
        frag = fragmentation(state, inputs.policy, _mix_requests(inputs, pending))
        row = NodeRow(
            name,
            node.model,
            (inputs.rows or RowCache()).parts(state, [i])[i].devices,
            None if frag is None else float(frag[i]),
        )
        cpu, mem, problem = node.cpu_milli, node.memory_mib, ""
        pods = _pod_rows(inputs, i, name)
    else:
        row = NodeRow(name, str(labels.get(LABEL_NPU_MODEL, "")), ())
        cpu, mem = 0, 0
        problem = "the console's cache could not read this Node (see the console's log)"
        pods = []
    taints = tuple(
        f"{t.get('key')}{'=' + str(t['value']) if t.get('value') else ''}:{t.get('effect')}"
        for t in spec.get("taints") or []
        if isinstance(t, Mapping)
    )
    return NodeView(
        name=name,
        model=row.model,
        instance_type=str(labels.get(LABEL_INSTANCE_TYPE, "")),
        ready=_ready(raw) if raw else "Unknown",
        unschedulable=bool(spec.get("unschedulable")),
        cpu_milli=cpu,
        memory_mib=mem,
        row=row,
        pods=tuple(pods),
        events=tuple(event_rows(inputs.events.get(("Node", name), ()))),
        taints=taints,
        problem=problem,
        groups=tuple(sorted({d.group for d in row.devices})),
    )


# ---- pending -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingPod:
    """One waiting NPU pod and why it waits."""

    key: str
    namespace: str
    name: str
    wants: str
    age_s: float
    scheduler: str
    reason: WaitReason

    @property
    def age(self) -> str:
        """``3m12s``-style age."""
        return format_age(self.age_s)


def format_age(seconds: float) -> str:
    """Like kubectl's AGE column, roughly: 42s, 3m12s, 5h3m, 2d4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _created(pod: Mapping[str, Any]) -> float | None:
    text = (pod.get("metadata") or {}).get("creationTimestamp")
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _wants(pod: Mapping[str, Any]) -> str:
    try:
        req = request_from_pod(pod)
    except ObjectError as exc:
        return f"unreadable request: {exc}"
    if req.npus:
        text = f"{req.npus} whole NPU" + ("s" if req.npus > 1 else "")
    elif req.share_milli:
        text = f"{req.share_milli // MILLI_PER_CORE_UNIT}% of one NPU"
        if req.share_memory_mib:
            text += f" and {req.share_memory_mib} MiB of its memory"
    else:
        text = "no NPU"
    if req.models:
        text += f", model {' or '.join(sorted(req.models))}"
    return text


def pending_view(inputs: Inputs) -> list[PendingPod]:
    """Every NPU pod that waits for a node, oldest first, with the scheduler's reason."""
    out = []
    for key in pending_npu_pods(inputs.pods):
        pod = inputs.pods[key]
        meta = pod.get("metadata") or {}
        created = _created(pod)
        out.append(
            PendingPod(
                key=key,
                namespace=str(meta.get("namespace") or ""),
                name=str(meta.get("name") or ""),
                wants=_wants(pod),
                age_s=0.0 if created is None else max(0.0, inputs.now - created),
                scheduler=str((pod.get("spec") or {}).get("schedulerName") or "default-scheduler"),
                reason=wait_reason(pod, inputs.events.get(("Pod", key), ())),
            )
        )
    out.sort(key=lambda p: (-p.age_s, p.key))
    return out
