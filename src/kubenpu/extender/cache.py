"""Nodes and Pods from the API, kept as the engine's ``ClusterState`` (no I/O here).

A pod's recorded placement (``kubenpu.io/node``, ``devices``, ``shares``) holds exactly
those devices, bound or not (the record is the truth after a restart); a bound pod without
one holds its CPU and memory and the NPUs the engine would choose; finished and deleted
pods hold nothing. A node change that only flips device health is applied in place, any
other rebuilds the state. The task mix (FGD-style policies) is estimated from the cached
NPU pods and the last ``mix_window`` requests seen by filter; the profile is rebuilt when
its set of task shapes changes. Nodes labelled ``kubenpu.io/npu-driver=dra`` are served by
kube-scheduler's DRA plugin, which allocates their devices: :meth:`ClusterCache.dra_rows`
marks their rows, their NPUs come from their ResourceSlices (:meth:`upsert_slice`), pods on
them hold CPU and memory only, and their devices are held by the allocated
ResourceClaims (:meth:`upsert_claim`), so the engine can rate DRA nodes as it rates the
others. docs/extender.md, "The cache", says more.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kubenpu.adapters.claims import claim_ref
from kubenpu.adapters.kube import (
    node_from_object,
    placement_from_pod,
    placement_time,
    pod_key,
    request_from_pod,
)
from kubenpu.adapters.resourceslices import Holding, claim_holdings, slice_devices
from kubenpu.engine import policies
from kubenpu.engine.fragmentation import shape_of
from kubenpu.engine.framework import Engine, select_devices_packed
from kubenpu.engine.state import ClusterState
from kubenpu.errors import ObjectError, PlacementError
from kubenpu.model import Device, Node, Placement, Request
from kubenpu.names import DRA_DRIVER, LABEL_NPU_DRIVER, MILLI_PER_DEVICE, NPU_DRIVER_DRA

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


def _device_structure(devices: Iterable[Device]) -> tuple:
    """Everything about devices but their health."""
    return tuple((d.id, d.index, d.model, d.memory_mib, d.group) for d in devices)


def _holding_keys(claim: str, n: int) -> list[str]:
    """The state's holding names of a claim's ``n`` devices (never a pod's ``ns/name``)."""
    return [f"claim:{claim}#{j}" for j in range(n)]


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
        dra_driver: str = DRA_DRIVER,
    ) -> None:
        self.policy = policy or policies.DEFAULT
        #: The DRA driver whose slices and claims are kubenpu's NPUs (and whose claimed
        #: devices bind writes as ``kubenpu.io/devices``).
        self.dra_driver = dra_driver
        #: ResourceSlices of that driver: slice name -> (node, its devices).
        self._slices: dict[str, tuple[str, tuple[Device, ...]]] = {}
        #: Allocated claims: ``namespace/name`` -> what they hold.
        self._claims: dict[str, tuple[Holding, ...]] = {}
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
        self._dra_unknown = np.zeros(0, dtype=bool)
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

    # -- DRA nodes: slices and claims ------------------------------------------------

    def upsert_slice(self, obj: Mapping[str, Any]) -> None:
        """Add or update a ResourceSlice (other drivers' are ignored)."""
        name = str((obj.get("metadata") or {}).get("name", ""))
        try:
            found = slice_devices(obj, self.dra_driver)
        except ObjectError as err:
            self.rejected["resourceslice"] += 1
            log.warning("ignoring %s", err)
            found = None
        before = self._dra_devices(self._slices[name][0]) if name in self._slices else None
        if found is None:
            self.delete_slice(name)
            return
        node = found[0]
        old_node = self._slices[name][0] if name in self._slices else node
        self._slices[name] = found
        after = self._dra_devices(node)
        if (
            old_node != node
            or before is None
            or _device_structure(before) != _device_structure(after)
        ):
            self._state = None
        elif self._state is not None and before != after:
            for dev in after:
                self._state.set_device_health(node, dev.id, dev.healthy)

    def delete_slice(self, name: str) -> None:
        """Forget a ResourceSlice."""
        if self._slices.pop(name, None) is not None:
            self._state = None

    def replace_slices(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Make the slices exactly ``objs`` (after a fresh list)."""
        objs = list(objs)
        names = {str((o.get("metadata") or {}).get("name", "")) for o in objs}
        for name in [n for n in self._slices if n not in names]:
            self.delete_slice(name)
        for obj in objs:
            self.upsert_slice(obj)

    def upsert_claim(self, obj: Mapping[str, Any]) -> None:
        """Add or update a ResourceClaim: what its allocation holds on DRA nodes."""
        key = claim_ref(obj)
        try:
            held = tuple(claim_holdings(obj, self.dra_driver))
        except ObjectError as err:
            self.rejected["resourceclaim"] += 1
            log.warning("ignoring claim %s: %s", key, err)
            held = ()
        self._set_claim(key, held)

    def delete_claim(self, key: str) -> None:
        """Forget a ResourceClaim (``namespace/name``): its devices are free."""
        self._set_claim(key, ())

    def replace_claims(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Make the claims exactly ``objs`` (after a fresh list)."""
        objs = list(objs)
        keys = {claim_ref(o) for o in objs}
        for key in [k for k in self._claims if k not in keys]:
            self.delete_claim(key)
        for obj in objs:
            self.upsert_claim(obj)

    def _set_claim(self, key: str, held: tuple[Holding, ...]) -> None:
        old = self._claims.get(key, ())
        if old == held:
            return
        if held:
            self._claims[key] = held
        else:
            self._claims.pop(key, None)
        if self._state is not None:
            for hold_key in _holding_keys(key, len(old)):
                self._state.unreserve(hold_key)
            self._reserve_claim(key, held)

    def _dra_devices(self, node: str) -> tuple[Device, ...]:
        """The devices ``node``'s slices list, by index."""
        devices = [d for n, devs in self._slices.values() if n == node for d in devs]
        return tuple(sorted(devices, key=lambda d: (d.index, d.id)))

    def _with_slices(self, node: Node) -> Node:
        """A DRA node with the NPUs of its slices (its Node object lists none)."""
        return replace(node, devices=self._dra_devices(node.name)) if served_by_dra(node) else node

    def _reserve_claim(self, key: str, held: tuple[Holding, ...]) -> None:
        state = self._state
        if state is None:
            return
        for hold_key, h in zip(_holding_keys(key, len(held)), held, strict=True):
            i = state.node_index.get(h.node)
            if i is None or not self._dra[i]:
                continue  # not a DRA node kubenpu knows (yet)
            whole = h.milli >= MILLI_PER_DEVICE
            request = Request(hold_key, npus=1) if whole else Request(hold_key, share_milli=h.milli)
            try:
                state.reserve(Placement(hold_key, h.node, (h.device,), (h.milli,)), request)
            except PlacementError as err:
                self.conflicts += 1
                log.error("claim %s: its allocation does not fit the cache: %s", key, err)

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
            state = ClusterState([self._with_slices(self._nodes[n]) for n in sorted(self._nodes)])
            self._dra = np.fromiter(
                map(served_by_dra, state.nodes), dtype=bool, count=state.num_nodes
            )
            self._dra.flags.writeable = False
            no_npus = np.fromiter(
                (not n.devices for n in state.nodes), dtype=bool, count=state.num_nodes
            )
            self._dra_unknown = self._dra & no_npus
            self._dra_unknown.flags.writeable = False
            self._state = state
            self._engine = None
            # Recorded placements first: they are facts; inferred ones fill in around them.
            order = sorted(self._pods.values(), key=lambda e: (not e.recorded, e.assumed_at, e.key))
            for entry in order:
                self._reserve(entry)
            for key, held in self._claims.items():
                self._reserve_claim(key, held)
        return self._state

    def dra_rows(self) -> np.ndarray:
        """Boolean mask over :meth:`state`'s rows: the DRA-served nodes (read-only; made with
        the state, so a filter spends no Python loop on it)."""
        self.state()
        return self._dra

    def dra_rows_unknown(self) -> np.ndarray:
        """Boolean mask over :meth:`state`'s rows: the DRA-served nodes whose NPUs no slice
        has told yet (read-only)."""
        self.state()
        return self._dra_unknown

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
