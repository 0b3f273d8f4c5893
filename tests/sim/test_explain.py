"""--explain: every unallocated milli is charged to exactly one cause."""

from hypothesis import given, settings
from hypothesis import strategies as st

from kubenpu.engine import policies
from kubenpu.engine.framework import Engine
from kubenpu.engine.state import FULL, ClusterState
from kubenpu.model import Device, Node, Placement, Request
from kubenpu.sim.experiment import replay
from kubenpu.sim.explain import CAUSES, explain
from kubenpu.traces import synthetic


def node(name, npus, cpu=16_000, mem=65_536, model="A"):
    return Node(name, cpu, mem, tuple(Device(f"{name}-{i}", i, model=model) for i in range(npus)))


def test_causes_on_a_hand_made_cluster():
    st_ = ClusterState(
        [node("cpu-poor", 2, cpu=2000), node("frag", 2), node("b", 1, model="B"), node("sick", 1)]
    )
    st_.reserve(
        Placement("x", "frag", ("frag-0", "frag-1"), (1000, 1000)), Request("x", 1000, npus=2)
    )
    st_.unreserve("x")
    st_.reserve(Placement("y", "frag", ("frag-0",), (700,)), Request("y", 1000, share_milli=700))
    st_.reserve(Placement("z", "frag", ("frag-1",), (1000,)), Request("z", 1000, npus=1))
    st_.set_device_health("sick", "sick-0", False)
    turned_away = [Request("t", 4000, npus=1, models=frozenset({"A"}))]
    got = explain(st_, turned_away)
    assert got == {
        "unhealthy": 1000,  # sick-0
        "no demand": 0,
        "model": 1000,  # node b is model B, the pod wants A
        "cpu": 2000,  # cpu-poor has 2000m free, the pod asks 4000m
        "memory": 0,
        "fractional": 300,  # frag-0 has 300 left, the pod wants a whole NPU
        "whole devices": 0,
    }
    assert sum(got.values()) == 4300 == st_.num_devices.sum() * FULL - st_.allocated_milli()


def test_nothing_turned_away_means_no_demand():
    st_ = ClusterState([node("a", 2)])
    assert explain(st_, [])["no demand"] == 2000


@settings(max_examples=10, deadline=None)
@given(
    spec=st.sampled_from(policies.BASELINES), seed=st.integers(0, 50), n_pods=st.integers(50, 600)
)
def test_causes_add_up_to_the_unallocated_total(spec, seed, n_pods):
    state = ClusterState(synthetic.cluster(24))
    pods = synthetic.workload(n_pods, seed=seed)
    eng = Engine(state, policies.factory(spec)(state, pods), seed=seed)
    turned_away = [p for p in pods if eng.place(p).placement is None]
    got = explain(state, turned_away)
    assert set(got) == set(CAUSES)
    assert sum(got.values()) == state.total_devices * FULL - state.allocated_milli()


def test_replay_reports_causes_in_percent():
    r = replay(
        synthetic.cluster(16),
        synthetic.workload(400),
        policies.factory("fgd"),
        seed=3,
        tune=1.3,
        explain=True,
    )
    assert abs(sum(r.explain_pct().values()) - (100 - r.final_allocation_pct)) < 1e-3
    assert r.as_json()["explain_pct"] == r.explain_pct()
