"""The engine, shaped like the Kubernetes scheduling framework.

One decision runs: filter (:meth:`Engine.filter`) -> score (each policy of the profile,
over all feasible nodes at once, weighted and summed) -> select host (the best score, ties
broken by a seeded node order fixed for the engine's life) -> select devices (the
profile's device policy) -> reserve. "Does not fit" is a returned status, not an exception.
The extender calls the same steps one by one: filter, score, decide on one node.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from kubenpu.engine import fit
from kubenpu.engine.device_choice import choose_whole
from kubenpu.engine.state import FULL, ClusterState
from kubenpu.model import Placement, Request

#: Scores are normalised to 0..MAX_SCORE, like the framework's MaxNodeScore.
MAX_SCORE = 100


class Code(enum.Enum):
    """Outcome of a decision, as in the scheduling framework."""

    SUCCESS = "Success"
    UNSCHEDULABLE = "Unschedulable"
    UNRESOLVABLE = "UnschedulableAndUnresolvable"


@dataclass
class Cycle:
    """Per-decision state: written once before scoring, read by every policy.

    ``data`` holds what a policy computes while scoring and needs again when choosing
    devices (e.g. the best device per candidate node), keyed by the policy's name.
    """

    state: ClusterState
    request: Request
    candidates: np.ndarray
    rng: np.random.Generator
    data: dict[str, Any] = field(default_factory=dict)


class Policy(ABC):
    """A placement policy: scores candidate nodes and chooses devices on the chosen one."""

    name: ClassVar[str]

    @abstractmethod
    def score(self, cycle: Cycle) -> np.ndarray:
        """Scores of ``cycle.candidates`` on 0..MAX_SCORE, higher is better."""

    def select_devices(self, cycle: Cycle, node: int) -> tuple[list[int], list[int]]:
        """Device slots and per-slot shares (milli) for the request on ``node``."""
        return select_devices_packed(cycle.state, cycle.request, node)


def select_devices_packed(
    state: ClusterState, req: Request, node: int
) -> tuple[list[int], list[int]]:
    """Default device choice.

    A share goes to the fitting device with the least free compute (fills partly used
    devices first, keeps whole ones free). Whole devices are taken from the fewest topology
    groups, preferring groups with the fewest free devices so large groups stay intact.
    """
    if not req.wants_devices:
        return [], []
    fits = fit.device_fit(state, req)[node]
    slots = np.flatnonzero(fits)
    if req.share_milli:
        free = state.dev_free[node, slots]
        best = int(slots[np.lexsort((slots, free))[0]])
        return [best], [req.share_milli]
    return select_whole_topology(state, node, slots, req.npus), [FULL] * req.npus


def select_whole_topology(
    state: ClusterState, node: int, free_slots: np.ndarray, k: int
) -> list[int]:
    """Pick ``k`` of ``free_slots``: one group if any group can hold all, else fewest groups.

    The rule is :func:`kubenpu.engine.device_choice.choose_whole`, which the device plugin
    uses too; slots are taken in ascending order within a group.
    """
    picks = choose_whole(state.dev_group[node, free_slots].tolist(), k)
    return [int(free_slots[i]) for i in picks]


@dataclass(frozen=True)
class Profile:
    """A named, weighted combination of policies; ``devices`` chooses devices."""

    name: str
    parts: tuple[tuple[Policy, int], ...]
    devices: Policy

    def score(self, cycle: Cycle) -> np.ndarray:
        """Weighted sum of every part's normalised scores over the candidates."""
        total = np.zeros(cycle.candidates.size, dtype=np.float64)
        for policy, weight in self.parts:
            total += weight * policy.score(cycle)
        return total


@dataclass
class Decision:
    """The engine's answer for one request."""

    code: Code
    placement: Placement | None = None
    reason: str = ""


@dataclass
class Scored:
    """Score's answer: the cycle, the profile's score of each candidate, and the pick."""

    cycle: Cycle
    scores: np.ndarray
    #: Node row of the engine's choice (best score, ties by the engine's rank); -1: none.
    pick: int


class Engine:
    """Decides and records placements on a ``ClusterState`` with one ``Profile``."""

    def __init__(self, state: ClusterState, profile: Profile, seed: int = 0):
        self.state = state
        self.profile = profile
        self.rng = np.random.default_rng(seed)
        #: Tie-break rank of each node: a seeded shuffle, fixed for the engine's life.
        self.rank = self.rng.permutation(state.num_nodes)

    def filter(self, req: Request, among: np.ndarray | None = None) -> np.ndarray:
        """Mask of the nodes (optionally only ``among`` these) that can take ``req`` now."""
        return fit.feasible(self.state, req, among)

    def reasons(self, req: Request) -> np.ndarray:
        """Per node, why it cannot take ``req``: a code into ``fit.REASONS`` (-1: it can)."""
        return fit.unfit_codes(self.state, req)

    def cycle(self, req: Request, among: np.ndarray | None = None) -> Cycle:
        """A cycle over the nodes (optionally only ``among``) that fit ``req``."""
        return Cycle(self.state, req, np.flatnonzero(self.filter(req, among)), self.rng)

    def score(self, req: Request, among: np.ndarray | None = None) -> Scored:
        """Filter and score: the profile's scores of the candidates, and the best one."""
        cyc = self.cycle(req, among)
        if cyc.candidates.size == 0:
            return Scored(cyc, np.zeros(0), -1)
        scores = self.profile.score(cyc)
        best = np.flatnonzero(scores == scores.max())
        pick = best[0] if best.size == 1 else best[np.argmin(self.rank[cyc.candidates[best]])]
        return Scored(cyc, scores, int(cyc.candidates[pick]))

    def decide(self, req: Request, among: np.ndarray | None = None) -> Decision:
        """Choose a node and devices for ``req`` without reserving them."""
        scored = self.score(req, among)
        if scored.pick < 0:
            return Decision(
                self._no_fit_code(req), reason=fit.explain_unfit(self.state, req, among)
            )
        return Decision(Code.SUCCESS, self.placement_on(scored.cycle, scored.pick))

    def decide_on(self, req: Request, node: int) -> Decision:
        """:meth:`decide` among one node (bind: the node kube-scheduler chose)."""
        only = np.zeros(self.state.num_nodes, dtype=bool)
        only[node] = True
        return self.decide(req, only)

    def placement_on(self, cyc: Cycle, node: int) -> Placement:
        """The profile's device choice for the cycle's request on ``node`` (a scored one)."""
        slots, shares = self.profile.devices.select_devices(cyc, node)
        return Placement(
            pod=cyc.request.name,
            node=self.state.nodes[node].name,
            device_ids=self.state.device_ids(node, slots),
            shares_milli=tuple(shares),
        )

    def place(self, req: Request) -> Decision:
        """Decide and reserve; the decision says why when nothing fits."""
        decision = self.decide(req)
        if decision.placement is not None:
            self.state.reserve(decision.placement, req)
        return decision

    def _no_fit_code(self, req: Request) -> Code:
        # No node could ever take it, even empty: waiting will not help.
        s = self.state
        ok = (s.cpu_cap >= req.cpu_milli) & (s.mem_cap >= req.memory_mib)
        if req.wants_devices:
            ok &= s.models_mask(req.models) & (s.num_devices >= max(req.npus, 1))
        return Code.UNSCHEDULABLE if ok.any() else Code.UNRESOLVABLE
