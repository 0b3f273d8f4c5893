"""Time-driven replay: pods come in creation order, run as long as they ran, and wait.

Unlike the arrival-only experiment, pods leave: one placed at ``t`` frees its capacity at
``t + runtime``. A pod that fits nowhere waits, as in kube-scheduler's queue: waiting pods
are retried, oldest first, whenever capacity frees, and none blocks the ones behind it. A
pod still waiting as long after its arrival as the trace's deletion came after its creation
was given up by its owner. Allocation is reported from the first to the last arrival; after
it, departures go on until no pod waits (one that fits no node even empty waits forever).

To ask "what if pods came K times as often", :func:`speed_up` divides the time between
arrivals, keeping runtimes; :func:`offered_load` says how much the replay asks of the cluster.

Exactness without retrying every waiting pod at every departure: a waiting pod failed on
every node when it last tried, and since then only nodes that something left gained
capacity; so after a departure from node ``i`` only pods whose CPU, memory, model and
device ask fit node ``i``'s free capacity (a necessary condition) are retried, through the
engine itself.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from kubenpu.engine.framework import Engine, Profile
from kubenpu.engine.state import FULL, ClusterState
from kubenpu.errors import InputError
from kubenpu.model import Node, Request
from kubenpu.traces.openb import TimedPod

#: Event kinds, in the order they happen at one instant: leave first, then arrive.
_LEAVE, _ARRIVE = 0, 1
#: Waiting-time percentiles reported.
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class TimelineResult:
    """One time-driven replay of one policy."""

    policy: str
    seed: int
    horizon_s: int
    #: Allocation (% of all device compute) sampled at evenly spaced times over the trace.
    times_s: list[int]
    allocation: list[float]
    #: Time-weighted mean allocation over the trace, and its peak.
    mean_allocation_pct: float
    peak_allocation_pct: float
    placed: int
    #: Pods that waited at all, and the waiting-time percentiles of placed NPU pods (s).
    waited: int
    wait_s: dict[str, float]
    #: Pods never placed: given up while waiting, and waiting when nothing was left to leave.
    gave_up: int
    waiting_at_end: int
    #: What the replay asked of the cluster (see :func:`offered_load`).
    offered_load: float
    elapsed_s: float

    def as_json(self) -> dict[str, object]:
        """The JSON form of ``kubenpu simulate --timeline --format json``."""
        return {
            "policy": self.policy,
            "seed": self.seed,
            "horizon_s": self.horizon_s,
            "mean_allocation_pct": self.mean_allocation_pct,
            "peak_allocation_pct": self.peak_allocation_pct,
            "placed": self.placed,
            "waited": self.waited,
            "wait_s": self.wait_s,
            "never_placed": self.gave_up + self.waiting_at_end,
            "gave_up": self.gave_up,
            "waiting_at_end": self.waiting_at_end,
            "offered_load": self.offered_load,
            "times_s": self.times_s,
            "allocation": self.allocation,
            "elapsed_s": round(self.elapsed_s, 3),
        }


class _Waiting:
    """The queue of waiting pods, oldest first, with arrays for the necessary-fit check."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.pods: list[TimedPod] = []
        self._allowed: dict[frozenset[str], np.ndarray] = {}

    def add(self, pod: TimedPod) -> None:
        self.pods.append(pod)

    def expire(self, now: int) -> int:
        """Drop the pods given up by ``now``; how many."""
        kept = [p for p in self.pods if p.deleted_s > now]
        gone = len(self.pods) - len(kept)
        self.pods = kept
        return gone

    def may_fit(self, node: int) -> list[TimedPod]:
        """Waiting pods, oldest first, that node ``node``'s free capacity might take."""
        if not self.pods:
            return []
        s = self.state
        reqs = [p.request for p in self.pods]
        cpu = np.fromiter((r.cpu_milli for r in reqs), np.int64, len(reqs))
        mem = np.fromiter((r.memory_mib for r in reqs), np.int64, len(reqs))
        npus = np.fromiter((r.npus for r in reqs), np.int64, len(reqs))
        share = np.fromiter((r.share_milli for r in reqs), np.int64, len(reqs))
        ok = (cpu <= s.cpu_free[node]) & (mem <= s.mem_free[node])
        ok &= npus <= s.full_free[node]
        ok &= share <= (s.dev_free[node].max() if s.dev_free.shape[1] else 0)
        ok &= np.fromiter((self._model_ok(r, node) for r in reqs), bool, len(reqs))
        return [p for p, good in zip(self.pods, ok, strict=True) if good]

    def _model_ok(self, req: Request, node: int) -> bool:
        if not req.wants_devices:
            return True
        mask = self._allowed.get(req.models)
        if mask is None:
            mask = self._allowed[req.models] = self.state.models_mask(req.models)
        return bool(mask[node])

    def remove(self, pod: TimedPod) -> None:
        self.pods.remove(pod)


def offered_load(pods: Sequence[TimedPod], capacity_milli: int) -> float:
    """NPU compute x runtime the pods ask within [first, last arrival], over that span, as
    a multiple of ``capacity_milli``."""
    start = min(p.created_s for p in pods)
    end = max(p.created_s for p in pods)
    if end == start or capacity_milli == 0:
        return 0.0
    asked = sum(p.request.device_milli * min(p.runtime_s, end - p.created_s) for p in pods)
    return asked / ((end - start) * capacity_milli)


def speed_up(pods: Sequence[TimedPod], factor: float) -> list[TimedPod]:
    """The pods with the time between arrivals divided by ``factor``; runtimes and the
    time each waits before giving up are kept."""
    if not factor > 0:
        raise InputError(f"--speedup must be positive, not {factor}")
    start = min(p.created_s for p in pods)
    out = []
    for p in pods:
        created = start + round((p.created_s - start) / factor)
        out.append(replace(p, created_s=created, deleted_s=created + p.deleted_s - p.created_s))
    return out


def replay_timeline(
    nodes: Sequence[Node],
    pods: Sequence[TimedPod],
    make_profile: Callable[[ClusterState, Sequence[Request]], Profile],
    *,
    seed: int,
    samples: int = 200,
) -> TimelineResult:
    """Replay ``pods`` by their times (already compressed, if wanted) through one policy;
    the report covers first to last arrival."""
    started = time.perf_counter()
    state = ClusterState(nodes)
    if state.total_devices == 0:
        raise InputError("the cluster has no NPU devices: nothing to replay")
    capacity = state.total_devices * FULL
    profile = make_profile(state, [p.request for p in pods])
    engine = Engine(state, profile, seed=seed)
    start = min(p.created_s for p in pods)
    horizon = max(p.created_s for p in pods)
    events: list[tuple[int, int, int]] = [(p.created_s, _ARRIVE, k) for k, p in enumerate(pods)]
    heapq.heapify(events)
    index = {p.request.name: k for k, p in enumerate(pods)}
    waiting = _Waiting(state)
    waits: list[int] = []
    placed = gave_up = 0
    allocated = 0
    area = 0.0  # integral of allocated milli over time
    peak = 0
    last = start
    grid = np.linspace(start, horizon, samples).round().astype(np.int64)
    curve: list[float] = []

    def advance(now: int) -> None:
        nonlocal area, last
        now = min(now, horizon)  # the report ends at the last arrival; the queue drains on
        while len(curve) < samples and grid[len(curve)] < now:
            curve.append(round(100 * allocated / capacity, 4))
        area += allocated * (now - last)
        last = now

    def try_place(pod: TimedPod, now: int) -> bool:
        nonlocal placed, allocated, peak
        if engine.place(pod.request).placement is None:
            return False
        placed += 1
        allocated += pod.request.device_milli
        peak = max(peak, allocated)
        if pod.request.wants_devices:
            waits.append(now - pod.created_s)
        heapq.heappush(events, (now + pod.runtime_s, _LEAVE, index[pod.request.name]))
        return True

    # After the last arrival, departures go on while pods wait: every wait gets its end.
    while events and (events[0][0] <= horizon or waiting.pods):
        now, kind, k = heapq.heappop(events)
        advance(now)
        pod = pods[k]
        if kind == _ARRIVE:
            if not try_place(pod, now):
                waiting.add(pod)
            continue
        holding = state.unreserve(pod.request.name)
        assert holding is not None, "only placed pods have a leave event"
        allocated -= pod.request.device_milli
        gave_up += waiting.expire(now)
        for candidate in waiting.may_fit(holding.node):
            if try_place(candidate, now):
                waiting.remove(candidate)
    advance(horizon)
    while len(curve) < samples:
        curve.append(round(100 * allocated / capacity, 4))
    span = max(horizon - start, 1)
    return TimelineResult(
        policy=profile.name,
        seed=seed,
        horizon_s=horizon,
        times_s=[int(t) for t in grid],
        allocation=curve,
        mean_allocation_pct=round(100 * area / span / capacity, 4),
        peak_allocation_pct=round(100 * peak / capacity, 4),
        placed=placed,
        waited=sum(1 for w in waits if w > 0),
        wait_s={f"p{q}": float(np.percentile(waits, q)) if waits else 0.0 for q in PERCENTILES}
        | {"max": float(max(waits, default=0))},
        gave_up=gave_up,
        waiting_at_end=len(waiting.pods),
        offered_load=round(offered_load(pods, capacity), 4),
        elapsed_s=time.perf_counter() - started,
    )
