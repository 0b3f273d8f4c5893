"""``kubenpu``: fragmentation gradient descent that also counts what the host cannot feed.

The score of a node is how much the expected fragmentation of the cluster drops if the pod
lands there (``HostAwareFragmentation``: FGD's measure plus the free devices the node's CPU
and memory cannot keep busy), over every task shape of the workload, not just the most
common ones, and without truncating the change to an integer. A share goes to the device
that gives its node the best change (on ties, the tightest device); whole devices follow
the default topology-aware choice. docs/policy.md has the measurements behind each choice.

Nodes in the same state score the same, so each distinct state among the candidates is
scored once and the engine's tie-break order picks among equals.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from kubenpu.engine import fit
from kubenpu.engine.fragmentation import HostAwareFragmentation, TaskMix
from kubenpu.engine.framework import MAX_SCORE, Cycle, Policy
from kubenpu.engine.state import ClusterState
from kubenpu.model import Request

#: Changes of the measure closer than this (milli) are equal: float noise, not a preference.
RESOLUTION = 1e-6


class NodeStates:
    """A small integer per node that is equal exactly when two nodes are in the same state.

    The state is what scoring reads: device model, free CPU and memory, and the multiset of
    (free compute, free memory) of its devices. Ids are refreshed only for changed nodes.
    """

    def __init__(self, state: ClusterState):
        self.state = state
        self.ids = np.zeros(state.num_nodes, dtype=np.int64)
        self._known: dict[tuple[int, ...], int] = {}
        self._synced = -1

    def sync(self) -> np.ndarray:
        """The ids, brought up to date."""
        s = self.state
        rows = np.flatnonzero(s.node_version > self._synced)
        self._synced = s.version
        if rows.size:
            devices = np.sort(s.dev_free[rows] * (1 << 32) + s.dev_mem_free[rows], axis=1)
            keys = np.column_stack((s.model_id[rows], s.cpu_free[rows], s.mem_free[rows], devices))
            known = self._known
            for row, key in zip(rows.tolist(), map(tuple, keys.tolist()), strict=True):
                self.ids[row] = known.setdefault(key, len(known))
        return self.ids


class _Drops:
    """For one request shape: the drop of fragmentation per node, with when it was computed.

    A node's drop depends only on that node's state, so it stays valid until the node
    changes; for shares, also the free compute of the device that gives it.
    """

    BYTES_PER_NODE = 8 + 2 + 8

    def __init__(self, n: int):
        self.drop = np.zeros(n)
        self.free = np.zeros(n, dtype=np.int16)
        #: ``ClusterState.version`` when each entry was computed (-1: never).
        self.seen = np.full(n, -1, dtype=np.int64)


class KubenpuPolicy(Policy):
    """Host-aware fragmentation gradient descent over the workload's full task mix."""

    name = "kubenpu"
    #: Memory for drops kept per request shape (least recently used dropped first): a
    #: decision then recomputes only the nodes changed since its shape was last seen.
    CACHE_BYTES = 128 << 20

    def __init__(self, mix: TaskMix, state: ClusterState):
        self.frag = HostAwareFragmentation(mix, state)
        self.states = NodeStates(state)
        self._cache: OrderedDict[tuple, _Drops] = OrderedDict()
        self._cache_max = max(16, self.CACHE_BYTES // (_Drops.BYTES_PER_NODE * state.num_nodes))

    def _drops(self, req: Request) -> _Drops:
        key = (
            req.cpu_milli,
            req.memory_mib,
            req.npus,
            req.share_milli,
            req.share_memory_mib,
            req.models,
        )
        entry = self._cache.get(key)
        if entry is None:
            entry = self._cache[key] = _Drops(self.frag.state.num_nodes)
            if len(self._cache) > self._cache_max:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return entry

    def score(self, cycle: Cycle) -> np.ndarray:
        s, req, cand = cycle.state, cycle.request, cycle.candidates
        entry = self._drops(req)
        cycle.data[self.name] = entry
        stale = cand[entry.seen[cand] < s.node_version[cand]]
        if stale.size:
            self.frag.sync()
            _, first, inverse = np.unique(
                self.states.sync()[stale], return_index=True, return_inverse=True
            )
            nodes = stale[first]  # one node per distinct state
            if req.share_milli:
                drop, free = self._best_devices(s, req, nodes)
                entry.free[stale] = free[inverse]
            else:
                drop = self.frag.current[nodes] - self.frag.after_whole(nodes, req)
            entry.drop[stale] = (np.round(drop / RESOLUTION) * RESOLUTION)[inverse]
            entry.seen[stale] = s.version
        drop = entry.drop[cand]
        lo, hi = drop.min(), drop.max()
        if hi == lo:
            return np.full(cand.size, float(MAX_SCORE))
        # (x - lo) / (hi - lo) is exactly 1 at the top, so the best scores exactly MAX_SCORE.
        return (drop - lo) / (hi - lo) * MAX_SCORE

    def _best_devices(
        self, s: ClusterState, req: Request, nodes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per node, the best drop of fragmentation over its fitting devices, and the free
        compute of the device that gives it (the tightest such device on ties)."""
        pos, slots = np.nonzero(fit.device_fit(s, req)[nodes])
        free = s.dev_free[nodes[pos], slots]
        # Devices of one node with equal free compute give equal results: try one of each.
        order = np.lexsort((free, pos))
        pos, slots, free = pos[order], slots[order], free[order]
        new = np.r_[True, (pos[1:] != pos[:-1]) | (free[1:] != free[:-1])]
        pos, slots, free = pos[new], slots[new], free[new]
        per_pair = self.frag.current[nodes[pos]] - self.frag.after_share(nodes[pos], slots, req)
        per_pair = np.round(per_pair / RESOLUTION) * RESOLUTION
        best = np.lexsort((free, -per_pair, pos))
        best = best[np.r_[True, pos[best][1:] != pos[best][:-1]]]
        return per_pair[best], free[best]

    def select_devices(self, cycle: Cycle, node: int) -> tuple[list[int], list[int]]:
        req = cycle.request
        if not req.share_milli:
            return super().select_devices(cycle, node)
        want = cycle.data[self.name].free[node]
        # A node in the same state as the one scored has a fitting device this free.
        fits = fit.device_fit(cycle.state, req)[node] & (cycle.state.dev_free[node] == want)
        return [int(np.flatnonzero(fits)[0])], [req.share_milli]
