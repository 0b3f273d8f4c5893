"""Gangs in the extender: every member planned at the first member's filter, the plan held.

kube-scheduler (with GenericWorkload on, its GangScheduling plugin) schedules a PodGroup's
pods in one pod-group cycle and lets none bind until ``minCount`` of them are assumed. The
extender's part is that its own state never splits a gang. At a member's filter, if no plan
holds it, :meth:`GangBook.verdict` places every pending member at once with
``engine.gang.place_gang`` (on the live state, among the nodes kube-scheduler offered, with
the gang's topology) and keeps that plan:

- a planned member's filter passes only its planned node, prioritize rates that node 10,
  and bind takes the planned devices;
- every other decision (other pods' filter, prioritize and bind) runs inside
  :meth:`GangBook.held`, which sees the planned devices as taken;
- a gang that does not fit at once fails every node resolvably, saying why; kube-scheduler
  retries it when the cluster changes.

A plan lasts :data:`PLAN_TTL_S` after any member last used it (kube-scheduler gave up on the
cycle, or members went away); its devices are then free again. A member bound, deleted or
not offered its planned node leaves the plan (the last: the plan goes). No I/O here: the
PodGroup's policy is read by the caller (:class:`GangPolicies`). docs/preemption.md,
"Gangs", says more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubenpu.adapters.kube import pod_key, request_from_pod
from kubenpu.adapters.podgroup import GangPolicy, gang_policy, pod_group_of
from kubenpu.engine.framework import Engine
from kubenpu.engine.gang import place_gang
from kubenpu.engine.state import ClusterState
from kubenpu.errors import ObjectError, PlacementError
from kubenpu.model import Placement, Request

log = logging.getLogger(__name__)

#: Seconds a plan is held after a member last used it. kube-scheduler binds a gang
#: within its pod-group cycle's time; a minute outlives retries after a failed attempt.
PLAN_TTL_S = 60.0
#: Seconds a PodGroup's policy is reused before it is read again.
POLICY_TTL_S = 10.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the gang says of one member's filter.

    ``placement``: the member's planned node and devices. Otherwise ``why`` says why no
    node will do now; neither: decide as for any pod (a member beyond ``minCount``).
    """

    placement: Placement | None = None
    why: str = ""


@dataclass(slots=True)
class _Plan:
    placements: dict[str, Placement]
    requests: dict[str, Request]
    #: Members left out because ``minCount`` was met without them.
    waiting: frozenset[str]
    domain: str
    touched: float = field(default=0.0)


class GangBook:
    """Gang members seen by the pod informer, and the plans held; not thread-safe (the
    extender's lock)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        #: group -> pod key -> its request, for every member not finished.
        self._members: dict[str, dict[str, Request]] = {}
        self._group_of: dict[str, str] = {}
        self._plans: dict[str, _Plan] = {}

    # -- the informer's side -----------------------------------------------------------

    def upsert_pod(self, obj: Mapping[str, Any]) -> None:
        """Note a pod: a member joins its gang (a bound one leaves the plan, its devices
        are the cache's), a finished one leaves the gang."""
        group = pod_group_of(obj)
        if group is None:
            return
        try:
            key, request = pod_key(obj), request_from_pod(obj)
        except ObjectError:
            return  # the cache counts and logs it; filter answers it
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            self._leave(key)
            return
        self._members.setdefault(group, {})[key] = request
        self._group_of[key] = group
        if (obj.get("spec") or {}).get("nodeName"):
            self.bound(key)

    def delete_pod(self, key: str) -> None:
        """A pod is gone: it leaves its gang, and its gang's plan is made again."""
        group = self._leave(key)
        if group is not None:
            self._plans.pop(group, None)

    def replace(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Exactly these pods (after a fresh list); plans of gangs that lost members go."""
        old = dict(self._group_of)
        self._members.clear()
        self._group_of.clear()
        for obj in objs:
            self.upsert_pod(obj)
        for key, group in old.items():
            if key not in self._group_of:
                self._plans.pop(group, None)

    def _leave(self, key: str) -> str | None:
        group = self._group_of.pop(key, None)
        if group is not None:
            members = self._members.get(group, {})
            members.pop(key, None)
            if not members:
                self._members.pop(group, None)
        return group

    def bound(self, key: str) -> None:
        """``key`` is bound: its devices are the cache's now, no longer the plan's."""
        group = self._group_of.get(key, "")
        plan = self._plans.get(group)
        if plan is None or plan.placements.pop(key, None) is None:
            return
        if not plan.placements:
            del self._plans[group]

    # -- decisions (under the extender's lock) ----------------------------------------

    def planned(self, key: str) -> Placement | None:
        """The member's planned placement, if a plan holds it."""
        for plan in self._plans.values():
            if key in plan.placements:
                plan.touched = self._clock()
                return plan.placements[key]
        return None

    def verdict(
        self, engine: Engine, key: str, request: Request, policy: GangPolicy, among: np.ndarray
    ) -> Verdict:
        """The member's planned placement, made now for all pending members if no plan
        holds it; or why the gang cannot start now. ``among``: the nodes offered."""
        self._expire()
        group = policy.group
        plan = self._plans.get(group)
        if plan is not None:
            placement = plan.placements.get(key)
            if placement is not None:
                plan.touched = self._clock()
                row = engine.state.node_index.get(placement.node)
                if row is None or not among[row]:
                    del self._plans[group]  # made again, among the nodes offered then
                    return Verdict(
                        why=f"gang {group}: this member's planned node {placement.node} "
                        "was not offered; planning the gang again"
                    )
                return Verdict(placement)
            if key in plan.waiting:
                plan.touched = self._clock()
                return Verdict()
            del self._plans[group]  # a member the plan does not know: plan them all again
        members = {**self._members.get(group, {}), key: request}
        state = engine.state
        # Bound members hold their devices in the state already; place_gang counts them.
        pending = {k for k in members if k not in state.holdings}
        everyone = list(members.values())
        if len(everyone) < policy.min_count:
            return Verdict(
                why=f"gang {group}: {len(everyone)} of its {policy.min_count} members "
                "exist; waiting for the rest"
            )
        with self.held(state, except_group=group):
            try:
                made = place_gang(
                    engine,
                    everyone,
                    policy.min_count,
                    topology=policy.topology,
                    group_label=policy.group_label,
                    among=among,
                )
            except PlacementError as err:
                return Verdict(why=f"gang {group}: {err}")
        if made is None:
            return Verdict(why=f"gang {group}: {_need(everyone, policy)} do not fit at once")
        placements = {p.pod: p for p in made.placements if p.pod in pending}
        self._plans[group] = _Plan(
            placements,
            {k: members[k] for k in placements},
            frozenset(made.waiting),
            made.domain,
            self._clock(),
        )
        log.info(
            "gang %s planned in %s: %s",
            group,
            made.domain,
            ", ".join(f"{k} on {p.node}" for k, p in sorted(placements.items())),
        )
        return Verdict(placements.get(key))

    @contextmanager
    def held(
        self, state: ClusterState, except_key: str = "", except_group: str = ""
    ) -> Iterator[None]:
        """While inside, every plan's devices are taken in ``state`` (but ``except_key``'s
        own and ``except_group``'s); given back on exit."""
        self._expire()
        reserved: list[str] = []
        try:
            for group, plan in list(self._plans.items()):
                if group == except_group:
                    continue
                for key, placement in plan.placements.items():
                    if key == except_key or key in state.holdings:
                        continue
                    try:
                        state.reserve(placement, plan.requests[key])
                    except PlacementError as err:
                        # The cluster moved under the plan (a device failed, a pod bound
                        # by another scheduler): it is made again at the next filter.
                        log.info("gang %s: plan no longer fits (%s); dropped", group, err)
                        for k in plan.placements:
                            if k in reserved:
                                state.unreserve(k)
                                reserved.remove(k)
                        del self._plans[group]
                        break
                    reserved.append(key)
            yield
        finally:
            for key in reversed(reserved):
                state.unreserve(key)

    def _expire(self) -> None:
        if not self._plans:
            return
        now = self._clock()
        for group, plan in list(self._plans.items()):
            if now - plan.touched > PLAN_TTL_S:
                log.info("gang %s: plan unused for %.0f s; its devices are free", group, PLAN_TTL_S)
                del self._plans[group]


def _need(members: list[Request], policy: GangPolicy) -> str:
    """``4 members (min 4) needing 4 whole NPUs``: what the gang asks, for messages."""
    npus = sum(m.npus for m in members)
    shares = sum(1 for m in members if m.share_milli)
    asks = [f"{npus} whole NPUs"] if npus else []
    if shares:
        asks.append(f"{shares} NPU shares")
    what = " and ".join(asks) or "CPU and memory"
    return f"{len(members)} members (min {policy.min_count}) needing {what}"


class GangPolicies:
    """PodGroup policies read through ``fetch(namespace, name)`` (the PodGroup's JSON),
    each kept :data:`POLICY_TTL_S`; thread-safe. ``get`` raises ``ApiError`` (the read
    failed) or ``ObjectError`` (a malformed PodGroup)."""

    def __init__(
        self,
        fetch: Callable[[str, str], Mapping[str, Any]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._known: dict[str, tuple[float, GangPolicy | None]] = {}
        self._lock = threading.Lock()

    def get(self, group: str) -> GangPolicy | None:
        """The gang policy of ``namespace/name``; None for a non-gang (basic) group."""
        now = self._clock()
        with self._lock:
            known = self._known.get(group)
        if known is not None and now - known[0] < POLICY_TTL_S:
            return known[1]
        ns, _, name = group.partition("/")
        policy = gang_policy(self._fetch(ns, name))
        with self._lock:
            self._known[group] = (now, policy)
        return policy
