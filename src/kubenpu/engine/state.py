"""The cluster's free capacity as numpy arrays, so policies can work on all nodes at once.

``ClusterState`` is built from model nodes and changed only through ``reserve`` and
``unreserve`` (and health changes), which keep every derived array in step. Rows are nodes,
columns are device slots (``D`` = the largest device count of any node); a slot without a
device, or with an unhealthy one, has no free capacity.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from kubenpu.errors import PlacementError
from kubenpu.model import Node, Placement, Request
from kubenpu.names import MILLI_PER_DEVICE

FULL = MILLI_PER_DEVICE


@dataclass(frozen=True, slots=True)
class Holding:
    """A reserved placement, with the array positions it occupies."""

    placement: Placement
    request: Request
    node: int
    slots: tuple[int, ...]


class ClusterState:
    """Capacity, usage and placements of a cluster, kept as node x device arrays."""

    def __init__(self, nodes: Sequence[Node]):
        self.nodes: tuple[Node, ...] = tuple(nodes)
        n = len(self.nodes)
        d = max((len(x.devices) for x in self.nodes), default=0)
        self.num_nodes = n
        self.node_index: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            if node.name in self.node_index:
                raise PlacementError(f"duplicate node name {node.name!r}")
            self.node_index[node.name] = i

        self.cpu_cap = np.array([x.cpu_milli for x in self.nodes], dtype=np.int64)
        self.mem_cap = np.array([x.memory_mib for x in self.nodes], dtype=np.int64)
        self.cpu_free = self.cpu_cap.copy()
        self.mem_free = self.mem_cap.copy()

        self.model_names: list[str] = sorted({x.model for x in self.nodes})
        model_id = {m: i for i, m in enumerate(self.model_names)}
        self.model_id = np.array([model_id[x.model] for x in self.nodes], dtype=np.int32)

        #: Slot holds a device at all (healthy or not).
        self.dev_exists = np.zeros((n, d), dtype=bool)
        #: Slot holds a healthy device.
        self.dev_healthy = np.zeros((n, d), dtype=bool)
        #: Compute held by pods, milli per slot.
        self.dev_used = np.zeros((n, d), dtype=np.int64)
        #: Slot held by one pod as a whole device.
        self.dev_whole = np.zeros((n, d), dtype=bool)
        self.dev_mem_cap = np.zeros((n, d), dtype=np.int64)
        self.dev_mem_used = np.zeros((n, d), dtype=np.int64)
        self.dev_group = np.zeros((n, d), dtype=np.int64)
        self.device_slot: dict[tuple[int, str], int] = {}
        for i, node in enumerate(self.nodes):
            for j, dev in enumerate(node.devices):
                self.dev_exists[i, j] = True
                self.dev_healthy[i, j] = dev.healthy
                self.dev_mem_cap[i, j] = dev.memory_mib
                self.dev_group[i, j] = dev.group
                self.device_slot[(i, dev.id)] = j
        #: Free compute per slot (0 for missing or unhealthy devices); kept in step.
        self.dev_free = np.where(self.dev_healthy, FULL, 0).astype(np.int64)
        self.dev_mem_free = np.where(self.dev_healthy, self.dev_mem_cap, 0)
        #: Per node: healthy devices with nothing on them.
        self.full_free = (self.dev_free == FULL).sum(axis=1)
        #: Per node: free compute summed over its devices.
        self.free_total = self.dev_free.sum(axis=1)
        self.num_devices = self.dev_exists.sum(axis=1)
        self.total_devices = int(self.dev_exists.sum())
        #: Per node, NPU pods by kind: column 0 shared pods, column k pods of k whole NPUs.
        self.kind_count = np.zeros((n, d + 1), dtype=np.int64)
        self.holdings: dict[str, Holding] = {}
        #: Bumped on every change; caches keyed on it know when they are stale.
        self.version = 0
        #: Per node, the ``version`` of its last change (caches refresh only changed rows).
        self.node_version = np.zeros(n, dtype=np.int64)

    # ---- queries -------------------------------------------------------------------------

    def models_mask(self, models: frozenset[str]) -> np.ndarray:
        """Nodes whose device model is one of ``models`` (all nodes when empty)."""
        if not models:
            return np.ones(self.num_nodes, dtype=bool)
        ids = [i for i, m in enumerate(self.model_names) if m in models]
        return np.isin(self.model_id, ids)

    def allocated_milli(self) -> int:
        """Device compute held by pods, in milli, over the whole cluster."""
        return int(self.dev_used.sum())

    def device_ids(self, node: int, slots: Iterable[int]) -> tuple[str, ...]:
        """The device ids of the given slots of a node."""
        devices = self.nodes[node].devices
        return tuple(devices[j].id for j in slots)

    # ---- changes -------------------------------------------------------------------------

    def reserve(self, placement: Placement, request: Request) -> Holding:
        """Take the placement's capacity; raises ``PlacementError`` if it does not fit."""
        if placement.pod in self.holdings:
            raise PlacementError(f"pod {placement.pod} already holds a placement")
        i = self.node_index.get(placement.node)
        if i is None:
            raise PlacementError(f"pod {placement.pod}: unknown node {placement.node!r}")
        slots = []
        for dev_id in placement.device_ids:
            j = self.device_slot.get((i, dev_id))
            if j is None:
                raise PlacementError(
                    f"pod {placement.pod}: node {placement.node} has no device {dev_id!r}"
                )
            slots.append(j)
        self._check_fits(placement, request, i, slots)
        self.cpu_free[i] -= request.cpu_milli
        self.mem_free[i] -= request.memory_mib
        whole = request.npus > 0
        for j, share in zip(slots, placement.shares_milli, strict=True):
            self.dev_used[i, j] += share
            self.dev_whole[i, j] = whole
            if not whole:
                self.dev_mem_used[i, j] += request.share_memory_mib
        if request.wants_devices:
            self.kind_count[i, request.npus] += 1
        self._refresh_node(i)
        holding = Holding(placement, request, i, tuple(slots))
        self.holdings[placement.pod] = holding
        return holding

    def unreserve(self, pod: str) -> Holding | None:
        """Give back a pod's capacity. Idempotent: an unknown pod is a no-op returning None."""
        holding = self.holdings.pop(pod, None)
        if holding is None:
            return None
        i, req = holding.node, holding.request
        self.cpu_free[i] += req.cpu_milli
        self.mem_free[i] += req.memory_mib
        for j, share in zip(holding.slots, holding.placement.shares_milli, strict=True):
            self.dev_used[i, j] -= share
            if req.npus > 0:
                self.dev_whole[i, j] = False
            else:
                self.dev_mem_used[i, j] -= req.share_memory_mib
        if req.wants_devices:
            self.kind_count[i, req.npus] -= 1
        self._refresh_node(i)
        return holding

    def set_device_health(self, node: str, device_id: str, healthy: bool) -> None:
        """Mark a device (un)healthy; pods already on it keep it, new ones never get it."""
        i = self.node_index[node]
        j = self.device_slot[(i, device_id)]
        self.dev_healthy[i, j] = healthy
        self._refresh_node(i)

    def _check_fits(self, placement: Placement, request: Request, i: int, slots: list[int]) -> None:
        def fail(why: str) -> PlacementError:
            return PlacementError(f"pod {placement.pod} does not fit on {placement.node}: {why}")

        if request.cpu_milli > self.cpu_free[i]:
            raise fail(f"cpu asked {request.cpu_milli}m, free {self.cpu_free[i]}m")
        if request.memory_mib > self.mem_free[i]:
            raise fail(f"memory asked {request.memory_mib}Mi, free {self.mem_free[i]}Mi")
        if request.models and self.nodes[i].model not in request.models:
            raise fail(f"model {self.nodes[i].model!r} not in {sorted(request.models)}")
        if len(set(slots)) != len(slots):
            raise fail("a device is listed twice")
        if request.npus:
            if len(slots) != request.npus:
                raise fail(f"{request.npus} NPUs asked, {len(slots)} devices given")
            for j, share in zip(slots, placement.shares_milli, strict=True):
                if share != FULL or self.dev_free[i, j] != FULL:
                    raise fail(f"device slot {j} is not wholly free")
        elif request.share_milli:
            if len(slots) != 1 or placement.shares_milli[0] != request.share_milli:
                raise fail("a shared request takes exactly its share of one device")
            j = slots[0]
            if self.dev_whole[i, j] or self.dev_free[i, j] < request.share_milli:
                raise fail(f"device slot {j} has {self.dev_free[i, j]} milli free")
            if self.dev_mem_free[i, j] < request.share_memory_mib:
                raise fail(f"device slot {j} has {self.dev_mem_free[i, j]}Mi memory free")
        elif slots:
            raise fail("a pod without NPU requests was given devices")

    def _refresh_node(self, i: int) -> None:
        free = np.where(self.dev_healthy[i] & ~self.dev_whole[i], FULL - self.dev_used[i], 0)
        self.dev_free[i] = free
        self.dev_mem_free[i] = np.where(
            self.dev_healthy[i], self.dev_mem_cap[i] - self.dev_mem_used[i], 0
        )
        self.full_free[i] = int((free == FULL).sum())
        self.free_total[i] = int(free.sum())
        self.version += 1
        self.node_version[i] = self.version
