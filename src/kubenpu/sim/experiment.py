"""The openb experiment: inflate the workload, shuffle, schedule once, record allocation.

Steps, as the FGD paper ran them (see ``../shared/traces/openb/README.md``):

1. inflate: with a generator seeded by the run's seed, append copies of pods drawn at random
   (with replacement) while the total device request stays within ``tune`` x capacity;
2. shuffle the list with the same generator;
3. schedule every pod once in that order; a pod that fits nowhere stays unscheduled;
4. each time arrived device requests cross another 1% of capacity, record the allocated
   device compute as a percentage of capacity.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from kubenpu.engine.framework import Engine, Profile
from kubenpu.engine.state import FULL, ClusterState
from kubenpu.errors import InputError
from kubenpu.model import Node, Request
from kubenpu.sim.evictions import EvictionStats, Preemptor
from kubenpu.sim.explain import explain as causes
from kubenpu.sim.gangs import GangQueue, GangSource, GangStats, place_gang_now


@dataclass(frozen=True)
class RunResult:
    """One replay of one policy with one seed."""

    policy: str
    seed: int
    tune: float
    total_devices: int
    allocation_curve: list[float]
    final_allocation_pct: float
    unscheduled_pods: int
    elapsed_s: float
    #: Unallocated device compute (milli) by cause at the end (see ``sim.explain``).
    explain: dict[str, int] | None = None
    #: With gangs (``sim.gangs``): what became of them.
    gangs: GangStats | None = None
    #: With priorities (``sim.evictions``): what preemption did.
    preemption: EvictionStats | None = None

    def as_json(self) -> dict:
        """The JSON form documented for ``kubenpu simulate --format json``."""
        return {
            "policy": self.policy,
            "seed": self.seed,
            "tune": self.tune,
            "total_devices": self.total_devices,
            "allocation_curve": self.allocation_curve,
            "final_allocation_pct": self.final_allocation_pct,
            "unscheduled_pods": self.unscheduled_pods,
            "elapsed_s": round(self.elapsed_s, 3),
        } | (
            ({"explain_pct": self.explain_pct()} if self.explain is not None else {})
            | ({"gangs": self.gangs.as_json()} if self.gangs is not None else {})
            | ({"preemption": self.preemption.as_json()} if self.preemption is not None else {})
        )

    def explain_pct(self) -> dict[str, float]:
        """``explain`` as percent of total device capacity."""
        capacity = self.total_devices * FULL
        return {k: round(100 * v / capacity, 4) for k, v in (self.explain or {}).items()}


def inflate(
    pods: Sequence[Request], capacity_milli: int, tune: float, rng: np.random.Generator
) -> list[Request]:
    """The workload resized to ``tune`` x capacity of device requests.

    Usually that means all of ``pods`` plus random copies while the total device request
    stays within the limit. Copies get a ``-c<k>`` suffix so every pod name stays unique
    (a ``k`` whose name an original pod already has is skipped). A workload already over
    the limit is instead thinned: NPU pods drawn at random are dropped until it fits.
    """
    out = list(pods)
    limit = tune * capacity_milli
    total = sum(p.device_milli for p in out)
    if total > limit:
        keep = np.ones(len(out), dtype=bool)
        for i in rng.permutation(len(out)):
            if total <= limit:
                break
            if out[i].device_milli:
                keep[i] = False
                total -= out[i].device_milli
        return [p for p, k in zip(out, keep, strict=True) if k]
    if not any(p.device_milli for p in pods):
        return out  # nothing to inflate by: the loop would never end
    originals = {p.name for p in pods}
    k = 0
    while True:
        pod = pods[int(rng.integers(len(pods)))]
        if total + pod.device_milli > limit:
            return out
        total += pod.device_milli
        while f"{pod.name}-c{k}" in originals:
            k += 1
        out.append(replace(pod, name=f"{pod.name}-c{k}"))
        k += 1


def arrival_order(
    pods: Sequence[Request], capacity_milli: int, tune: float, seed: int
) -> list[Request]:
    """The run's pods in the order they arrive: inflated, then shuffled, by ``seed``."""
    rng = np.random.default_rng(seed)
    workload = inflate(pods, capacity_milli, tune, rng)
    return [workload[i] for i in rng.permutation(len(workload))]


def original_name(name: str, originals: frozenset[str] | set[str]) -> str:
    """The pod of the file that ``name`` (an arrival: an original or an inflated copy
    ``<pod>-c<k>``) stands for."""
    return name if name in originals else name.rsplit("-c", 1)[0]


def replay(
    nodes: Sequence[Node],
    pods: Sequence[Request],
    make_profile: Callable[[ClusterState, Sequence[Request]], Profile],
    *,
    seed: int,
    tune: float,
    progress: Callable[[int, int], None] | None = None,
    explain: bool = False,
    gangs: GangSource | None = None,
    group_label: str | None = None,
    priorities: Mapping[str, int] | None = None,
) -> RunResult:
    """Run the experiment once; ``make_profile`` builds the policy for the fresh cluster.

    With ``gangs``, their members are placed together when the last arrives
    (``sim.gangs``); with ``priorities`` (by pod of ``pods``; copies inherit them), a pod
    that fits nowhere evicts lower-priority pods if that makes room (``sim.evictions``).
    """
    started = time.perf_counter()
    state = ClusterState(nodes)
    if state.total_devices == 0:
        raise InputError("the cluster has no NPU devices: nothing to replay")
    capacity = state.total_devices * FULL
    arrivals = arrival_order(pods, capacity, tune, seed)
    profile = make_profile(state, pods)
    engine = Engine(state, profile, seed=seed)
    queue = GangQueue(gangs.gangs(arrivals), arrivals) if gangs is not None else None
    preemptor: Preemptor | None = None
    evictions: EvictionStats | None = None
    if priorities is not None:
        originals = {p.name for p in pods}
        preemptor = Preemptor(
            state, {r.name: priorities.get(original_name(r.name, originals), 0) for r in arrivals}
        )
        evictions = EvictionStats()

    points = round(tune * 100)
    curve: list[float] = []
    arrived = 0
    allocated = 0
    turned_away: list[Request] = []

    def place_one(req: Request) -> None:
        nonlocal allocated
        if engine.place(req).placement is not None:
            if preemptor is not None:
                preemptor.track(req.name)
        elif preemptor is None or evictions is None:
            turned_away.append(req)
            return
        else:
            evicted = preemptor.preempt(engine, req, evictions)
            if evicted is None:
                turned_away.append(req)
                return
            for v in evicted:
                allocated -= v.device_milli
                turned_away.append(v)
        allocated += req.device_milli

    for n, req in enumerate(arrivals):
        gang = queue.gang_of(req.name) if queue is not None else None
        if queue is None or gang is None:
            place_one(req)
        elif (released := queue.arrive(req)) is not None:
            gang, members = released
            plan = place_gang_now(engine, gang, members, group_label)
            done = {p.pod for p in plan.placements} if plan is not None else set()
            for m in members:
                if m.name in done:
                    allocated += m.device_milli
                    if preemptor is not None:
                        preemptor.track(m.name)
                else:
                    turned_away.append(m)
            queue.record(gang, len(members), len(done), plan.domain if plan else None)
        arrived += req.device_milli
        # Record once per whole percent of capacity that arrivals have crossed.
        reached = min(points, arrived * 100 // capacity)
        while len(curve) <= reached:
            curve.append(round(100 * allocated / capacity, 4))
        if progress is not None:
            progress(n + 1, len(arrivals))
    while len(curve) <= points:
        curve.append(round(100 * allocated / capacity, 4))
    return RunResult(
        policy=profile.name,
        seed=seed,
        tune=tune,
        total_devices=state.total_devices,
        allocation_curve=curve,
        final_allocation_pct=curve[-1],
        unscheduled_pods=len(turned_away),
        elapsed_s=time.perf_counter() - started,
        explain=causes(state, turned_away) if explain else None,
        gangs=queue.stats if queue is not None else None,
        preemption=evictions,
    )
