"""The allocation bound: hand-computed cases, and never below what a policy reaches."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kubenpu.cli.main import build_app
from kubenpu.engine import policies
from kubenpu.engine.framework import Engine
from kubenpu.engine.state import FULL, ClusterState
from kubenpu.errors import PlacementError
from kubenpu.model import Device, Node, Placement, Request
from kubenpu.sim.bound import allocation_bound
from kubenpu.sim.experiment import arrival_order, replay


def node(name: str, npus: int, cpu: int = 8000, mem: int = 64 * 1024, dev_mem: int = 0) -> Node:
    devices = tuple(
        Device(id=f"{name}-d{i}", index=i, model="m", memory_mib=dev_mem) for i in range(npus)
    )
    return Node(name, cpu, mem, devices)


def whole(i: int, n: int = 1, cpu: int = 1000) -> Request:
    return Request(f"w{i}", cpu_milli=cpu, npus=n)


def share(i: int, milli: int, mem: int = 0, cpu: int = 1000) -> Request:
    return Request(f"s{i}", cpu_milli=cpu, share_milli=milli, share_memory_mib=mem)


@pytest.mark.parametrize(
    ("nodes", "pods", "milli"),
    [
        # Two devices, CPU for both: both whole pods fit. 2 x 1000 milli.
        ([node("a", 2, cpu=4000)], [whole(i, cpu=2000) for i in range(3)], 2000),
        # 3000 milli CPU holds one 2000 milli pod only: 1000 of 2000 milli.
        ([node("a", 2, cpu=3000)], [whole(i, cpu=2000) for i in range(3)], 1000),
        # Shares over 500 need a device each: two of three 600 shares, 1200 milli.
        ([node("a", 2)], [share(i, 600) for i in range(3)], 1200),
        # A 2-NPU pod cannot go to a node of one NPU, even with two such nodes.
        ([node("a", 1), node("b", 1)], [whole(0, n=2)], 0),
        # Whole devices take their memory: one whole (16 GiB) leaves 16 GiB for 8 GiB
        # shares of 300 milli: two of them, 1000 + 600 milli.
        (
            [node("a", 2, dev_mem=16384)],
            [whole(0)] + [share(i, 300, mem=8192) for i in range(4)],
            1600,
        ),
        # CPU-only pods are left out (they never add allocation).
        ([node("a", 1)], [Request("c", cpu_milli=8000), whole(0)], 1000),
    ],
)
def test_hand_computed(nodes: list[Node], pods: list[Request], milli: int) -> None:
    bound = allocation_bound(nodes, pods)
    assert bound.milli == milli
    assert bound.method == "milp"
    capacity = sum(len(n.devices) for n in nodes) * FULL
    assert bound.pct == pytest.approx(100 * milli / capacity)


pods_strategy = st.lists(
    st.one_of(
        st.builds(whole, st.integers(0, 10**6), st.integers(1, 4), st.integers(0, 6000)),
        st.builds(
            share,
            st.integers(0, 10**6),
            st.integers(1, 1000),
            st.sampled_from([0, 4096, 12288]),
            st.integers(0, 6000),
        ),
    ),
    min_size=1,
    max_size=30,
)
nodes_strategy = st.lists(
    st.builds(
        node,
        st.just("n"),
        st.integers(1, 4),
        st.integers(2000, 16000),
        st.just(64 * 1024),
        st.sampled_from([0, 16384]),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes_strategy, pods_strategy, st.integers(0, 100))
def test_no_policy_beats_the_bound(nodes: list[Node], pods: list[Request], seed: int) -> None:
    nodes = [Node(f"n{i}", n.cpu_milli, n.memory_mib, n.devices) for i, n in enumerate(nodes)]
    pods = [
        Request(f"p{i}", p.cpu_milli, 0, p.npus, p.share_milli, p.share_memory_mib)
        for i, p in enumerate(pods)
    ]
    capacity = sum(len(n.devices) for n in nodes) * FULL
    bound = allocation_bound(nodes, arrival_order(pods, capacity, 1.3, seed))
    assert 0 <= bound.pct <= 100
    for spec in ("bestfit", "fgd", policies.DEFAULT):
        run = replay(nodes, pods, policies.factory(spec), seed=seed, tune=1.3)
        assert run.final_allocation_pct <= bound.pct + 1e-9, spec


def test_cli_reports_the_bound_per_seed() -> None:
    result = CliRunner().invoke(
        build_app("simulate"),
        ["simulate", "--bound", "--policy", "bestfit", "--seeds", "1-2", "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [b["seed"] for b in report["bounds"]] == [1, 2]
    for run, b in zip(report["runs"], report["bounds"], strict=True):
        assert run["final_allocation_pct"] <= b["bound_pct"] <= 100


def brute_force_optimum(nodes: list[Node], pods: list[Request]) -> int:
    """The most device compute of ``pods`` that fits, by trying every placement of each
    pod (or none); devices of one node are alike here, so a whole pod takes the first free."""
    state = ClusterState(nodes)
    best = 0

    def options(req: Request) -> list[Placement]:
        out = []
        for i, n in enumerate(nodes):
            if req.npus:
                free = [j for j in range(len(n.devices)) if state.dev_free[i, j] == FULL]
                if len(free) >= req.npus:
                    ids = tuple(n.devices[j].id for j in free[: req.npus])
                    out.append(Placement(req.name, n.name, ids, (FULL,) * req.npus))
            else:
                out += [Placement(req.name, n.name, (d.id,), (req.share_milli,)) for d in n.devices]
        return out

    def search(k: int, held: int) -> None:
        nonlocal best
        left = sum(p.device_milli for p in pods[k:])
        if held + left <= best:
            return
        if k == len(pods):
            best = held
            return
        req = pods[k]
        for placement in options(req):
            try:
                state.reserve(placement, req)
            except PlacementError:
                continue
            search(k + 1, held + req.device_milli)
            state.unreserve(req.name)
        search(k + 1, held)

    search(0, 0)
    return best


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.builds(node, st.just("n"), st.integers(1, 3), st.integers(2000, 8000)),
        min_size=1,
        max_size=2,
    ),
    st.lists(
        st.one_of(
            st.builds(whole, st.just(0), st.integers(1, 2), st.integers(0, 4000)),
            st.builds(
                share,
                st.just(0),
                st.sampled_from([200, 300, 500, 600, 700]),
                st.just(0),
                st.integers(0, 4000),
            ),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_bound_is_at_least_the_brute_forced_optimum(nodes: list[Node], pods: list[Request]) -> None:
    nodes = [Node(f"n{i}", n.cpu_milli, n.memory_mib, n.devices) for i, n in enumerate(nodes)]
    pods = [Request(f"p{i}", p.cpu_milli, 0, p.npus, p.share_milli) for i, p in enumerate(pods)]
    optimum = brute_force_optimum(nodes, pods)
    assert allocation_bound(nodes, pods).milli >= optimum
    for spec in ("bestfit", "fgd", policies.DEFAULT):
        # The same pods, once each, in order: what a policy holds never beats the optimum.
        state = ClusterState(nodes)
        engine = Engine(state, policies.factory(spec)(state, pods))
        for req in pods:
            engine.place(req)
        assert state.allocated_milli() <= optimum, spec
