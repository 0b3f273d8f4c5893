"""Fragmentation of NPU capacity with respect to a mix of task shapes (the FGD measure).

A node's free device compute is a *fragment* for a task shape when that task could not use
it: all of it when the task cannot run on the node at all (too little CPU, wrong model, too
few fitting devices, or the task needs no NPU), otherwise the free compute of the devices
with less free than the task's per-device need. The expected fragmentation over the mix of
shapes (weighted by how common each shape is) is what FGD minimises.

Everything is vectorised over shapes x nodes; per-node parts are cached and refreshed only
for nodes that changed, and a share is evaluated on every (node, fitting device) pair at
once.
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
    #: [K] pods of each shape (``prob`` is this over its sum): FGD's measure in whole numbers.
    pods: np.ndarray
    #: [K] mean host memory of the pods of each shape (not part of the shape: FGD ignores it).
    memory_mib: np.ndarray

    @property
    def size(self) -> int:
        """Number of task shapes."""
        return int(self.prob.size)


def shape_of(req: Request, grid: int = 1) -> tuple[int, int, int, frozenset[str]]:
    """(cpu, per-device milli, device count, models) of a request; a share's milli is
    rounded up to a multiple of ``grid``."""
    if req.npus:
        return req.cpu_milli, FULL, req.npus, req.models
    if req.share_milli:
        return req.cpu_milli, -(-req.share_milli // grid) * grid, 1, req.models
    return req.cpu_milli, 0, 0, frozenset()


def task_mix(pods: Sequence[Request], coverage: float = 0.95, grid: int = 1) -> TaskMix:
    """The most common shapes of ``pods`` covering ``coverage`` of them, renormalised.

    Shapes are (CPU, per-device compute, device count, models); memory is left out, as in
    the FGD paper. Ties in popularity go to the larger shape so the result is deterministic.
    Share sizes are rounded up to a multiple of ``grid`` milli: on a workload of many
    nearly equal shares that keeps the mix, and the cost of the measure, small.
    """
    shapes = [shape_of(p, grid) for p in pods]
    counts = Counter(shapes)
    memory: Counter[tuple[int, int, int, frozenset[str]]] = Counter()
    for p, shape in zip(pods, shapes, strict=True):
        memory[shape] += p.memory_mib
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
        pods=weights.astype(np.int64),
        memory_mib=np.array([memory[s] / n for s, n in kept], dtype=np.float64),
    )


class Fragmentation:
    """Expected fragmentation of a cluster's nodes for one task mix, kept up to date."""

    def __init__(self, mix: TaskMix, state: ClusterState):
        self.mix = mix
        self.state = state
        k = mix.size
        self.model_ok = (
            np.stack([state.models_mask(m) for m in mix.models])
            if k
            else np.zeros((0, state.num_nodes), dtype=bool)
        )
        self.gpu_task = mix.per_device > 0
        self._need = mix.per_device[:, None]
        self._cpu = mix.cpu_milli[:, None]
        self._count = mix.count[:, None]
        self._pods_total = max(1, int(mix.pods.sum()))
        n = state.num_nodes
        #: [K, N] fragment of each node if the shape fits it; fitting devices per shape.
        self.frag_fit = np.zeros((k, n), dtype=np.int64)
        self.fitting = np.zeros((k, n), dtype=np.int64)
        #: [N] expected fragmentation of each node now.
        self.current = np.zeros(n)
        self._synced = -1

    def sync(self) -> None:
        """Recompute the cached rows of nodes changed since the last call."""
        s = self.state
        rows = np.flatnonzero(s.node_version > self._synced)
        self._synced = s.version
        if rows.size == 0:
            return
        dev = s.dev_free[rows]  # [r, D]
        lt = dev[None, :, :] < self._need[:, :, None]
        self.frag_fit[:, rows] = (dev[None, :, :] * lt).sum(axis=2)
        self.fitting[:, rows] = (~lt).sum(axis=2)
        self.current[rows] = self.expected(
            rows,
            self.frag_fit[:, rows],
            self.fitting[:, rows],
            s.cpu_free[rows],
            s.mem_free[rows],
            s.free_total[rows],
        )

    def expected(
        self,
        nodes: np.ndarray,
        frag_fit: np.ndarray,
        fitting: np.ndarray,
        cpu_free: np.ndarray,
        mem_free: np.ndarray,
        free_total: np.ndarray,
    ) -> np.ndarray:
        """Expected fragmentation of ``nodes`` [P] in the given (possibly hypothetical) state.

        ``frag_fit`` and ``fitting`` are [K, P]; ``cpu_free``, ``mem_free`` and
        ``free_total`` are [P]. FGD's measure ignores memory; subclasses may not.
        """
        fits = (
            self.gpu_task[:, None]
            & self.model_ok[:, nodes]
            & (fitting >= self._count)
            & (cpu_free[None, :] >= self._cpu)
        )
        # Pod counts times whole milli: exact, so equal states give exactly equal values and
        # a change of zero is exactly zero, whichever nodes are evaluated together (a float
        # product's rounding depends on the batch, and FGD truncates the change at 0).
        weighted = self.mix.pods @ np.where(fits, frag_fit, free_total[None, :])
        return weighted / self._pods_total

    def after_whole(self, nodes: np.ndarray, req: Request) -> np.ndarray:
        """Expected fragmentation of ``nodes`` after ``req`` (whole NPUs or none) lands there."""
        s = self.state
        taken = np.where(self.gpu_task, req.npus, 0)[:, None]
        return self.expected(
            nodes,
            self.frag_fit[:, nodes],
            self.fitting[:, nodes] - taken,
            s.cpu_free[nodes] - req.cpu_milli,
            s.mem_free[nodes] - req.memory_mib,
            s.free_total[nodes] - req.device_milli,
        )

    def after_share(self, nodes: np.ndarray, slots: np.ndarray, req: Request) -> np.ndarray:
        """Expected fragmentation after ``req``'s share lands on (node, slot) pairs [P]."""
        s = self.state
        dev = s.dev_free[nodes, slots][None, :]
        new = dev - req.share_milli
        lt_old = dev < self._need
        lt_new = new < self._need
        frag = self.frag_fit[:, nodes] - lt_old * dev + lt_new * new
        fitting = self.fitting[:, nodes] - ~lt_old + ~lt_new
        return self.expected(
            nodes,
            frag,
            fitting,
            s.cpu_free[nodes] - req.cpu_milli,
            s.mem_free[nodes] - req.memory_mib,
            s.free_total[nodes] - req.share_milli,
        )


_UNLIMITED = 1e30


class HostAwareFragmentation(Fragmentation):
    """FGD's measure, plus the device compute that the node's CPU and memory cannot feed.

    For a shape that fits, FGD counts as usable every device with enough free compute. Here
    the node must also have the CPU and memory to run that many pods: with CPU for ``m``
    more pods of the shape (``cpu_free / cpu``, not rounded down, so every CPU milli taken
    counts) and ``c`` devices per pod, at most ``m * c`` devices' worth is usable, and the
    rest is a fragment too. A share counts a whole device per pod: shares that cannot
    start for lack of CPU leave the rest of their device idle as surely as whole pods do.
    """

    def __init__(self, mix: TaskMix, state: ClusterState):
        super().__init__(mix, state)
        claim = (mix.count * FULL).astype(np.float64)
        cpu = mix.cpu_milli.astype(np.float64)
        mem = mix.memory_mib.astype(np.float64)
        # Device compute fed per milli CPU (per MiB): a shape that needs none is never
        # limited, which a huge factor expresses except on a node with none left at all.
        self._per_cpu = np.divide(claim, cpu, out=np.full_like(cpu, _UNLIMITED), where=cpu > 0)
        self._per_mem = np.divide(claim, mem, out=np.full_like(mem, _UNLIMITED), where=mem > 0)
        self._per_cpu = self._per_cpu[:, None]
        self._per_mem = self._per_mem[:, None]
        self._mem = mem[:, None]
        self._static_ok = self.gpu_task[:, None] & self.model_ok

    def expected(
        self,
        nodes: np.ndarray,
        frag_fit: np.ndarray,
        fitting: np.ndarray,
        cpu_free: np.ndarray,
        mem_free: np.ndarray,
        free_total: np.ndarray,
    ) -> np.ndarray:
        """Expected fragmentation, host-aware; arguments as in ``Fragmentation.expected``."""
        fits = (
            self._static_ok[:, nodes]
            & (fitting >= self._count)
            & (cpu_free >= self._cpu)
            & (mem_free >= self._mem)
        )
        # Where a shape fits, its CPU and memory need is at least 1 milli / MiB unless it
        # needs none; then the factor is huge and the free CPU at least the need (0): so
        # clamping free CPU to 1 keeps "unlimited" unlimited without changing other shapes.
        fed = np.minimum(
            np.maximum(cpu_free, 1) * self._per_cpu, np.maximum(mem_free, 1) * self._per_mem
        )
        usable = np.minimum(free_total - frag_fit, fed)
        drop: np.ndarray = free_total * self.mix.prob.sum() - self.mix.prob @ (usable * fits)
        return drop
