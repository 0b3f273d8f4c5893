"""The six policies of the FGD paper (USENIX ATC 2023), as its public simulator defines them.

Scores are integers on 0..100 truncated the way the paper's simulator truncates them; the
many ties that follow are broken at random by the engine, as kube-scheduler does. Resource
terms are scaled by a fixed "largest node" of 128 CPUs and 8 devices (``SPEC_CPU``,
``SPEC_DEVICES``), not by each node's own size. Worked examples are in the tests.
"""

from __future__ import annotations

import numpy as np

from kubenpu.engine import fit
from kubenpu.engine.fragmentation import Fragmentation, TaskMix
from kubenpu.engine.framework import MAX_SCORE, Cycle, Policy
from kubenpu.engine.nodecache import PerShape
from kubenpu.engine.state import FULL, ClusterState
from kubenpu.model import Request

SPEC_CPU = 128_000
SPEC_DEVICES = 8 * FULL


class RandomPolicy(Policy):
    """Any feasible node, uniformly; a share goes to a random fitting device.

    One candidate drawn at random scores 100, the others 0, so no tie-break order applies.
    """

    name = "random"

    def score(self, cycle: Cycle) -> np.ndarray:
        scores = np.zeros(cycle.candidates.size)
        scores[cycle.rng.integers(cycle.candidates.size)] = MAX_SCORE
        return scores

    def select_devices(self, cycle: Cycle, node: int) -> tuple[list[int], list[int]]:
        req = cycle.request
        if not req.share_milli:
            return super().select_devices(cycle, node)
        slots = np.flatnonzero(fit.device_fit(cycle.state, req)[node])
        return [int(cycle.rng.choice(slots))], [req.share_milli]


class DotProdPolicy(Policy):
    """Tetris-style alignment: the smaller the dot product of free and asked (CPU, NPU), the better.

    ``score = trunc(100 * (1 - (cpu_free*cpu/128k^2 + npu_free*npu/8000^2) / 2))``.
    """

    name = "dotprod"

    def score(self, cycle: Cycle) -> np.ndarray:
        s, req, c = cycle.state, cycle.request, cycle.candidates
        dot = (s.cpu_free[c] / SPEC_CPU) * (req.cpu_milli / SPEC_CPU) + (
            s.free_total[c] / SPEC_DEVICES
        ) * (req.device_milli / SPEC_DEVICES)
        scores: np.ndarray = np.trunc(MAX_SCORE * (1 - dot / 2))
        return scores


class ClusteringPolicy(Policy):
    """Keep pods of one kind (shared, 1-NPU, 2-NPU, ...) together on the same nodes.

    ``score = offset + 25 * used/8000`` with offset 75 when the node hosts only this kind,
    50 when this kind among others, 25 when no NPU pods, 0 when only other kinds.
    """

    name = "clustering"

    def score(self, cycle: Cycle) -> np.ndarray:
        s, req, c = cycle.state, cycle.request, cycle.candidates
        if not req.wants_devices:
            return np.zeros(c.size)
        kinds = s.kind_count[c]
        mine = kinds[:, req.npus] > 0
        others = kinds.sum(axis=1) - kinds[:, req.npus] > 0
        offset = np.select([mine & ~others, mine & others, ~mine & ~others], [75, 50, 25], 0)
        base = 25 * np.maximum(SPEC_DEVICES - s.free_total[c], 0) // SPEC_DEVICES
        scores: np.ndarray = (offset + base).astype(np.float64)
        return scores


class PackingPolicy(Policy):
    """Fill partly used devices first, then free devices on used nodes, then idle nodes.

    Shared onto a used device: ``max(100 - free_pct//10, 50)`` (tighter is better); onto a
    free device of a used node: ``max(50 - k, 33)`` for k devices taken; an idle node:
    ``max(33 - n, n)`` for its n devices (bigger idle nodes are kept for last).
    """

    name = "packing"

    def score(self, cycle: Cycle) -> np.ndarray:
        s, req, c = cycle.state, cycle.request, cycle.candidates
        if not req.wants_devices:
            return np.zeros(c.size)
        healthy = s.dev_healthy[c].sum(axis=1)
        full = s.full_free[c]
        idle = full == healthy
        if req.npus:
            used_node = np.full(c.size, max(50 - req.npus, 33))
        else:
            free = np.where(fit.device_fit(s, req)[c], s.dev_free[c], FULL + 1)
            tightest = free.min(axis=1)
            pct = tightest * 100 // FULL
            used_node = np.where(tightest == FULL, 49, np.maximum(100 - pct // 10, 50))
        return np.where(idle, np.maximum(33 - healthy, healthy), used_node).astype(np.float64)


class BestFitPolicy(Policy):
    """The node left with the least free (CPU, NPU) after placement, equal weights.

    ``raw = trunc(100 * (1 - (0.5*(cpu_free-cpu)/128k + 0.5*(npu_free-npu)/8000)))``, then
    min-max normalised to 0..100 over the candidates (integer division).
    """

    name = "bestfit"

    def score(self, cycle: Cycle) -> np.ndarray:
        s, req, c = cycle.state, cycle.request, cycle.candidates
        left = (
            0.5 * (s.cpu_free[c] - req.cpu_milli) / SPEC_CPU
            + 0.5 * (s.free_total[c] - req.device_milli) / SPEC_DEVICES
        )
        raw = np.trunc(MAX_SCORE * (1 - left)).astype(np.int64)
        lo, hi = raw.min(), raw.max()
        if hi == lo:
            return np.zeros(c.size)
        scores: np.ndarray = ((raw - lo) * MAX_SCORE // (hi - lo)).astype(np.float64)
        return scores


class FgdPolicy(Policy):
    """Fragmentation gradient descent: the node and device whose fragmentation grows least.

    ``score = trunc(100 * sigmoid((F_before - F_after) / 1000))`` where F is the expected
    fragmentation over the workload's task mix; for a share, the best over its node's
    fitting devices, and the share goes to that device (the lowest index among equal
    scores, as in the paper's simulator).
    """

    name = "fgd"

    def __init__(self, mix: TaskMix, state: ClusterState):
        self.frag = Fragmentation(mix, state)
        # A node's score depends only on its own state: kept per request shape (memory is
        # not part of the measure, except a share's device memory, which decides which
        # devices can take it) and recomputed only for nodes that changed.
        self._scores = PerShape(state, (np.float64,))

    def score(self, cycle: Cycle) -> np.ndarray:
        req, c = cycle.request, cycle.candidates
        key = (req.cpu_milli, req.npus, req.share_milli, req.share_memory_mib, req.models)
        (scores,) = self._scores.get(
            key, c, lambda nodes: (self._score_nodes(cycle.state, req, nodes),)
        )
        picked: np.ndarray = scores[c]
        return picked

    def _score_nodes(self, s: ClusterState, req: Request, nodes: np.ndarray) -> np.ndarray:
        """Scores of ``nodes``: for a share, the best over each node's fitting devices."""
        self.frag.sync()
        if not req.share_milli:
            return _sigmoid_score(self.frag.current[nodes] - self.frag.after_whole(nodes, req))
        pos, slots = np.nonzero(fit.device_fit(s, req, nodes))
        per_pair = _sigmoid_score(
            self.frag.current[nodes[pos]] - self.frag.after_share(nodes[pos], slots, req)
        )
        return np.maximum.reduceat(per_pair, np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]]))

    def select_devices(self, cycle: Cycle, node: int) -> tuple[list[int], list[int]]:
        req = cycle.request
        if not req.share_milli:
            return super().select_devices(cycle, node)
        # Scored again for the chosen node only: cheaper than keeping a device per node.
        self.frag.sync()
        slots = np.flatnonzero(fit.device_fit(cycle.state, req, np.array([node]))[0])
        at = np.full(slots.size, node)
        per_device = _sigmoid_score(self.frag.current[at] - self.frag.after_share(at, slots, req))
        return [int(slots[np.argmax(per_device)])], [req.share_milli]  # first best: lowest index


def _sigmoid_score(delta: np.ndarray) -> np.ndarray:
    return np.floor(MAX_SCORE / (1 + np.exp(-delta / FULL)))


#: Name -> class, for the registry.
BASELINE_CLASSES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (
        RandomPolicy,
        DotProdPolicy,
        ClusteringPolicy,
        PackingPolicy,
        BestFitPolicy,
        FgdPolicy,
    )
}
