"""Nodes and Pods from the API, kept as the engine's ``ClusterState`` (no I/O here).

A pod's recorded placement (``kubenpu.io/node``, ``devices``, ``shares``) holds exactly
those devices, bound or not (the record is the truth after a restart); a bound pod without
one holds its CPU and memory and the NPUs the engine would choose; finished and deleted
pods hold nothing. A node change that only flips device health is applied in place, any
other rebuilds the state. The task mix (FGD-style policies) is estimated from the cached
NPU pods and the last ``mix_window`` requests seen by filter; the profile is rebuilt when
its set of task shapes changes. Nodes labelled ``kubenpu.io/npu-driver=dra`` are served by
kube-scheduler's DRA plugin, not kubenpu's engine: :meth:`ClusterCache.dra_rows` marks
their rows, and pods on them hold CPU and memory only (their claims hold the devices).
docs/extender.md, "The cache", says more.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kubenpu.adapters.kube import (
    node_from_object,
    placement_from_pod,
    placement_time,
    pod_key,
    request_from_pod,
)
from kubenpu.engine import policies
from kubenpu.engine.fragmentation import shape_of
from kubenpu.engine.framework import Engine, select_devices_packed
from kubenpu.engine.state import ClusterState
from kubenpu.errors import ObjectError, PlacementError
from kubenpu.model import Node, Placement, Request
from kubenpu.names import LABEL_NPU_DRIVER, NPU_DRIVER_DRA

log = logging.getLogger(__name__)

_TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True, slots=True)
class PodEntry:
    """What one pod holds, as the cache accounts it."""

    key: str
    uid: str
    request: Request
    #: The node and devices it holds; None: it holds nothing (pending, not placed).
    placement: Placement | None
    #: ``spec.nodeName`` is set.
    bound: bool
    #: The placement comes from the pod's own record (not inferred from nodeName).
    recorded: bool
    assumed_at: str = ""


def pod_entry(obj: Mapping[str, Any]) -> PodEntry | None:
    """How a Pod object is accounted; None for finished or deleted-and-gone pods.

    Raises ``ObjectError`` for pods that cannot be translated.
    """
    key = pod_key(obj)
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    if (obj.get("status") or {}).get("phase") in _TERMINAL:
        return None
    request = request_from_pod(obj)
    node = spec.get("nodeName") or ""
    recorded = placement_from_pod(obj)
    assumed_at = placement_time(obj)
    if recorded is not None and (not node or recorded.node == node):
        return PodEntry(
            key, str(meta.get("uid", "")), request, recorded, bool(node), True, assumed_at
        )
    placement = Placement(key, node) if node else None
    return PodEntry(key, str(meta.get("uid", "")), request, placement, bool(node), False)


def served_by_dra(node: Node) -> bool:
    """Whether the node's NPUs are DRA's (label ``kubenpu.io/npu-driver=dra``): kube-scheduler's
    DRA plugin decides for it and its claims hold the devices, so kubenpu does not judge it."""
    return node.labels.get(LABEL_NPU_DRIVER) == NPU_DRIVER_DRA


def _structure(node: Node) -> tuple:
    """Everything about a node but device health."""
    return (
        served_by_dra(node),
        node.cpu_milli,
        node.memory_mib,
        node.model,
        tuple((d.id, d.index, d.model, d.memory_mib, d.group) for d in node.devices),
    )


class ClusterCache:
    """The cluster as the engine sees it; not thread-safe (the extender holds a lock)."""

    def __init__(
        self,
        policy: str = "",
        *,
        seed: int = 0,
        mix_window: int = 1000,
        task_mix: Sequence[Request] = (),
    ) -> None:
        self.policy = policy or policies.DEFAULT
        #: The task mix given by configuration (``--task-mix``), CPU-only pods included
        #: as the simulator takes its trace; empty: estimated.
        self._fixed_mix = list(task_mix)
        self._factory = policies.factory(self.policy)
        self._seed = seed
        self._nodes: dict[str, Node] = {}
        self._pods: dict[str, PodEntry] = {}
        self._recent: deque[Request] = deque(maxlen=mix_window)
        # Task shapes of the held NPU pods and of the recent requests, kept as counts so
        # that a decision checks for a changed mix without walking every pod.
        self._shape_count: Counter[tuple] = Counter()
        self._state: ClusterState | None = None
        #: Per row of ``_state``: the node is DRA-served (:func:`served_by_dra`).
        self._dra = np.zeros(0, dtype=bool)
        self._engine: Engine | None = None
        self._shapes: frozenset = frozenset()
        #: Objects that could not be translated, by kind (exported as a metric).
        self.rejected: Counter[str] = Counter()
        #: Recorded placements that did not fit when reserved (exported; should stay 0).
        self.conflicts = 0

    # -- nodes -----------------------------------------------------------------------

    def upsert_node(self, obj: Mapping[str, Any]) -> None:
        """Add or update a Node."""
        try:
            node = node_from_object(obj)
        except ObjectError as err:
            self.rejected["node"] += 1
            log.warning("ignoring node: %s", err)
            name = (obj.get("metadata") or {}).get("name")
            if isinstance(name, str):
                self.delete_node(name)
            return
        old = self._nodes.get(node.name)
        self._nodes[node.name] = node
        if old is None or _structure(old) != _structure(node):
            self._state = None
        elif self._state is not None and old.devices != node.devices:
            for dev in node.devices:
                self._state.set_device_health(node.name, dev.id, dev.healthy)

    def delete_node(self, name: str) -> None:
        """Forget a Node."""
        if self._nodes.pop(name, None) is not None:
            self._state = None

    def replace_nodes(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Make the nodes exactly ``objs`` (after a fresh list)."""
        objs = list(objs)
        names = {(o.get("metadata") or {}).get("name") for o in objs}
        for name in [n for n in self._nodes if n not in names]:
            self.delete_node(name)
        for obj in objs:
            self.upsert_node(obj)

    # -- pods ------------------------------------------------------------------------

    def upsert_pod(self, obj: Mapping[str, Any]) -> None:
        """Add or update a Pod."""
        try:
            key = pod_key(obj)
        except ObjectError as err:
            self.rejected["pod"] += 1
            log.warning("ignoring pod: %s", err)
            return
        try:
            entry = pod_entry(obj)
        except ObjectError as err:
            self.rejected["pod"] += 1
            log.warning("ignoring pod %s: %s", key, err)
            entry = None
        # A terminating pod (deletionTimestamp set) keeps its devices until it is gone.
        self._set(key, entry)

    def delete_pod(self, key: str) -> None:
        """Forget a Pod (deleted from the API)."""
        self._set(key, None)

    def replace_pods(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Make the pods exactly ``objs`` (after a fresh list)."""
        objs = list(objs)
        keys = set()
        for obj in objs:
            try:
                keys.add(pod_key(obj))
            except ObjectError:
                continue
        for key in [k for k in self._pods if k not in keys]:
            self._set(key, None)
        for obj in objs:
            self.upsert_pod(obj)

    def assume(self, key: str, uid: str, request: Request, placement: Placement) -> None:
        """Hold ``placement`` for a pod being bound (before the API has it); may raise
        ``PlacementError`` when it does not fit."""
        state = self.state()
        old = self._pods.get(key)
        if old is not None and old.placement is not None:
            state.unreserve(key)
        try:
            state.reserve(placement, request)
        except PlacementError:
            if old is not None:
                self._reserve(old)
            raise
        if old is not None:
            self._count_shape(old.request, -1)
        self._count_shape(request, +1)
        self._pods[key] = PodEntry(key, uid, request, placement, False, True)

    def _count_shape(self, request: Request, delta: int) -> None:
        if request.wants_devices:
            shape = shape_of(request)
            self._shape_count[shape] += delta
            if self._shape_count[shape] <= 0:
                del self._shape_count[shape]

    def _set(self, key: str, entry: PodEntry | None) -> None:
        old = self._pods.get(key)
        if old == entry:
            return
        if old is not None:
            self._count_shape(old.request, -1)
        if entry is not None:
            self._count_shape(entry.request, +1)
        if entry is None:
            self._pods.pop(key, None)
        else:
            self._pods[key] = entry
        if self._state is not None:
            self._state.unreserve(key)
            if entry is not None:
                self._reserve(entry)

    # -- state -----------------------------------------------------------------------

    @property
    def num_nodes(self) -> int:
        """Nodes in the cache."""
        return len(self._nodes)

    @property
    def num_pods(self) -> int:
        """Pods in the cache (finished ones excluded)."""
        return len(self._pods)

    def state(self) -> ClusterState:
        """The engine state, rebuilt if nodes changed."""
        if self._state is None:
            state = ClusterState([self._nodes[n] for n in sorted(self._nodes)])
            self._dra = np.fromiter(
                map(served_by_dra, state.nodes), dtype=bool, count=state.num_nodes
            )
            self._dra.flags.writeable = False
            self._state = state
            self._engine = None
            # Recorded placements first: they are facts; inferred ones fill in around them.
            order = sorted(self._pods.values(), key=lambda e: (not e.recorded, e.assumed_at, e.key))
            for entry in order:
                self._reserve(entry)
        return self._state

    def dra_rows(self) -> np.ndarray:
        """Boolean mask over :meth:`state`'s rows: the DRA-served nodes (read-only; made with
        the state, so a filter spends no Python loop on it)."""
        self.state()
        return self._dra

    def served_by_dra(self, name: str) -> bool:
        """Whether the node ``name`` is known and DRA-served."""
        node = self._nodes.get(name)
        return node is not None and served_by_dra(node)

    def engine(self) -> Engine:
        """An engine over :meth:`state` with the configured policy and current task mix."""
        state = self.state()
        # A configured mix never changes: only a new state rebuilds the profile then.
        shapes = frozenset() if self._fixed_mix else frozenset(self._shape_count)
        if self._engine is None or shapes != self._shapes:
            self._shapes = shapes
            profile = self._factory(state, self._mix())
            self._engine = Engine(state, profile, seed=self._seed)
        return self._engine

    def note_request(self, request: Request) -> None:
        """Remember a request seen by filter, for the task mix."""
        if request.wants_devices:
            if len(self._recent) == self._recent.maxlen:
                self._count_shape(self._recent[0], -1)
            self._recent.append(request)
            self._count_shape(request, +1)

    def _mix(self) -> list[Request]:
        if self._fixed_mix:
            return self._fixed_mix
        held = [e.request for e in self._pods.values() if e.request.wants_devices]
        return held + list(self._recent)

    @contextmanager
    def released(self, key: str) -> Iterator[PodEntry | None]:
        """While inside, the pod's own unbound placement is given back (so it is decided
        afresh, as if it held nothing); restored on exit."""
        entry = self._pods.get(key)
        state = self.state()
        if entry is None or entry.bound or entry.placement is None:
            yield entry
            return
        state.unreserve(key)
        try:
            yield entry
        finally:
            if key in self._pods and key not in state.holdings and self._state is state:
                self._reserve(self._pods[key])

    def _reserve(self, entry: PodEntry) -> None:
        state = self._state
        placement = entry.placement
        if state is None or placement is None:
            return
        i = state.node_index.get(placement.node)
        if i is None:
            return  # a node not (yet) in the cache: accounted once it appears
        request = entry.request
        if self._dra[i]:
            # The pod's claim holds its NPUs (kubenpu sees no devices there): CPU and
            # memory only, so a record or NPU request never counts as a conflict.
            placement = Placement(placement.pod, placement.node)
            request = replace(
                request, npus=0, share_milli=0, share_memory_mib=0, models=frozenset()
            )
        elif entry.recorded:
            placement = self._resolve(i, placement)
        elif request.wants_devices:
            placement = self._infer(state, i, placement, request)
        try:
            state.reserve(placement, request)
            return
        except PlacementError as err:
            problem = str(err)
        # CPU or memory may be counted differently by kube-scheduler (pod overhead,
        # static pods); never lose the devices over it.
        try:
            state.reserve(placement, replace(request, cpu_milli=0, memory_mib=0))
        except PlacementError:
            self.conflicts += 1
            log.error("pod %s: its placement does not fit the cache: %s", entry.key, problem)

    def _resolve(self, i: int, placement: Placement) -> Placement:
        """Device entries written as indices (older writers) to device ids."""
        node = self._state.nodes[i]  # type: ignore[union-attr]
        ids = {d.id for d in node.devices}
        by_index = {str(d.index): d.id for d in node.devices}
        resolved = tuple(d if d in ids else by_index.get(d, d) for d in placement.device_ids)
        return replace(placement, device_ids=resolved)

    def _infer(self, state: ClusterState, i: int, placement: Placement, req: Request) -> Placement:
        """Devices for a bound pod without a record: the engine's default choice."""
        try:
            slots, shares = select_devices_packed(state, req, i)
        except (IndexError, ValueError):
            slots, shares = [], []
        if len(slots) != max(req.npus, 1 if req.share_milli else 0):
            log.warning(
                "pod %s: bound to %s without a record, and no free NPU fits",
                req.name,
                placement.node,
            )
            return placement
        return replace(placement, device_ids=state.device_ids(i, slots), shares_milli=tuple(shares))
