"""Invariants every policy keeps, on random clusters and random request streams."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubenpu.engine import policies
from kubenpu.engine.framework import Engine
from kubenpu.engine.state import ClusterState
from kubenpu.model import Device, Node, Request

MODELS = ["A", "B"]
ALL_POLICIES = (*policies.BASELINES, policies.DEFAULT)


@st.composite
def clusters(draw):
    nodes = []
    for i in range(draw(st.integers(1, 5))):
        n = draw(st.integers(0, 8))
        model = draw(st.sampled_from(MODELS))
        groups = draw(st.sampled_from([1, 2]))
        devices = tuple(
            Device(f"n{i}-{j}", j, model=model, memory_mib=16_384, group=j * groups // max(n, 1))
            for j in range(n)
        )
        cpu = draw(st.integers(0, 64)) * 1000
        mem = draw(st.integers(0, 64)) * 1024
        nodes.append(Node(f"n{i}", cpu, mem, devices))
    return nodes


@st.composite
def requests(draw):
    out = []
    for k in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["whole", "share", "cpu"]))
        cpu = draw(st.integers(0, 16)) * 1000
        mem = draw(st.integers(0, 16)) * 1024
        models = frozenset(draw(st.lists(st.sampled_from(MODELS), max_size=1)))
        if kind == "whole":
            out.append(Request(f"p{k}", cpu, mem, npus=draw(st.integers(1, 4)), models=models))
        elif kind == "share":
            mem_share = draw(st.sampled_from([0, 0, 4096, 8192]))
            out.append(
                Request(
                    f"p{k}",
                    cpu,
                    mem,
                    share_milli=draw(st.integers(1, 1000)),
                    share_memory_mib=mem_share,
                    models=models,
                )
            )
        else:
            out.append(Request(f"p{k}", cpu, mem))
    return out


def check_invariants(state: ClusterState) -> None:
    assert (state.cpu_free >= 0).all() and (state.mem_free >= 0).all()
    used = np.zeros_like(state.dev_used)
    mem_used = np.zeros_like(state.dev_mem_used)
    whole_holders = np.zeros_like(state.dev_used)
    share_holders = np.zeros_like(state.dev_used)
    cpu = np.zeros_like(state.cpu_free)
    for h in state.holdings.values():
        node = state.nodes[h.node]
        req = h.request
        cpu[h.node] += req.cpu_milli
        if req.models:
            assert node.model in req.models
        for j, share in zip(h.slots, h.placement.shares_milli, strict=True):
            assert state.dev_exists[h.node, j]
            used[h.node, j] += share
            if req.npus:
                whole_holders[h.node, j] += 1
                assert share == 1000
            else:
                share_holders[h.node, j] += 1
                mem_used[h.node, j] += req.share_memory_mib
    assert (used <= 1000).all(), "a device is over-committed"
    assert (mem_used <= state.dev_mem_cap).all(), "device memory over-committed"
    assert (whole_holders <= 1).all()
    assert not ((whole_holders > 0) & (share_holders > 0)).any(), "whole and shared mixed"
    assert np.array_equal(used, state.dev_used)
    assert np.array_equal(cpu, state.cpu_cap - state.cpu_free)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nodes=clusters(),
    reqs=requests(),
    spec=st.sampled_from(ALL_POLICIES),
    seed=st.integers(0, 9),
)
def test_no_policy_ever_over_commits(nodes, reqs, spec, seed):
    state = ClusterState(nodes)
    eng = Engine(state, policies.factory(spec)(state, reqs), seed=seed)
    for req in reqs:
        decision = eng.place(req)
        if decision.placement is None:
            assert decision.reason
        check_invariants(state)
    # Giving back every other pod keeps the books straight too.
    for name in list(state.holdings)[::2]:
        state.unreserve(name)
    check_invariants(state)


@settings(max_examples=15, deadline=None)
@given(
    nodes=clusters(),
    reqs=requests(),
    spec=st.sampled_from(ALL_POLICIES),
    seed=st.integers(0, 9),
)
def test_same_seed_same_placements(nodes, reqs, spec, seed):
    def run():
        state = ClusterState(nodes)
        eng = Engine(state, policies.factory(spec)(state, reqs), seed=seed)
        return [eng.place(r).placement for r in reqs]

    assert run() == run()


@settings(max_examples=30, deadline=None)
@given(nodes=clusters(), reqs=requests(), seed=st.integers(0, 9))
def test_a_pod_is_unplaced_only_when_no_node_fits(nodes, reqs, seed):
    from kubenpu.engine import fit

    state = ClusterState(nodes)
    eng = Engine(state, policies.factory("bestfit")(state, reqs), seed=seed)
    for req in reqs:
        possible = fit.feasible(state, req).any()
        assert (eng.place(req).placement is not None) == bool(possible)
