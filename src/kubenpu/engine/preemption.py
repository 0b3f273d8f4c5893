"""Preemption that knows devices: which lower-priority pods to evict so a pod fits on a node.

kube-scheduler's own preemption counts extended resources per node, so it may evict shares
spread over several NPUs and still leave no device with room. ``select_victims`` chooses
against the node's devices, with the engine's fit: ``k`` whole NPUs need ``k`` healthy
devices cleared; a share needs its compute (and memory) free on ONE device; CPU and memory
must be free too. Only the ``candidates`` given, of strictly lower priority, are chosen;
PDB-violating ones only when nothing else works. Sets rank as kube-scheduler's
``pickOneNodeForPreemption`` ranks nodes: fewest PDB violations, lowest highest priority,
smallest priority sum (each plus 2**31), fewest victims, then deterministic ties (device
index, then the victims' order). The search is exact (per-device branch and bound; device
choices for whole NPUs); past ``SEARCH_BUDGET`` steps the best set so far is trimmed as
kube-scheduler trims and returned with ``exact=False``. ``pick_node`` ranks per-node answers
as kube-scheduler does; ``plan_preemption`` runs it over a cluster. Pure. docs/preemption.md
has the arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from kubenpu.engine.state import FULL, ClusterState
from kubenpu.errors import PlacementError
from kubenpu.model import Node, Placement, Request

#: Added to every priority before summing, as kube-scheduler does (``math.MaxInt32 + 1``).
PRIORITY_OFFSET = 2**31
#: The "highest priority" of an empty victim set: below every int32 priority.
NO_PRIORITY = -(2**31) - 1

#: Search steps one node's choice may take; past them the best set found so far is made
#: minimal and returned with ``exact=False`` (only huge CPU or memory deficits get there).
SEARCH_BUDGET = 20_000

#: Criteria 1-4 of the module text: (PDB violations, highest priority, offset sum, count).
Prefix = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class RunningPod:
    """A pod running on the node: what it asked for, where it sits, and how important it is.

    ``start_time`` (seconds, any epoch) only breaks ties between nodes (``pick_node``), as
    kube-scheduler's latest-start-time criterion does.
    """

    request: Request
    placement: Placement
    priority: int = 0
    start_time: float = 0.0

    @property
    def name(self) -> str:
        """The pod's name (its placement's)."""
        return self.placement.pod


@dataclass(frozen=True, slots=True)
class Candidate:
    """A pod kube-scheduler offers as a victim, and whether evicting it violates a PDB."""

    pod: str
    violates_pdb: bool = False


@dataclass(frozen=True, slots=True)
class Victims:
    """The pods to evict on one node, most important first (kube-scheduler reads
    ``Pods[0]`` as the highest priority victim), and how many of them violate a PDB.

    No pods means the preemptor fits on the node as it is.
    """

    node: str
    pods: tuple[RunningPod, ...]
    num_pdb_violations: int = 0
    #: For the preemptor: the device slots it would get once the victims are gone.
    slots: tuple[int, ...] = field(default=(), compare=False)
    #: False when the search ran out of steps: the set frees enough and is minimal, but a
    #: better one may exist.
    exact: bool = field(default=True, compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        """The victims' names, most important first."""
        return tuple(p.name for p in self.pods)

    @property
    def highest_priority(self) -> int:
        """The highest victim priority (``NO_PRIORITY`` when there are no victims)."""
        return max((p.priority for p in self.pods), default=NO_PRIORITY)

    @property
    def priority_sum(self) -> int:
        """kube-scheduler's sum: every priority plus ``PRIORITY_OFFSET``."""
        return sum(p.priority + PRIORITY_OFFSET for p in self.pods)

    def prefix(self) -> Prefix:
        """Criteria 1-4 of the module text; smaller is better."""
        return (self.num_pdb_violations, self.highest_priority, self.priority_sum, len(self.pods))

    def rank(self) -> tuple[int, int, int, int, float]:
        """kube-scheduler's node order (criteria 1-4, then latest start time of the
        highest-priority victims); smaller is better."""
        top = self.highest_priority
        earliest = min((p.start_time for p in self.pods if p.priority == top), default=0.0)
        return (*self.prefix(), -earliest)


def pick_node(answers: Iterable[Victims | None]) -> Victims | None:
    """The node kube-scheduler's ``pickOneNodeForPreemption`` would pick among per-node
    answers (None: preemption does not help there): fewest PDB violations, lowest highest
    victim priority, smallest offset priority sum, fewest victims, latest start time of the
    highest-priority victims, then the smallest node name (kube-scheduler: the first in its
    map, which is any). None if no node has an answer.
    """
    found = [v for v in answers if v is not None]
    if not found:
        return None
    return min(found, key=lambda v: (v.rank(), v.node))


def running_on(
    state: ClusterState,
    node: str,
    priorities: Mapping[str, int],
    start_times: Mapping[str, float] | None = None,
) -> list[RunningPod]:
    """The pods holding placements on ``node`` in ``state``, with their priorities (pods
    missing from ``priorities`` get 0, Kubernetes' default) and start times, by name."""
    i = state.node_index[node]
    times = start_times or {}
    out = [
        RunningPod(h.request, h.placement, priorities.get(pod, 0), times.get(pod, 0.0))
        for pod, h in state.holdings.items()
        if h.node == i
    ]
    out.sort(key=lambda p: p.name)
    return out


def plan_preemption(
    state: ClusterState,
    preemptor: Request,
    priority: int,
    priorities: Mapping[str, int],
    violates_pdb: Iterable[str] = (),
    start_times: Mapping[str, float] | None = None,
) -> Victims | None:
    """Over every node of ``state``, with every running pod a candidate: the victims of the
    node ``pick_node`` prefers, or None if evicting lower-priority pods helps nowhere."""
    flagged = frozenset(violates_pdb)
    per_node: dict[int, list[RunningPod]] = {i: [] for i in range(state.num_nodes)}
    times = start_times or {}
    for pod, h in state.holdings.items():
        per_node[h.node].append(
            RunningPod(h.request, h.placement, priorities.get(pod, 0), times.get(pod, 0.0))
        )
    answers = []
    for i, node in enumerate(state.nodes):
        running = per_node[i]
        candidates = [Candidate(p.name, p.name in flagged) for p in running]
        answers.append(select_victims(preemptor, priority, node, running, candidates))
    return pick_node(answers)


# ---- the choice on one node ------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Pod:
    """A running pod as the search sees it (compared by identity)."""

    pod: RunningPod
    #: Evictable: a candidate of lower priority than the preemptor.
    eligible: bool
    violates: bool
    slots: tuple[int, ...]
    shares: tuple[int, ...]
    whole: bool
    #: Position in the tie order of criterion 5 (eligible pods only; -1 otherwise).
    rank: int = -1

    @property
    def priority(self) -> int:
        return self.pod.priority

    def share_on(self, slot: int) -> int:
        return sum(s for j, s in zip(self.slots, self.shares, strict=True) if j == slot)


@dataclass(slots=True)
class _Best:
    """The best victim set found so far, and the search steps left."""

    prefix: Prefix | None = None
    pods: tuple[_Pod, ...] = ()
    slots: tuple[int, ...] = ()
    budget: int = 0

    def spend(self) -> bool:
        """Take one search step; False once the budget is spent and some set was found
        (until one is, the search goes on: taking every item finds one in a few steps)."""
        self.budget -= 1
        return self.budget >= 0 or self.prefix is None

    @property
    def exact(self) -> bool:
        return self.budget >= 0

    def offer(self, prefix: Prefix, pods: Sequence[_Pod], slots: tuple[int, ...]) -> None:
        # Strictly better only: among equal prefixes the first found wins (the tie order).
        if self.prefix is None or prefix < self.prefix:
            self.prefix, self.pods, self.slots = prefix, tuple(pods), slots

    def beaten_by(self, bound: Prefix) -> bool:
        """Whether a set whose criteria are at least ``bound`` can no longer win."""
        return self.prefix is not None and bound >= self.prefix


def _prefix(pods: Iterable[_Pod]) -> Prefix:
    v, top, total, n = 0, NO_PRIORITY, 0, 0
    for p in pods:
        v += p.violates
        top = max(top, p.priority)
        total += p.priority + PRIORITY_OFFSET
        n += 1
    return (v, top, total, n)


class _NodeView:
    """A node's free capacity from its running pods, in the engine's arithmetic."""

    def __init__(self, node: Node, running: Sequence[RunningPod], flags: Mapping[str, bool]):
        d = len(node.devices)
        self.node = node
        self.healthy = [dev.healthy for dev in node.devices]
        self.mem_cap = [dev.memory_mib for dev in node.devices]
        self.used = [0] * d
        self.mem_used = [0] * d
        self.whole = [False] * d
        self.cpu_free = node.cpu_milli
        self.mem_free = node.memory_mib
        slot_of = {dev.id: j for j, dev in enumerate(node.devices)}
        self.pods: list[_Pod] = []
        #: Per slot, the pods holding some of it.
        self.on: list[list[_Pod]] = [[] for _ in range(d)]
        names: set[str] = set()
        for rp in running:
            pl, req = rp.placement, rp.request
            if pl.node != node.name:
                raise PlacementError(f"pod {pl.pod} runs on {pl.node}, not on {node.name}")
            if pl.pod in names:
                raise PlacementError(f"pod {pl.pod} is listed twice on {node.name}")
            names.add(pl.pod)
            slots = []
            for dev_id in pl.device_ids:
                if dev_id not in slot_of:
                    raise PlacementError(f"pod {pl.pod}: node {node.name} has no device {dev_id}")
                slots.append(slot_of[dev_id])
            pod = _Pod(
                rp,
                eligible=pl.pod in flags,
                violates=flags.get(pl.pod, False),
                slots=tuple(slots),
                shares=pl.shares_milli,
                whole=req.npus > 0,
            )
            self.pods.append(pod)
            self.cpu_free -= req.cpu_milli
            self.mem_free -= req.memory_mib
            for j, share in zip(slots, pl.shares_milli, strict=True):
                self.used[j] += share
                if pod.whole:
                    self.whole[j] = True
                else:
                    self.mem_used[j] += req.share_memory_mib
                self.on[j].append(pod)

    def fits_without(self, req: Request, gone: Iterable[_Pod]) -> tuple[int, ...] | None:
        """The slots ``req`` gets once ``gone`` are evicted (``fit.feasible``'s arithmetic),
        or None if it does not fit then."""
        gone = list(gone)
        if req.cpu_milli > self.cpu_free + sum(p.pod.request.cpu_milli for p in gone):
            return None
        if req.memory_mib > self.mem_free + sum(p.pod.request.memory_mib for p in gone):
            return None
        if not req.wants_devices:
            return ()
        if req.models and self.node.model not in req.models:
            return None
        used, mem_used, whole = list(self.used), list(self.mem_used), list(self.whole)
        for p in gone:
            for j, share in zip(p.slots, p.shares, strict=True):
                used[j] -= share
                if p.whole:
                    whole[j] = False
                else:
                    mem_used[j] -= p.pod.request.share_memory_mib
        free = [
            FULL - u if ok and not w else 0
            for u, ok, w in zip(used, self.healthy, whole, strict=True)
        ]
        if req.npus:
            empty = tuple(j for j, f in enumerate(free) if f == FULL)
            return empty[: req.npus] if len(empty) >= req.npus else None
        for j, f in enumerate(free):
            mem_free = self.mem_cap[j] - mem_used[j] if self.healthy[j] else 0
            if f >= req.share_milli and mem_free >= req.share_memory_mib:
                return (j,)
        return None


def select_victims(
    preemptor: Request,
    priority: int,
    node: Node,
    running: Sequence[RunningPod],
    candidates: Iterable[Candidate],
) -> Victims | None:
    """The best set (module text) of ``candidates`` of priority below ``priority`` whose
    eviction lets ``preemptor`` fit on ``node``, given the pods ``running`` there; None if
    no such set exists. Empty victims: it fits as it is.

    Candidates not running on the node are ignored; a pod listed twice violates a PDB if
    either entry says so.
    """
    flags: dict[str, bool] = {}
    by_name = {rp.name: rp for rp in running}
    for c in candidates:
        rp = by_name.get(c.pod)
        if rp is not None and rp.priority < priority:
            flags[c.pod] = flags.get(c.pod, False) or c.violates_pdb
    view = _NodeView(node, running, flags)
    eligible = [p for p in view.pods if p.eligible]
    # The tie order of criterion 5; the search explores pods in it.
    eligible.sort(key=lambda p: (p.violates, p.priority, p.pod.name))
    for r, p in enumerate(eligible):
        p.rank = r
    now = view.fits_without(preemptor, ())
    if now is not None:
        return Victims(node.name, (), 0, now)
    # Evicting every eligible pod is the most that can be done: if that fails, nothing works.
    if view.fits_without(preemptor, eligible) is None:
        return None
    best = _Best(budget=SEARCH_BUDGET)
    if preemptor.npus:
        _search_whole(view, preemptor, eligible, best)
    elif preemptor.share_milli:
        _search_share(view, preemptor, eligible, best)
    else:
        base_cpu, base_mem = _node_deficit(view, preemptor, ())
        _cover(best, (), eligible, [_node_weights(p) for p in eligible], (base_cpu, base_mem), ())
    if best.prefix is None:  # unreachable: evicting all eligible pods fits
        return None
    chosen = best.pods
    if not best.exact:
        chosen = _reprieve(view, preemptor, chosen)
    # The replay: the chosen set must let the preemptor fit, in the same arithmetic.
    slots = view.fits_without(preemptor, chosen)
    if slots is None:
        raise AssertionError(f"preemption of {preemptor.name}: chosen victims do not free enough")
    ordered = sorted(chosen, key=lambda p: (-p.priority, p.pod.start_time, p.pod.name))
    return Victims(
        node.name,
        tuple(p.pod for p in ordered),
        sum(p.violates for p in chosen),
        best.slots if best.exact and best.slots else slots,
        best.exact,
    )


def _reprieve(view: _NodeView, req: Request, chosen: Sequence[_Pod]) -> tuple[_Pod, ...]:
    """kube-scheduler's reprieve: give back victims, violating and most important first,
    while the preemptor still fits; what is left is minimal."""
    order = sorted(chosen, key=lambda p: (not p.violates, -p.priority, p.pod.name))
    kept = list(chosen)
    for p in order:
        rest = [q for q in kept if q is not p]
        if view.fits_without(req, rest) is not None:
            kept = rest
    return tuple(kept)


def _node_deficit(view: _NodeView, req: Request, gone: Iterable[_Pod]) -> tuple[int, int]:
    """CPU and memory still missing on the node once ``gone`` are evicted (<= 0: none)."""
    gone = list(gone)
    cpu = req.cpu_milli - view.cpu_free - sum(p.pod.request.cpu_milli for p in gone)
    mem = req.memory_mib - view.mem_free - sum(p.pod.request.memory_mib for p in gone)
    return cpu, mem


def _node_weights(p: _Pod) -> tuple[int, int]:
    return (p.pod.request.cpu_milli, p.pod.request.memory_mib)


def _search_share(view: _NodeView, req: Request, eligible: list[_Pod], best: _Best) -> None:
    """A share: per device in index order, the best set that frees it on that device."""
    for j in range(len(view.healthy)):
        if not view.healthy[j] or view.mem_cap[j] < req.share_memory_mib:
            continue
        # A pod holding the device whole must go, all of it; nothing else shares the device.
        forced = [p for p in view.on[j] if p.whole]
        if any(not p.eligible for p in forced):
            continue
        forced_prefix = _prefix(forced)
        if best.beaten_by(forced_prefix):
            continue
        core = req.share_milli - (FULL - view.used[j] + sum(p.share_on(j) for p in forced))
        mem = (
            req.share_memory_mib - (view.mem_cap[j] - view.mem_used[j])
            if req.share_memory_mib
            else 0
        )
        cpu, node_mem = _node_deficit(view, req, forced)
        rest = [p for p in eligible if p not in forced]
        weights = [
            (
                0 if p.whole else p.share_on(j),
                p.pod.request.share_memory_mib if not p.whole and j in p.slots else 0,
                *_node_weights(p),
            )
            for p in rest
        ]
        _cover(best, forced, rest, weights, (core, mem, cpu, node_mem), (j,))


def _search_whole(view: _NodeView, req: Request, eligible: list[_Pod], best: _Best) -> None:
    """Whole NPUs: every choice of ``k`` clearable devices in lexicographic order, each
    completed with the pods still needed for CPU and memory."""
    k = req.npus
    # A device can be cleared when it is healthy and every pod on it may be evicted.
    usable = [
        j
        for j in range(len(view.healthy))
        if view.healthy[j] and all(p.eligible for p in view.on[j])
    ]
    if len(usable) < k:
        return

    def choose(start: int, chosen: list[int], gone: list[_Pod]) -> None:
        if not best.spend() or best.beaten_by(_prefix(gone)):
            return  # adding devices or pods only makes the criteria grow
        if len(chosen) == k:
            cpu, mem = _node_deficit(view, req, gone)
            rest = [p for p in eligible if p not in gone]
            _cover(best, gone, rest, [_node_weights(p) for p in rest], (cpu, mem), tuple(chosen))
            return
        for at in range(start, len(usable) - (k - len(chosen)) + 1):
            j = usable[at]
            more = [p for p in view.on[j] if p not in gone]
            choose(at + 1, [*chosen, j], gone + more)

    choose(0, [], [])


def _cover(
    best: _Best,
    base: Sequence[_Pod],
    items: Sequence[_Pod],
    weights: Sequence[tuple[int, ...]],
    deficit: tuple[int, ...],
    slots: tuple[int, ...],
) -> None:
    """Branch and bound: the best superset of ``base`` adding ``items`` whose ``weights``
    cover every positive ``deficit``, offered to ``best``.

    Items are tried in their tie order, taking before leaving, so among sets of equal
    criteria the one first in the tie order is found first. A branch is cut when a lower
    bound of its criteria cannot beat the best (see ``_Suffixes.bound``).
    """
    dims = [d for d, r in enumerate(deficit) if r > 0]
    base_prefix = _prefix(base)
    if not dims:
        best.offer(base_prefix, base, slots)
        return
    useful = [
        (p, tuple(w[d] for d in dims))
        for p, w in zip(items, weights, strict=True)
        if any(w[d] > 0 for d in dims)
    ]
    useful.sort(key=lambda pw: pw[0].rank)
    pods = [p for p, _ in useful]
    ws = [w for _, w in useful]
    m = len(pods)
    # Pods alike for the search (PDB flag, priority, weights): a set taking a later one
    # instead of an earlier one scores the same and loses the tie, so once an earlier one
    # is left out, the later ones are too.
    kinds: dict[tuple[bool, int, tuple[int, ...]], int] = {}
    kind = [kinds.setdefault((p.violates, p.priority, w), len(kinds)) for p, w in useful]
    left = _Suffixes(pods, ws, kind)
    chosen: list[_Pod] = list(base)
    left_out: set[int] = set()

    def dfs(i: int, pre: Prefix, need: tuple[int, ...]) -> None:
        if all(r <= 0 for r in need):
            best.offer(pre, chosen, slots)
            return
        while i < m and kind[i] in left_out:
            i += 1
        if i == m or not best.spend():
            return
        bound = left.bound(i, pre, need, best.prefix, left_out)
        if bound is None or best.beaten_by(bound):
            return
        v, top, total, n = pre
        p, w = pods[i], ws[i]
        chosen.append(p)
        dfs(
            i + 1,
            (v + p.violates, max(top, p.priority), total + p.priority + PRIORITY_OFFSET, n + 1),
            tuple(r - x for r, x in zip(need, w, strict=True)),
        )
        chosen.pop()
        fresh = kind[i] not in left_out
        left_out.add(kind[i])
        dfs(i + 1, pre, need)
        if fresh:
            left_out.discard(kind[i])

    dfs(0, base_prefix, tuple(deficit[d] for d in dims))


def fewest(weights: Iterable[int], need: int) -> int | None:
    """How many of ``weights``, largest first, reach ``need`` (0 if nothing is needed;
    None: all of them do not). A lower bound on victims, for the search here and the
    simulator's."""
    if need <= 0:
        return 0
    total = 0
    for n, w in enumerate(sorted(weights, reverse=True), start=1):
        total += w
        if total >= need:
            return n
    return None


class _Suffixes:
    """Lower bounds on the criteria of any completion taken from the items ``i`` on."""

    def __init__(self, pods: Sequence[_Pod], ws: Sequence[tuple[int, ...]], kind: Sequence[int]):
        self.pods, self.ws, self.kind = pods, ws, kind

    def bound(
        self, i: int, pre: Prefix, need: tuple[int, ...], best: Prefix | None, out: set[int]
    ) -> Prefix | None:
        """A lower bound of the criteria of ``pre`` plus any items from ``i`` on (but none
        of the kinds in ``out``) that cover ``need``; None if none can.

        PDB violations: if the non-violating items left cannot cover a weight, violating
        ones must, at least as many as their largest weights take. Highest priority: at
        least the lowest priority whose items (and those below it) can cover every weight.
        Count and sum: at least as many items as the largest weights take, counting, when
        the bound ties the best on the first two criteria, only items of priority up to the
        best's (any other loses on priority), and their smallest offset priorities.
        """
        at = [j for j in range(i, len(self.pods)) if self.kind[j] not in out]
        pods = [self.pods[j] for j in at]
        ws = [self.ws[j] for j in at]
        v, top, total, n = pre
        dirty = 0
        for d, r in enumerate(need):
            rest = r - sum(w[d] for p, w in zip(pods, ws, strict=True) if not p.violates)
            if rest > 0:
                count = fewest((w[d] for p, w in zip(pods, ws, strict=True) if p.violates), rest)
                if count is None:
                    return None
                dirty = max(dirty, count)
        # The lowest priority cap under which the items can cover every weight.
        by_priority = sorted(range(len(pods)), key=lambda j: pods[j].priority)
        got = [0] * len(need)
        cap = NO_PRIORITY
        for j in by_priority:
            if all(g >= r for g, r in zip(got, need, strict=True)):
                break
            cap = pods[j].priority
            got = [g + w for g, w in zip(got, ws[j], strict=True)]
        lb_v, lb_top = v + dirty, max(top, cap)
        if best is not None and (lb_v, lb_top) > best[:2]:
            return (lb_v, lb_top, total, n)
        limit = best[1] if best is not None and (lb_v, lb_top) == best[:2] else None
        usable = [j for j in range(len(pods)) if limit is None or pods[j].priority <= limit]
        extra = 0
        for d, r in enumerate(need):
            count = fewest((ws[j][d] for j in usable), r)
            if count is None:
                return (lb_v, lb_top + 1, total, n)  # only items above the cap could: loses
            extra = max(extra, count)
        cheapest = sorted(pods[j].priority + PRIORITY_OFFSET for j in usable)[:extra]
        return (lb_v, lb_top, total + sum(cheapest), n + extra)
