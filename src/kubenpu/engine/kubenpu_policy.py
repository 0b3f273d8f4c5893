"""``kubenpu``: shares packed by the prices of the best packing, the rest by host-aware FGD.

A share goes where it costs the share plan least (``share_plan``: the LP over the
workload's share sizes prices each size, and a placement costs the potential it destroys
on its device); among placements equal for the plan, and for every other pod, the score is
how much the expected fragmentation of the cluster drops if the pod lands there
(``HostAwareFragmentation``: FGD's measure plus the free devices the node's CPU and memory
cannot keep busy), over every task shape of the workload, not just the most common ones,
and without truncating the change to an integer. A share takes the device its node was
ranked by (on ties, the tightest); whole devices follow the default topology-aware choice.
docs/policy.md has the measurements behind each choice.

Nodes in the same state score the same, so each distinct state among the candidates is
scored once and the engine's tie-break order picks among equals.
"""

from __future__ import annotations

import numpy as np

from kubenpu.engine import fit
from kubenpu.engine.fragmentation import HostAwareFragmentation, TaskMix
from kubenpu.engine.framework import MAX_SCORE, Cycle, Policy
from kubenpu.engine.nodecache import PerShape
from kubenpu.engine.share_plan import plan_shares
from kubenpu.engine.state import FULL, ClusterState
from kubenpu.model import Request

#: Changes of the measure closer than this (milli) are equal: float noise, not a preference.
RESOLUTION = 1e-6


class KubenpuPolicy(Policy):
    """The share plan first for shares, then host-aware fragmentation gradient descent over
    the workload's full task mix."""

    name = "kubenpu"

    def __init__(self, mix: TaskMix, state: ClusterState):
        self.frag = HostAwareFragmentation(mix, state)
        shares = (mix.count == 1) & (mix.per_device > 0) & (mix.per_device < FULL)
        sizes, pods = mix.per_device[shares].tolist(), mix.pods[shares].tolist()
        self.plan = plan_shares(zip(sizes, pods, strict=True))
        # Per request shape and node: the plan's cost and the drop of fragmentation of the
        # best placement there and, for a share, the free compute of the device it takes.
        self._values = PerShape(state, (np.float64, np.float64, np.int16))

    def score(self, cycle: Cycle) -> np.ndarray:
        req, cand = cycle.request, cycle.candidates
        key = (
            req.cpu_milli,
            req.memory_mib,
            req.npus,
            req.share_milli,
            req.share_memory_mib,
            req.models,
        )
        values = self._values.get(key, cand, lambda nodes: self._evaluate(cycle.state, req, nodes))
        cycle.data[self.name] = values
        cost, drop = values[0][cand], values[1][cand]
        if not req.share_milli:
            return _normalised(drop, MAX_SCORE)
        # The plan first, the measure among equals: the nodes at the least cost score
        # MAX_SCORE/2..MAX_SCORE by their drop, the others less, by their cost alone. No
        # sort: a decision over 10,000 nodes stays linear.
        half = MAX_SCORE / 2
        least = cost == cost.min()
        out: np.ndarray = _normalised(-cost, half) * ~least
        out[least] = half + _normalised(drop[least], half)
        return out

    def _evaluate(
        self, s: ClusterState, req: Request, nodes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per node: the plan's cost, the drop of fragmentation and (for a share) the free
        compute of the device that gives them."""
        self.frag.sync()
        if req.share_milli:
            return self._best_devices(s, req, nodes)
        drop = self.frag.current[nodes] - self.frag.after_whole(nodes, req)
        zeros = np.zeros(nodes.size)
        return zeros, np.round(drop / RESOLUTION) * RESOLUTION, zeros.astype(np.int16)

    def _best_devices(
        self, s: ClusterState, req: Request, nodes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per node, over its fitting devices: the least cost to the plan, the best drop of
        fragmentation among those, and the free compute of the device that gives both (the
        tightest such device on ties)."""
        pos, slots = np.nonzero(fit.device_fit(s, req)[nodes])
        free = s.dev_free[nodes[pos], slots]
        # Devices of one node with equal free compute give equal results: try one of each.
        order = np.lexsort((free, pos))
        pos, slots, free = pos[order], slots[order], free[order]
        new = np.r_[True, (pos[1:] != pos[:-1]) | (free[1:] != free[:-1])]
        pos, slots, free = pos[new], slots[new], free[new]
        cost = self.plan.cost(free, req.share_milli)
        # Only a node's cheapest devices can be its best: measure just those.
        starts = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
        least = np.minimum.reduceat(cost, starts)
        cheapest = cost == np.repeat(least, np.diff(np.r_[starts, pos.size]))
        pos, slots, free, cost = pos[cheapest], slots[cheapest], free[cheapest], cost[cheapest]
        drop = self.frag.current[nodes[pos]] - self.frag.after_share(nodes[pos], slots, req)
        drop = np.round(drop / RESOLUTION) * RESOLUTION
        best = np.lexsort((free, -drop, pos))
        best = best[np.r_[True, pos[best][1:] != pos[best][:-1]]]
        return cost[best], drop[best], free[best]

    def select_devices(self, cycle: Cycle, node: int) -> tuple[list[int], list[int]]:
        req = cycle.request
        if not req.share_milli:
            return super().select_devices(cycle, node)
        want = cycle.data[self.name][2][node]
        # A node in the same state as the one scored has a fitting device this free.
        fits = fit.device_fit(cycle.state, req)[node] & (cycle.state.dev_free[node] == want)
        return [int(np.flatnonzero(fits)[0])], [req.share_milli]


def _normalised(values: np.ndarray, top: float) -> np.ndarray:
    """``values`` mapped linearly onto 0..top (all ``top`` when they are all equal)."""
    lo, hi = values.min(), values.max()
    if hi == lo:
        return np.full(values.size, float(top))
    # (x - lo) / (hi - lo) is exactly 1 at the top, so the best scores exactly ``top``.
    scaled: np.ndarray = (values - lo) / (hi - lo) * top
    return scaled
