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

With gangs (``sim.gangs``) a gang is tried when its last member arrives, all or nothing with
the engine's ``place_gang``; one that does not fit waits as a unit, is retried after a
departure from a node one of its members could use (before single pods, oldest first), and
is given up once every member's deletion time has passed; its members' waits count from
the moment it was complete (waiting for the rest of a gang is not waiting for capacity).
With priorities (``sim.evictions``) a pod that fits nowhere when it arrives may evict
lower-priority pods; the evicted ones wait again as if they had just arrived (same runtime,
same patience), as a controller's replacement pod would. Waiting pods are retried without
preempting.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from kubenpu.engine.framework import Engine, Profile
from kubenpu.engine.state import FULL, ClusterState
from kubenpu.errors import InputError
from kubenpu.model import Node, Request
from kubenpu.sim.evictions import EvictionStats, Preemptor
from kubenpu.sim.gangs import Gang, GangQueue, GangSource, GangStats, place_gang_now
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
    #: With gangs: what became of them (``pods_turned_away``: members never placed).
    gangs: GangStats | None = None
    #: With priorities: what preemption did (evicted pods waited again).
    preemption: EvictionStats | None = None

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
        } | (
            ({"gangs": self.gangs.as_json()} if self.gangs is not None else {})
            | ({"preemption": self.preemption.as_json()} if self.preemption is not None else {})
        )


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

    def could_use(self, node: int, reqs: Sequence[Request]) -> bool:
        """Whether any of ``reqs`` might fit node ``node``'s free capacity (as ``may_fit``)."""
        s = self.state
        top = int(s.dev_free[node].max()) if s.dev_free.shape[1] else 0
        return any(
            r.cpu_milli <= s.cpu_free[node]
            and r.memory_mib <= s.mem_free[node]
            and r.npus <= s.full_free[node]
            and r.share_milli <= top
            and self._model_ok(r, node)
            for r in reqs
        )


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
    gangs: GangSource | None = None,
    group_label: str | None = None,
    priorities: Mapping[str, int] | None = None,
) -> TimelineResult:
    """Replay ``pods`` by their times (already compressed, if wanted) through one policy;
    the report covers first to last arrival. ``gangs`` (over the creation order) and
    ``priorities`` (by pod name) as the module text says."""
    started = time.perf_counter()
    state = ClusterState(nodes)
    if state.total_devices == 0:
        raise InputError("the cluster has no NPU devices: nothing to replay")
    capacity = state.total_devices * FULL
    profile = make_profile(state, [p.request for p in pods])
    engine = Engine(state, profile, seed=seed)
    start = min(p.created_s for p in pods)
    horizon = max(p.created_s for p in pods)
    # (time, kind, pod index, run): a leave event whose run is not the pod's current one
    # belongs to a run ended by an eviction.
    events: list[tuple[int, int, int, int]] = [
        (p.created_s, _ARRIVE, k, 0) for k, p in enumerate(pods)
    ]
    heapq.heapify(events)
    index = {p.request.name: k for k, p in enumerate(pods)}
    run = [0] * len(pods)
    waiting = _Waiting(state)
    by_arrival = [pods[k].request for _, _, k, _ in sorted(events)]
    queue = GangQueue(gangs.gangs(by_arrival), by_arrival) if gangs is not None else None
    #: Gangs complete but not placed: the gang, its members, when it was complete.
    waiting_gangs: list[tuple[Gang, list[TimedPod], int]] = []
    preemptor = Preemptor(state, priorities) if priorities is not None else None
    evictions = EvictionStats() if priorities is not None else None
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

    def begin(pod: TimedPod, now: int, tracked: bool = False, since: int | None = None) -> None:
        """Book a pod the state now holds: it runs from ``now`` for its runtime; it waited
        since its creation (a gang member: since its gang was complete)."""
        nonlocal placed, allocated, peak
        placed += 1
        allocated += pod.request.device_milli
        peak = max(peak, allocated)
        if pod.request.wants_devices:
            waits.append(now - (pod.created_s if since is None else since))
        k = index[pod.request.name]
        run[k] += 1
        heapq.heappush(events, (now + pod.runtime_s, _LEAVE, k, run[k]))
        if preemptor is not None and not tracked:
            preemptor.track(pod.request.name)

    def try_place(pod: TimedPod, now: int) -> bool:
        if engine.place(pod.request).placement is None:
            return False
        begin(pod, now)
        return True

    def try_gang(gang: Gang, members: list[TimedPod], now: int, since: int) -> bool:
        """All or nothing (at least ``min_count``); members left out never run."""
        assert queue is not None
        plan = place_gang_now(engine, gang, [m.request for m in members], group_label)
        if plan is None:
            return False
        done = {p.pod for p in plan.placements}
        for m in members:
            if m.request.name in done:
                begin(m, now, since=since)
        queue.record(gang, len(members), len(done), plan.domain)
        return True

    def try_preempt(pod: TimedPod, now: int) -> bool:
        """Evict lower-priority pods for ``pod``; they wait again from ``now``."""
        nonlocal allocated
        if preemptor is None or evictions is None:
            return False
        evicted = preemptor.preempt(engine, pod.request, evictions)
        if evicted is None:
            return False
        begin(pod, now, tracked=True)
        for v in evicted:
            old = pods[index[v.name]]
            allocated -= v.device_milli
            waiting.add(replace(old, created_s=now, deleted_s=now + old.deleted_s - old.created_s))
        # What the victims freed beyond the preemptor's need may serve a waiting pod.
        retry(state.node_index[state.holdings[pod.request.name].placement.node], now)
        return True

    def retry(node: int, now: int) -> None:
        """Capacity freed on ``node``: waiting gangs, then pods, that might use it."""
        for entry in list(waiting_gangs):
            gang, members, since = entry
            if waiting.could_use(node, [m.request for m in members]) and try_gang(
                gang, members, now, since
            ):
                waiting_gangs.remove(entry)
        for candidate in waiting.may_fit(node):
            if try_place(candidate, now):
                waiting.remove(candidate)

    # After the last arrival, departures go on while pods wait: every wait gets its end.
    while events and (events[0][0] <= horizon or waiting.pods or waiting_gangs):
        now, kind, k, at = heapq.heappop(events)
        advance(now)
        pod = pods[k]
        if kind == _ARRIVE:
            gang = queue.gang_of(pod.request.name) if queue is not None else None
            if queue is not None and gang is not None:
                released = queue.arrive(pod.request)
                if released is not None:
                    members = [pods[index[r.name]] for r in released[1]]
                    if not try_gang(gang, members, now, now):
                        waiting_gangs.append((gang, members, now))
            elif not try_place(pod, now) and not try_preempt(pod, now):
                waiting.add(pod)
            continue
        if at != run[k] or pod.request.name not in state.holdings:
            continue  # the run was ended by an eviction
        holding = state.holdings[pod.request.name]
        if preemptor is not None:
            preemptor.remove(pod.request.name)
        else:
            state.unreserve(pod.request.name)
        allocated -= pod.request.device_milli
        gave_up += waiting.expire(now)
        for entry in [e for e in waiting_gangs if max(m.deleted_s for m in e[1]) <= now]:
            waiting_gangs.remove(entry)  # every member deleted: the job was given up
            gave_up += len(entry[1])
            if queue is not None:
                queue.record(entry[0], len(entry[1]), 0, None)
        retry(holding.node, now)
    advance(horizon)
    for gang, members, _ in waiting_gangs:  # never started: counted as turned away
        if queue is not None:
            queue.record(gang, len(members), 0, None)
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
        waiting_at_end=len(waiting.pods) + sum(len(m) for _, m, _ in waiting_gangs),
        offered_load=round(offered_load(pods, capacity), 4),
        elapsed_s=time.perf_counter() - started,
        gangs=queue.stats if queue is not None else None,
        preemption=evictions,
    )
