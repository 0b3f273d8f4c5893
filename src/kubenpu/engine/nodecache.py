"""Per-node scores that survive between decisions, for policies whose score is costly.

A score-based policy whose score of a node depends only on that node's state (and on the
request) need not rescore every candidate at every decision: ``NodeStates`` gives nodes in
the same state the same id, so each distinct state is scored once, and ``PerShape`` keeps
the values per request shape, recomputing only nodes changed since the shape was last
seen. Decisions do not change; only the work does (a 10,000-node cluster changes one node
per decision).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from kubenpu.engine.state import ClusterState


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


class _Entry:
    """The values of one request shape per node, and the state version each was computed at."""

    def __init__(self, n: int, dtypes: Sequence[np.dtype]):
        self.values = tuple(np.zeros(n, dtype=t) for t in dtypes)
        #: ``ClusterState.version`` when each node's values were computed (-1: never).
        self.seen = np.full(n, -1, dtype=np.int64)


class PerShape:
    """Per request shape, values per node kept until the node changes.

    Shapes are kept least recently used first out, within ``budget_bytes``. ``dtypes`` gives
    one array per value a policy keeps (a score, the device that gives it, ...).
    """

    def __init__(
        self, state: ClusterState, dtypes: Sequence[np.dtype | type], budget_bytes: int = 128 << 20
    ):
        self.state = state
        self.states = NodeStates(state)
        self._dtypes = [np.dtype(t) for t in dtypes]
        self._cache: OrderedDict[Hashable, _Entry] = OrderedDict()
        per_node = 8 + sum(t.itemsize for t in self._dtypes)
        self._max = max(16, budget_bytes // (per_node * max(1, state.num_nodes)))

    def get(
        self,
        key: Hashable,
        candidates: np.ndarray,
        compute: Callable[[np.ndarray], Sequence[np.ndarray]],
    ) -> tuple[np.ndarray, ...]:
        """The value arrays (over all nodes) of shape ``key``, current for ``candidates``.

        ``compute(nodes)`` is called, if anything is stale, with one node per distinct state
        among the stale candidates and returns one array per dtype, aligned with ``nodes``.
        """
        entry = self._cache.get(key)
        if entry is None:
            entry = self._cache[key] = _Entry(self.state.num_nodes, self._dtypes)
            if len(self._cache) > self._max:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        s = self.state
        stale = candidates[entry.seen[candidates] < s.node_version[candidates]]
        if stale.size:
            _, first, inverse = np.unique(
                self.states.sync()[stale], return_index=True, return_inverse=True
            )
            for values, computed in zip(entry.values, compute(stale[first]), strict=True):
                values[stale] = computed[inverse]
            entry.seen[stale] = s.version
        return entry.values
