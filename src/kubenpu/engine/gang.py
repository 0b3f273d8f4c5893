"""Gangs: can the members of one job be placed at once, all or nothing.

A gang is ``members`` (the pods of a job, as requests) of which at least ``min_count`` must
be placed together (the Workload API's gang policy). ``place_gang`` answers with the
engine's own decisions: it places the members one after the other, largest first, on the
engine's ``ClusterState`` with ``reserve`` (so each member sees the capacity the ones before
it took), then gives all of it back with ``unreserve``, unless asked to keep it. No copy of
the state is made; the state is the same afterwards (its ``version`` counters move on, so
caches keyed on them recompute, which changes no decision).

With a ``topology`` preference the members are first tried within one domain: one node, then
one node group (nodes sharing the value of ``group_label``), then, for ``"prefer"`` only, the
whole cluster. Within a kind of domain, domains are tried best fit first (least free NPU
compute, then name), and the first that takes the gang wins.

"No" means the engine's member-by-member placement does not fit the gang, not that no
packing exists (that is bin packing); it is the answer the extender needs, since the extender
will place the members with that same engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kubenpu.engine.framework import Engine
from kubenpu.engine.state import ClusterState
from kubenpu.errors import PlacementError
from kubenpu.model import Placement, Request

#: ``"none"``: anywhere; ``"prefer"``: one domain if any takes the gang, else anywhere;
#: ``"require"``: one domain or not at all.
Topology = Literal["none", "prefer", "require"]


@dataclass(frozen=True, slots=True)
class GangPlan:
    """Where the gang's members go.

    ``placements`` are the members placed now (members that already held a placement keep
    theirs and are listed too); ``waiting`` the members left out (only when ``min_count`` is
    below the gang's size); ``domain`` is ``node/<name>``, ``group/<value>`` or ``cluster``.
    """

    placements: tuple[Placement, ...]
    waiting: tuple[str, ...]
    domain: str


def place_gang(
    engine: Engine,
    members: Sequence[Request],
    min_count: int | None = None,
    *,
    topology: Topology = "none",
    group_label: str | None = None,
    keep: bool = False,
    among: np.ndarray | None = None,
) -> GangPlan | None:
    """Whether at least ``min_count`` (default: all) of ``members`` fit at once, and where.

    Members already holding a placement in the state count as placed where they are. With
    ``keep`` the placements of a successful plan stay reserved; otherwise (and always on
    failure) the state is left as it was. ``among`` (a node mask) limits where members go.
    None: the gang does not fit now.
    """
    state = engine.state
    need = len(members) if min_count is None else min_count
    if need < 0 or need > len(members):
        raise PlacementError(f"gang of {len(members)} members cannot need {need} of them")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise PlacementError(f"gang members must have distinct names: {names}")
    held = tuple(state.holdings[m.name].placement for m in members if m.name in state.holdings)
    todo = [m for m in members if m.name not in state.holdings]
    # Largest first: whole NPUs by count, then shares by size, then CPU; names keep it stable.
    todo.sort(key=lambda r: (-r.npus, -r.share_milli, -r.cpu_milli, -r.memory_mib, r.name))

    for domain, mask in _domains(state, todo, topology, group_label):
        if among is not None:
            mask = among if mask is None else mask & among
        placed = _try(engine, todo, need - len(held), mask, keep)
        if placed is not None:
            done = {p.pod for p in held + placed}
            waiting = tuple(sorted(r.name for r in members if r.name not in done))
            return GangPlan(held + placed, waiting, domain)
    return None


def _try(
    engine: Engine, todo: Sequence[Request], need: int, among: np.ndarray | None, keep: bool
) -> tuple[Placement, ...] | None:
    """Place ``todo`` one by one (only ``among`` these nodes); give everything back unless
    at least ``need`` were placed and ``keep`` is set."""
    state = engine.state
    placed: list[Placement] = []
    ok = False
    try:
        for i, req in enumerate(todo):
            if len(placed) + (len(todo) - i) < need:
                break  # the rest cannot make up the count
            decision = engine.decide(req, among)
            if decision.placement is not None:
                state.reserve(decision.placement, req)
                placed.append(decision.placement)
        ok = len(placed) >= need
        return tuple(placed) if ok else None
    finally:
        if not (ok and keep):
            for p in reversed(placed):
                state.unreserve(p.pod)


def _domains(
    state: ClusterState, todo: Sequence[Request], topology: Topology, group_label: str | None
) -> list[tuple[str, np.ndarray | None]]:
    """The domains to try, in order, as node masks (None: the whole cluster)."""
    if topology == "none" or not todo:
        return [("cluster", None)]
    out: list[tuple[str, np.ndarray | None]] = []
    # Per node, could the node alone hold the whole rest of the gang (necessary conditions)?
    fits = _could_hold(state, todo, np.arange(state.num_nodes)[:, None])
    for i in _best_fit(state, np.flatnonzero(fits)):
        mask = np.zeros(state.num_nodes, dtype=bool)
        mask[i] = True
        out.append((f"node/{state.nodes[i].name}", mask))
    if group_label:
        values = sorted({n.labels[group_label] for n in state.nodes if group_label in n.labels})
        groups = []
        for value in values:
            rows = np.array(
                [i for i, n in enumerate(state.nodes) if n.labels.get(group_label) == value]
            )
            if _could_hold(state, todo, rows[None, :])[0]:
                groups.append((int(state.free_total[rows].sum()), value, rows))
        for _, value, rows in sorted(groups, key=lambda g: (g[0], g[1])):
            mask = np.zeros(state.num_nodes, dtype=bool)
            mask[rows] = True
            out.append((f"group/{value}", mask))
    if topology == "prefer":
        out.append(("cluster", None))
    return out


def _could_hold(state: ClusterState, todo: Sequence[Request], rows: np.ndarray) -> np.ndarray:
    """Per row of ``rows`` (each a set of node indices): whether the free capacity summed
    over those nodes is at least the gang's total, per kind; a cheap necessary condition."""
    cpu = sum(r.cpu_milli for r in todo)
    mem = sum(r.memory_mib for r in todo)
    npus = sum(r.npus for r in todo)
    milli = sum(r.device_milli for r in todo)
    ok: np.ndarray = (
        (state.cpu_free[rows].sum(axis=1) >= cpu)
        & (state.mem_free[rows].sum(axis=1) >= mem)
        & (state.full_free[rows].sum(axis=1) >= npus)
        & (state.free_total[rows].sum(axis=1) >= milli)
    )
    for models in {r.models for r in todo if r.wants_devices and r.models}:
        ok &= state.models_mask(models)[rows].any(axis=1)
    return ok


def _best_fit(state: ClusterState, nodes: np.ndarray) -> list[int]:
    """``nodes`` with the least free NPU compute first, then by name."""
    return sorted(
        (int(i) for i in nodes), key=lambda i: (int(state.free_total[i]), state.nodes[i].name)
    )
