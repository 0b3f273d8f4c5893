"""Gangs: all members placed at once, or none; the state is left as it was."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubenpu.engine.gang import place_gang
from kubenpu.errors import PlacementError
from kubenpu.model import Node, Placement

from .helpers import engine, node, share, whole
from .test_properties import check_invariants, clusters, requests


def snapshot(state):
    return (
        state.cpu_free.copy(),
        state.mem_free.copy(),
        state.dev_free.copy(),
        state.dev_mem_free.copy(),
        state.full_free.copy(),
        dict(state.holdings),
    )


def same(a, b):
    return all(
        (np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y)
        for x, y in zip(a, b, strict=True)
    )


def gang(n, size=1, prefix="g"):
    return [whole(f"{prefix}{i}", size) for i in range(n)]


def test_four_one_npu_pods_on_three_free_npus_bind_none_then_all():
    # Issue 16's acceptance: nodes a and b of 2 NPUs; one NPU of b is taken: 3 free.
    eng = engine([node("a", 2), node("b", 2)], "bestfit")
    eng.state.reserve(Placement("busy", "b", ("b-0",), (1000,)), whole("busy"))
    before = snapshot(eng.state)
    assert place_gang(eng, gang(4)) is None
    assert same(before, snapshot(eng.state)), "a failed gang leaves nothing reserved"
    # The fourth frees: all four fit, and without keep nothing stays reserved.
    eng.state.unreserve("busy")
    before = snapshot(eng.state)
    plan = place_gang(eng, gang(4))
    assert plan is not None and len(plan.placements) == 4 and plan.waiting == ()
    assert same(before, snapshot(eng.state))
    # With keep the placements stay, one device each, no device twice.
    plan = place_gang(eng, gang(4), keep=True)
    assert plan is not None
    devices = [d for p in plan.placements for d in p.device_ids]
    assert sorted(devices) == ["a-0", "a-1", "b-0", "b-1"]
    assert set(eng.state.holdings) == {"g0", "g1", "g2", "g3"}
    check_invariants(eng.state)


def test_min_count_places_what_fits_and_lists_the_rest():
    # 3 free NPUs, a gang of 4 that needs only 3.
    eng = engine([node("a", 3)], "bestfit")
    plan = place_gang(eng, gang(4), min_count=3)
    assert plan is not None and len(plan.placements) == 3 and plan.waiting == ("g3",)
    assert place_gang(eng, gang(5), min_count=4) is None


def test_members_already_placed_count_where_they_are():
    # g0 already runs on a; g1..g3 need 3 more NPUs: b has 2, a has 1 left.
    eng = engine([node("a", 2), node("b", 2)], "bestfit")
    eng.state.reserve(Placement("g0", "a", ("a-0",), (1000,)), whole("g0"))
    plan = place_gang(eng, gang(4))
    assert plan is not None and plan.placements[0].pod == "g0"
    assert {p.pod for p in plan.placements} == {"g0", "g1", "g2", "g3"}
    assert place_gang(eng, gang(5)) is None


def test_topology_prefers_one_node_then_one_group():
    labels = {"a": "x", "b": "x", "c": "y", "d": "y"}
    nodes = [
        Node(n.name, n.cpu_milli, n.memory_mib, n.devices, {"rack": labels[n.name]})
        for n in (node("a", 2), node("b", 2), node("c", 4), node("d", 1))
    ]
    eng = engine(nodes, "bestfit")
    # 4 one-NPU pods: only c holds them all on one node.
    plan = place_gang(eng, gang(4), topology="prefer", group_label="rack")
    assert plan is not None and plan.domain == "node/c"
    assert {p.node for p in plan.placements} == {"c"}
    # 5: no node can; rack x (a, b) has 2+2 = 4 free: too few; rack y (c, d) has 4+1 = 5.
    plan = place_gang(eng, gang(5), topology="prefer", group_label="rack")
    assert plan is not None and plan.domain == "group/y"
    assert {p.node for p in plan.placements} <= {"c", "d"}
    # 6: no rack can; "prefer" spreads over the cluster, "require" waits.
    plan = place_gang(eng, gang(6), topology="prefer", group_label="rack")
    assert plan is not None and plan.domain == "cluster"
    assert place_gang(eng, gang(6), topology="require", group_label="rack") is None


def test_topology_picks_the_tightest_node_that_fits():
    # Two 2-NPU pods (4 NPUs): nodes with 8, 4 and 2 free; small is too small, mid is the
    # tightest that holds both (best fit keeps big free for bigger gangs).
    eng = engine([node("big", 8), node("mid", 4), node("small", 2)], "bestfit")
    plan = place_gang(eng, gang(2, size=2), topology="require")
    assert plan is not None and plan.domain == "node/mid"


def test_shares_and_whole_together():
    # A 2-NPU pod and two 60% shares on one 3-NPU node: the whole pod goes first (largest
    # first), the shares on the third device cannot both fit (120%) -> not on one node.
    eng = engine([node("a", 3), node("b", 1)], "bestfit")
    members = [share("s1", 600), share("s2", 600), whole("w", 2)]
    assert place_gang(eng, members, topology="require") is None
    plan = place_gang(eng, members, topology="prefer")
    assert plan is not None and plan.domain == "cluster"
    assert {p.pod for p in plan.placements} == {"s1", "s2", "w"}


def test_bad_gangs_are_refused():
    eng = engine([node("a", 1)], "bestfit")
    with pytest.raises(PlacementError, match="cannot need 3"):
        place_gang(eng, gang(2), min_count=3)
    with pytest.raises(PlacementError, match="distinct names"):
        place_gang(eng, [whole("x"), whole("x")])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nodes=clusters(),
    reqs=requests(),
    topology=st.sampled_from(["none", "prefer", "require"]),
    size=st.integers(1, 6),
)
def test_gangs_are_all_or_nothing_and_never_over_commit(nodes, reqs, topology, size):
    eng = engine(nodes, "bestfit", pods=reqs)
    # Some pods run first; the last ``size`` requests are the gang.
    for req in reqs[:-size]:
        eng.place(req)
    members = reqs[-size:]
    before = snapshot(eng.state)
    plan = place_gang(eng, members, topology=topology)
    assert same(before, snapshot(eng.state)), "the state is left as it was"
    if plan is None:
        return
    assert {p.pod for p in plan.placements} == {r.name for r in members}
    if topology == "require":
        assert plan.domain != "cluster"
    if plan.domain.startswith("node/"):
        assert {p.node for p in plan.placements} == {plan.domain.removeprefix("node/")}
    # Reserving the plan's placements on the state succeeds and keeps the books straight.
    by_name = {r.name: r for r in members}
    for p in plan.placements:
        eng.state.reserve(p, by_name[p.pod])
    check_invariants(eng.state)
