"""The model of kube-scheduler's own choice on DRA nodes (``dra-allocator``), by hand.

Node scores follow NodeResourcesFit's LeastAllocated and NodeResourcesBalancedAllocation
(cpu and memory, weight 1 each, integer arithmetic as in the Go code); devices follow the
structured allocator's first solution (the lowest-index usable devices in slice order).
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubenpu.engine import fit, policies
from kubenpu.engine.dra_allocator import (
    allocator_devices,
    balanced_allocation_score,
    default_node_scores,
    least_allocated_score,
)
from kubenpu.engine.framework import Engine
from kubenpu.engine.state import ClusterState
from kubenpu.model import Placement

from .helpers import cpu_only, engine, node, scores, share, whole
from .test_properties import check_invariants, clusters, requests


def _a(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_least_allocated_table():
    # cap (cpu 64000, mem 262144), nothing used, pod (1000, 1024):
    #   cpu (64000-1000)*100//64000 = 6300000//64000 = 98; mem 26112000//262144 = 99
    #   -> (98 + 99) // 2 = 98
    # cap (32000, 262144), used (24000, 0), pod (8000, 8192):
    #   cpu (32000-32000)*100//32000 = 0; mem 25395200//262144 = 96 -> 96 // 2 = 48
    # cap (32000, 262144), used (30000, 0), pod (8000, 8192): cpu over -> 0; (0+96)//2 = 48
    # cap (0, 1024) (no cpu), pod (0, 512): only memory counts: 512*100//1024 = 50
    cases = [
        ((64_000, 0, 262_144, 0, 1000, 1024), 98),
        ((32_000, 24_000, 262_144, 0, 8000, 8192), 48),
        ((32_000, 30_000, 262_144, 0, 8000, 8192), 48),
        ((0, 0, 1024, 0, 0, 512), 50),
    ]
    for (cc, cu, mc, mu, cpu, mem), want in cases:
        got = least_allocated_score(_a(cc), _a(cu), _a(mc), _a(mu), cpu, mem)
        assert got.tolist() == [want], (cc, cu, mc, mu, cpu, mem)


def test_balanced_allocation_table():
    # Empty (64000, 262144), pod (1000, 1024): fractions .015625 and .00390625,
    #   std .005859375 -> trunc(99.414) = 99 with the pod, 100 without
    #   -> 50 + (50 + 99 - 100) // 2 = 50 + 24 = 74
    # Used (32000, 0) of (64000, 262144), pod (0, 131072): fractions (.5, 0) -> std .25 ->
    #   75 without; (.5, .5) -> 100 with: 50 + (50 + 100 - 75) // 2 = 50 + 37 = 87
    # A pod asking for nothing is skipped: 0.
    cases = [
        ((64_000, 0, 262_144, 0, 1000, 1024), 74),
        ((64_000, 32_000, 262_144, 0, 0, 131_072), 87),
        ((64_000, 32_000, 262_144, 0, 0, 0), 0),
    ]
    for (cc, cu, mc, mu, cpu, mem), want in cases:
        got = balanced_allocation_score(_a(cc), _a(cu), _a(mc), _a(mu), cpu, mem)
        assert got.tolist() == [want], (cc, cu, mc, mu, cpu, mem)


def test_default_scoring_spreads_where_bestfit_packs():
    # Pod (8000 cpu, 8192 mem) on two empty nodes, a (64000, 262144) and b (32000, 262144):
    #   a: least (87 + 96) // 2 = 91; balanced: .125 vs .03125 -> std .046875 -> 95;
    #      50 + (50 + 95 - 100) // 2 = 72; total 163
    #   b: least (75 + 96) // 2 = 85; balanced: .25 vs .03125 -> std .109375 -> 89;
    #      50 + (50 + 89 - 100) // 2 = 69; total 154
    # The engine's score is half the total, plus a tie-break below 0.25.
    nodes = [node("a", 4), node("b", 4, cpu=32_000)]
    pod = whole("p", cpu=8000, mem=8192)
    state = ClusterState(nodes)
    assert default_node_scores(state, pod, np.array([0, 1])).tolist() == [163, 154]
    eng = engine(nodes, "dra-allocator")
    got = scores(eng, pod)
    assert {k: int(v * 2) for k, v in got.items()} == {0: 163, 1: 154}
    assert eng.place(pod).placement.node == "a"
    # Best fit takes the tighter node.
    assert engine(nodes, "bestfit").place(pod).placement.node == "b"


def test_ties_are_broken_at_random_each_decision():
    # Two identical empty nodes: kube-scheduler's selectHost picks either, afresh each time
    # (the engine's own tie-break, a fixed node order, would pick the same one every time).
    eng = engine([node("a", 2), node("b", 2)], "dra-allocator", seed=3)
    picked = {eng.decide(cpu_only(f"c{i}")).placement.node for i in range(40)}
    assert picked == {"a", "b"}


def test_a_share_takes_the_first_device_with_room_not_the_tightest():
    # Free compute a-0 200, a-1 700, a-2 500, a-3 1000; a 400 share:
    # the allocator walks the slice in order: a-0 too small, a-1 fits -> a-1.
    # The engine's default (tightest fitting device) would take a-2.
    held = [
        (Placement("s0", "a", ("a-0",), (800,)), share("s0", 800)),
        (Placement("s1", "a", ("a-1",), (300,)), share("s1", 300)),
        (Placement("s2", "a", ("a-2",), (500,)), share("s2", 500)),
    ]
    eng = engine([node("a", 4)], "dra-allocator", holdings=held)
    assert eng.place(share("p", 400)).placement.device_ids == ("a-1",)
    packed = engine([node("a", 4)], "bestfit", holdings=held)
    assert packed.place(share("p", 400)).placement.device_ids == ("a-2",)


def test_whole_devices_are_the_first_free_ones_whatever_their_group():
    # Groups: a-0, a-1 in group 0; a-2, a-3 in group 1. a-1 is held; 2 NPUs asked.
    # The allocator: the first two free devices in order, a-0 and a-2 (two groups).
    # The engine's topology-aware default: group 1 holds both, a-2 and a-3.
    held = [(Placement("w", "a", ("a-1",), (1000,)), whole("w"))]
    eng = engine([node("a", 4, groups=2)], "dra-allocator", holdings=held)
    assert eng.place(whole("p", 2)).placement.device_ids == ("a-0", "a-2")
    topo = engine([node("a", 4, groups=2)], "bestfit", holdings=held)
    assert topo.place(whole("p", 2)).placement.device_ids == ("a-2", "a-3")


def test_unhealthy_and_shared_devices_are_skipped_for_whole_npus():
    # a-0 unhealthy (the DeviceClass selects healthy == true), a-1 holds a share (its
    # capacity is partly consumed): a whole NPU consumes a device's whole capacity -> a-2.
    held = [(Placement("s", "a", ("a-1",), (100,)), share("s", 100))]
    eng = engine([node("a", 4)], "dra-allocator", holdings=held)
    eng.state.set_device_health("a", "a-0", False)
    assert eng.place(whole("p")).placement.device_ids == ("a-2",)


def test_dra_devices_keeps_kubenpus_node_choice_with_the_allocators_devices():
    # dra-devices scores 0 everywhere, so the profile's scores are kubenpu's alone; the
    # devices are the allocator's: free a-0 200, a-1 700, a-2 500 -> a 400 share on a-1.
    held = [
        (Placement("s0", "a", ("a-0",), (800,)), share("s0", 800)),
        (Placement("s1", "a", ("a-1",), (300,)), share("s1", 300)),
        (Placement("s2", "a", ("a-2",), (500,)), share("s2", 500)),
    ]
    pods = [share("m1", 400), share("m2", 500), whole("m3")]
    nodes = [node("a", 4), node("b", 4)]
    hybrid = engine(nodes, "dra-devices+kubenpu", pods=pods, holdings=held)
    alone = engine(nodes, "kubenpu", pods=pods, holdings=held)
    req = share("p", 400)
    assert scores(hybrid, req) == scores(alone, req)
    placed = hybrid.place(req).placement
    want = allocator_devices(alone.state, req, alone.state.node_index[placed.node])[0]
    assert placed.device_ids == alone.state.device_ids(alone.state.node_index[placed.node], want)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nodes=clusters(),
    reqs=requests(),
    spec=st.sampled_from(["dra-allocator", "dra-devices+kubenpu"]),
    seed=st.integers(0, 9),
)
def test_the_model_never_over_commits_and_always_takes_the_first_usable_devices(
    nodes, reqs, spec, seed
):
    state = ClusterState(nodes)
    eng = Engine(state, policies.factory(spec)(state, reqs), seed=seed)
    for req in reqs:
        possible = bool(fit.feasible(state, req).any())
        decision = eng.decide(req)
        assert (decision.placement is not None) == possible
        if decision.placement is not None:
            i = state.node_index[decision.placement.node]
            usable = np.flatnonzero(fit.device_fit(state, req)[i]).tolist()
            slots = [state.device_slot[(i, d)] for d in decision.placement.device_ids]
            if req.wants_devices:
                assert slots == usable[: max(req.npus, 1)]
            state.reserve(decision.placement, req)
        check_invariants(state)
    for name in list(state.holdings)[::2]:
        state.unreserve(name)
    check_invariants(state)
