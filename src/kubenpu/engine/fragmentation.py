"""Fragmentation of NPU capacity with respect to a mix of task shapes (the FGD measure).

A node's free device compute is a *fragment* for a task shape when that task could not use
it: all of it when the task cannot run on the node at all (too little CPU, wrong model, too
few fitting devices, or the task needs no NPU), otherwise the free compute of the devices
with less free than the task's per-device need. The expected fragmentation over the mix of
shapes (weighted by how common each shape is) is what FGD minimises.

Everything is vectorised: shapes x nodes (x device slots), with numpy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kubenpu.engine.state import FULL, ClusterState
from kubenpu.model import Request


@dataclass(frozen=True)
class TaskMix:
    """Task shapes and their probabilities, estimated from a workload."""

    cpu_milli: np.ndarray  # [K]
    per_device: np.ndarray  # [K] milli needed on each device (0: no NPU)
    count: np.ndarray  # [K] devices needed (1 for shares)
    models: tuple[frozenset[str], ...]  # [K] allowed models (empty: any)
    prob: np.ndarray  # [K], sums to 1

    @property
    def size(self) -> int:
        """Number of task shapes."""
        return int(self.prob.size)

    def model_ok(self, state: ClusterState) -> np.ndarray:
        """[K, N]: the node's model is allowed for the shape."""
        return (
            np.stack([state.models_mask(m) for m in self.models])
            if self.size
            else np.zeros((0, state.num_nodes), dtype=bool)
        )


def shape_of(req: Request) -> tuple[int, int, int, frozenset[str]]:
    """(cpu, per-device milli, device count, models) of a request."""
    if req.npus:
        return req.cpu_milli, FULL, req.npus, req.models
    if req.share_milli:
        return req.cpu_milli, req.share_milli, 1, req.models
    return req.cpu_milli, 0, 0, frozenset()


def task_mix(pods: Sequence[Request], coverage: float = 0.95) -> TaskMix:
    """The most common shapes of ``pods`` covering ``coverage`` of them, renormalised.

    Shapes are (CPU, per-device compute, device count, models); memory is left out, as in
    the FGD paper. Ties in popularity go to the larger shape so the result is deterministic.
    """
    counts = Counter(shape_of(p) for p in pods)
    ranked = sorted(
        counts.items(),
        key=lambda kv: (kv[1], kv[0][0], kv[0][1], kv[0][2], "|".join(sorted(kv[0][3]))),
        reverse=True,
    )
    kept, total = [], 0
    for shape, n in ranked:
        kept.append((shape, n))
        total += n
        if total >= coverage * len(pods):
            break
    weights = np.array([n for _, n in kept], dtype=np.float64)
    return TaskMix(
        cpu_milli=np.array([s[0] for s, _ in kept], dtype=np.int64),
        per_device=np.array([s[1] for s, _ in kept], dtype=np.int64),
        count=np.array([s[2] for s, _ in kept], dtype=np.int64),
        models=tuple(s[3] for s, _ in kept),
        prob=weights / weights.sum() if weights.size else weights,
    )


class Fragmentation:
    """Expected fragmentation of nodes, and of nodes after a hypothetical placement."""

    def __init__(self, mix: TaskMix, state: ClusterState):
        self.mix = mix
        self.model_ok = mix.model_ok(state)  # models never change, so computed once
        self.gpu_task = mix.per_device > 0
        #: [K, 1, 1] per-device need, ready to broadcast against [n, D] free compute.
        self.need = mix.per_device[:, None, None]

    def parts(self, dev_free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For free compute [n, D]: (fragment if the shape fits [K, n], fitting devices [K, n])."""
        lt = dev_free[None, :, :] < self.need
        frag_fit = (dev_free[None, :, :] * lt).sum(axis=2)
        fitting = (~lt).sum(axis=2)
        return frag_fit, fitting

    def combine(
        self,
        nodes: np.ndarray,
        frag_fit: np.ndarray,
        fitting: np.ndarray,
        cpu_free: np.ndarray,
        free_total: np.ndarray,
    ) -> np.ndarray:
        """Expected fragmentation given the parts; arrays broadcast over trailing axes."""
        mix = self.mix
        extra = (1,) * (frag_fit.ndim - 2)
        shape = (-1, 1, *extra)
        fits = (
            self.gpu_task.reshape(shape)
            & self.model_ok[:, nodes].reshape(self.model_ok.shape[0], nodes.size, *extra)
            & (fitting >= mix.count.reshape(shape))
            & (cpu_free[None, ...] >= mix.cpu_milli.reshape(shape))
        )
        per_shape = np.where(fits, frag_fit, free_total[None, ...])
        return np.tensordot(mix.prob, per_shape, axes=(0, 0))

    def of_nodes(self, state: ClusterState, nodes: np.ndarray) -> np.ndarray:
        """Expected fragmentation (milli) of each of ``nodes`` as they are now."""
        frag_fit, fitting = self.parts(state.dev_free[nodes])
        return self.combine(
            nodes, frag_fit, fitting, state.cpu_free[nodes], state.free_total[nodes]
        )
