"""Preemption in the replay: priorities for trace pods, and evictions that make room.

When an arriving pod fits nowhere, the replay asks the engine's preemption
(``engine.preemption.select_victims`` per node, ``pick_node`` across them) which
lower-priority pods to evict so that it fits, evicts them (turned away in the arrival-only
replay; waiting again in the timeline) and places the pod on that node with the policy.
The answer is exactly ``plan_preemption``'s (every running pod a candidate, no PDBs, no
start times: ties go to the smallest node name), found faster: :class:`Preemptor` keeps,
per priority, the CPU, memory and device compute held on each node, so that a necessary
condition rules nodes out with a few array operations, and it asks ``select_victims``
about the rest in the order of a lower bound of their answer, stopping once no node left
can beat the best answer found.

Priorities (:func:`priorities_from_qos`): the openb trace's ``qos`` column, ``LS`` and
``Guaranteed`` 1000, ``Burstable`` 500, ``BE`` 0. A pod list without it gets
:func:`seeded_priorities`: per pod, 0 with probability ``LOW_SHARE`` (openb's share of
``BE`` pods), else 1000, drawn with the run's seed.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from kubenpu.engine.framework import Engine
from kubenpu.engine.preemption import (
    NO_PRIORITY,
    PRIORITY_OFFSET,
    Candidate,
    RunningPod,
    Victims,
    fewest,
    select_victims,
)
from kubenpu.engine.state import FULL, ClusterState
from kubenpu.errors import InputError
from kubenpu.model import Request

#: Priority of each openb ``qos`` value.
QOS_PRIORITY = {"LS": 1000, "Guaranteed": 1000, "Burstable": 500, "BE": 0}
#: Without a ``qos`` column: the share of pods drawn at priority 0 (openb: 3,398 ``BE`` of
#: 8,152 pods), the rest at 1000.
LOW_SHARE = 0.42


def priorities_from_qos(qos: Mapping[str, str]) -> dict[str, int]:
    """Pod name -> priority, from each pod's openb ``qos`` value."""
    out = {}
    for pod, value in qos.items():
        if value not in QOS_PRIORITY:
            raise InputError(
                f"pod {pod}: qos {value!r} is not one of {', '.join(sorted(QOS_PRIORITY))}"
            )
        out[pod] = QOS_PRIORITY[value]
    return out


def seeded_priorities(pods: Sequence[Request], seed: int) -> dict[str, int]:
    """Pod name -> priority for pods without a ``qos``: 0 or 1000, by a draw per pod in
    list order from a generator seeded with ``seed``."""
    low = np.random.default_rng(seed).random(len(pods)) < LOW_SHARE
    return {p.name: 0 if is_low else 1000 for p, is_low in zip(pods, low, strict=True)}


@dataclass
class EvictionStats:
    """What preemption did in one run."""

    #: Arrivals that fit nowhere and were placed by evicting pods, and the pods evicted.
    preemptions: int = 0
    evictions: int = 0
    #: Device compute (milli) the evicted pods held.
    evicted_milli: int = 0
    #: Arrivals that fit nowhere and that no eviction of lower-priority pods helped.
    no_victims: int = 0

    def as_json(self) -> dict[str, int]:
        """The ``preemption`` object of a run in ``kubenpu simulate --preempt --format json``."""
        return {
            "preemptions": self.preemptions,
            "evictions": self.evictions,
            "evicted_milli": self.evicted_milli,
            "no_victims": self.no_victims,
        }


class Preemptor:
    """``plan_preemption`` over a ``ClusterState`` that changes only through this object's
    :meth:`track` and :meth:`remove` (each placement and removal must be told)."""

    def __init__(self, state: ClusterState, priorities: Mapping[str, int]) -> None:
        self.state = state
        self.priorities = priorities
        #: The distinct priorities, ascending; level k of the arrays below is levels[k].
        self.levels = sorted(set(priorities.values()) | {0})
        self._level = {p: k for k, p in enumerate(self.levels)}
        shape = (len(self.levels), state.num_nodes)
        self.cpu = np.zeros(shape, dtype=np.int64)
        self.mem = np.zeros(shape, dtype=np.int64)
        self.dev = np.zeros((*shape, state.dev_used.shape[1]), dtype=np.int64)
        #: Pods on each device slot, of any priority.
        self.pods_on = np.zeros(state.dev_used.shape, dtype=np.int64)
        #: Pods on each node, in the order they were placed (as ``state.holdings``).
        self.on_node: list[dict[str, None]] = [{} for _ in range(state.num_nodes)]
        for pod in state.holdings:
            self.track(pod)

    def priority(self, pod: str) -> int:
        """A pod's priority (0, Kubernetes' default, when it has none)."""
        return self.priorities.get(pod, 0)

    def track(self, pod: str) -> None:
        """Count a pod that now holds a placement in the state."""
        self._add(pod, 1)
        self.on_node[self.state.holdings[pod].node][pod] = None

    def remove(self, pod: str) -> None:
        """Remove a pod from the state (and from this object's counts): evicted, or gone."""
        self._add(pod, -1)
        h = self.state.holdings[pod]
        del self.on_node[h.node][pod]
        self.state.unreserve(pod)

    def _add(self, pod: str, sign: int) -> None:
        h = self.state.holdings[pod]
        k = self._level[self.priority(pod)]
        self.cpu[k, h.node] += sign * h.request.cpu_milli
        self.mem[k, h.node] += sign * h.request.memory_mib
        for j, share in zip(h.slots, h.placement.shares_milli, strict=True):
            self.dev[k, h.node, j] += sign * share
            self.pods_on[h.node, j] += sign

    def preempt(self, engine: Engine, req: Request, stats: EvictionStats) -> list[Request] | None:
        """For ``req``, which fits nowhere: evict the victims :meth:`plan` chooses and
        place ``req`` on their node with the engine's policy (as kube-scheduler does on the
        node it nominated); the evicted pods, or None (nothing evicted, ``req`` not placed).
        ``req``, when placed, is reserved and tracked."""
        victims = self.plan(req, self.priority(req.name))
        if victims is None or not victims.pods:
            # (Empty victims: the engine's fit said no where preemption's says yes; it
            # is the engine that places, so nothing to do.)
            stats.no_victims += 1
            return None
        for v in victims.pods:
            self.remove(v.name)
        decision = engine.decide_on(req, self.state.node_index[victims.node])
        if decision.placement is None:
            # Freed on preemption's arithmetic but not on the engine's: put them back.
            for v in victims.pods:
                self.state.reserve(v.placement, v.request)
                self.track(v.name)
            stats.no_victims += 1
            return None
        self.state.reserve(decision.placement, req)
        self.track(req.name)
        stats.preemptions += 1
        stats.evictions += len(victims.pods)
        stats.evicted_milli += sum(v.request.device_milli for v in victims.pods)
        return [v.request for v in victims.pods]

    def plan(self, req: Request, priority: int) -> Victims | None:
        """What ``plan_preemption(state, req, priority, priorities)`` answers: the victims
        on the node ``pick_node`` prefers, or None."""
        s = self.state
        never = np.iinfo(np.int64).max
        # Per node, a lower bound of its answer's (highest priority, count): top[i] is the
        # first level whose pods (and all below), if evicted, could free enough (necessary
        # conditions; NO_PRIORITY: it may fit as it is; never: preemption cannot help).
        top = np.full(s.num_nodes, never, dtype=np.int64)
        count = np.ones(s.num_nodes, dtype=np.int64)
        undecided = self._could_fit(req, None)
        top[undecided] = NO_PRIORITY
        count[undecided] = 0
        undecided = ~undecided
        cpu = np.zeros(s.num_nodes, dtype=np.int64)
        mem = np.zeros(s.num_nodes, dtype=np.int64)
        dev = np.zeros_like(s.dev_used)
        for k, level in enumerate(self.levels):
            if level >= priority:
                break
            cpu += self.cpu[k]
            mem += self.mem[k]
            dev += self.dev[k]
            ok = undecided & self._could_fit(req, (cpu, mem, dev))
            top[ok] = level
            if req.npus:
                # k whole NPUs: every pod on k cleared slots goes, so at least as many as
                # sit on the k-th least crowded slot that can be cleared at this level.
                clear = s.dev_healthy & (s.dev_free + dev == FULL)
                pods = np.where(clear, self.pods_on, never)
                kth = np.partition(pods, req.npus - 1, axis=1)[:, req.npus - 1]
                count[ok] = np.maximum(kth[ok], 1)
            undecided &= ~ok
        rows = np.flatnonzero(top != never)
        if rows.size == 0:
            return None
        # pick_node's key is at least (0, top, sum, count, 0.0), sum counting top once
        # and the lowest priority for the others (criterion 5 is 0.0: no start times).
        least = self.levels[0] + PRIORITY_OFFSET

        def bound(t: int, c: int) -> Key:
            return (0, t, 0 if c == 0 else t + PRIORITY_OFFSET + (c - 1) * least, c, 0.0)

        # Best first: a node's bound is refined (victims counted against its pods) before
        # select_victims is asked, and the search stops once no bound can beat the best.
        heap = [
            (bound(int(top[i]), int(count[i])), s.nodes[i].name, i, False) for i in rows.tolist()
        ]
        heapq.heapify(heap)
        best: Victims | None = None
        best_key: tuple[Key, str] | None = None
        while heap:
            key, name, i, refined = heapq.heappop(heap)
            if best_key is not None and (key, name) > best_key:
                break  # nodes come in bound order: none left can beat the best
            t = int(top[i])
            if not refined and t != NO_PRIORITY:
                c = self._fewest_victims(req, i, t)
                # None: not with pods of priority t or less; the answer's top is higher.
                better = (0, t + 1, 0, 0, 0.0) if c is None else bound(t, max(c, key[3]))
                heapq.heappush(heap, (better, name, i, True))
                continue
            answer = self._on_node(req, priority, i)
            if answer is not None:
                mine = (answer.rank(), answer.node)
                if best_key is None or mine < best_key:
                    best, best_key = answer, mine
        return best

    def _fewest_victims(self, req: Request, i: int, top: int) -> int | None:
        """A lower bound of the victims on node ``i`` that let ``req`` fit, when all are of
        priority ``top`` or less; None if no such set exists (device memory is ignored)."""
        s = self.state
        holdings = s.holdings
        pods = [holdings[p] for p in self.on_node[i] if self.priority(p) <= top]
        cpu_need = req.cpu_milli - int(s.cpu_free[i])
        mem_need = req.memory_mib - int(s.mem_free[i])
        # Whatever the devices need, the victims must free the node's CPU and memory.
        floor = _max(
            fewest([h.request.cpu_milli for h in pods], cpu_need),
            fewest([h.request.memory_mib for h in pods], mem_need),
        )
        if floor is None or not req.wants_devices or req.npus > 1:
            return floor  # (several whole NPUs: the array bound covers the devices)
        best: int | None = None
        for j in np.flatnonzero(s.dev_healthy[i]).tolist():
            on = [h for h in pods if j in h.slots]
            if len(on) < self.pods_on[i, j] and req.npus:
                continue  # a pod above ``top`` sits there: the device cannot be cleared
            if req.npus:
                # One whole NPU: every pod on j goes, plus what CPU and memory still lack.
                rest = [h for h in pods if j not in h.slots]
                extra = _max(
                    fewest(
                        [h.request.cpu_milli for h in rest],
                        cpu_need - sum(h.request.cpu_milli for h in on),
                    ),
                    fewest(
                        [h.request.memory_mib for h in rest],
                        mem_need - sum(h.request.memory_mib for h in on),
                    ),
                )
                here = None if extra is None else len(on) + extra
            elif bool(s.dev_whole[i, j]):
                here = 1 if on else None  # the whole holder goes, or the device stays taken
            else:
                here = fewest(
                    [h.placement.shares_milli[h.slots.index(j)] for h in on],
                    req.share_milli - int(s.dev_free[i, j]),
                )
            if here is not None:
                best = here if best is None else min(best, here)
        return None if best is None else max(best, floor)

    def _on_node(self, req: Request, priority: int, i: int) -> Victims | None:
        holdings = self.state.holdings
        running = []
        for pod in self.on_node[i]:
            h = holdings[pod]
            running.append(RunningPod(h.request, h.placement, self.priority(pod)))
        candidates = [Candidate(p.name) for p in running]
        return select_victims(req, priority, self.state.nodes[i], running, candidates)

    def _could_fit(
        self, req: Request, freed: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    ) -> np.ndarray:
        """Per node: could ``req`` fit once ``freed`` (CPU, memory, per-device compute of
        the pods evicted) is given back? A necessary condition (device memory ignored)."""
        s = self.state
        cpu, mem, dev = (0, 0, 0) if freed is None else freed
        ok: np.ndarray = (s.cpu_free + cpu >= req.cpu_milli) & (s.mem_free + mem >= req.memory_mib)
        if not req.wants_devices:
            return ok
        ok &= s.models_mask(req.models)
        free = np.where(s.dev_healthy, s.dev_free + dev, 0)
        if req.npus:
            ok &= (free == FULL).sum(axis=1) >= req.npus
        else:
            ok &= (free >= req.share_milli).any(axis=1)
        return ok


#: pick_node's key of one node's answer: criteria 1-4 and the start-time criterion.
Key = tuple[int, int, int, int, float]


def _max(a: int | None, b: int | None) -> int | None:
    """The larger of two counts; None (impossible) if either is."""
    return None if a is None or b is None else max(a, b)
