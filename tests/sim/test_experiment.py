"""The openb experiment: inflation, the allocation curve, and a replay of a trace slice."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openb_trace import OPENB, require_openb

from kubenpu.engine import policies
from kubenpu.errors import InputError
from kubenpu.model import Device, Node, Request
from kubenpu.sim.experiment import inflate, replay
from kubenpu.traces import openb

requests = st.builds(
    lambda i, kind, n, share, cpu: Request(
        name=f"p{i}",
        cpu_milli=cpu,
        npus=n if kind == "whole" else 0,
        share_milli=share if kind == "share" else 0,
    ),
    st.integers(0, 10**6),
    st.sampled_from(["whole", "share", "cpu"]),
    st.integers(1, 8),
    st.integers(1, 1000),
    st.integers(0, 8000),
)
workloads = st.lists(requests, min_size=1, max_size=12, unique_by=lambda r: r.name)


def node(name: str, npus: int, model: str = "m", cpu: int = 64_000, mem: int = 256 * 1024):
    devices = tuple(Device(id=f"{name}-d{i}", index=i, model=model) for i in range(npus))
    return Node(name, cpu, mem, devices)


# --- inflation --------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(workloads, st.integers(1, 40_000), st.floats(0.05, 2.0), st.integers(0, 2**32))
def test_inflation(pods, capacity, tune, seed):
    out = inflate(pods, capacity, tune, np.random.default_rng(seed))
    limit = tune * capacity
    total = sum(p.device_milli for p in out)
    originals_total = sum(p.device_milli for p in pods)
    assert len({p.name for p in out}) == len(out)
    assert inflate(pods, capacity, tune, np.random.default_rng(seed)) == out
    rng = np.random.default_rng(seed)
    if originals_total > limit:
        # Thinned: an ordered subset, CPU-only pods kept, device pods dropped in the
        # generator's order until the rest fits, and not one more.
        assert total <= limit
        kept = {p.name for p in out}
        assert [p for p in pods if p.name in kept] == out
        assert all(p.name in kept for p in pods if not p.device_milli)
        running, dropped = originals_total, set()
        for i in rng.permutation(len(pods)):
            if running <= limit:
                break
            if pods[i].device_milli:
                dropped.add(pods[i].name)
                running -= pods[i].device_milli
        assert dropped == {p.name for p in pods} - kept
        return
    # every original is kept, first and unchanged
    assert out[: len(pods)] == pods
    copies = out[len(pods) :]
    assert total <= limit
    if not originals_total:
        assert copies == []
        return
    # replaying the generator: the copies are the draws, and the next draw overflows
    running = originals_total
    for c in copies:
        drawn = pods[int(rng.integers(len(pods)))]
        assert c.name.startswith(drawn.name + "-c")
        assert _fields(c) == {**_fields(drawn), "name": c.name}
        running += drawn.device_milli
    assert running == total
    nxt = pods[int(rng.integers(len(pods)))]
    assert running + nxt.device_milli > limit


def _fields(r: Request) -> dict:
    return {f: getattr(r, f) for f in r.__dataclass_fields__}


def test_inflation_fills_to_the_limit_exactly_with_unit_pods():
    pods = [Request(name=f"p{i}", npus=1) for i in range(3)]
    out = inflate(pods, 10_000, 1.3, np.random.default_rng(1))
    assert sum(p.device_milli for p in out) == 13_000
    assert len(out) == 13


def test_inflation_without_device_pods_returns_the_originals():
    pods = [Request(name="cpu", cpu_milli=1000)]
    assert inflate(pods, 1000, 1.3, np.random.default_rng(0)) == pods


def test_inflation_differs_by_seed():
    pods = [Request(name="a", npus=1), Request(name="b", share_milli=300)]
    names = {
        tuple(p.name for p in inflate(pods, 100_000, 1.0, np.random.default_rng(s)))
        for s in range(5)
    }
    assert len(names) == 5


def test_copy_names_never_take_an_original_name():
    pods = [Request(name="a", npus=1), Request(name="a-c0", npus=1), Request(name="a-c2", npus=1)]
    out = inflate(pods, 50_000, 1.0, np.random.default_rng(3))
    names = [p.name for p in out]
    assert len(set(names)) == len(names) == 50


# --- replay -----------------------------------------------------------------------------

CLUSTER = [node("a", 4), node("b", 8), node("c", 2, model="x"), node("cpu", 0)]
WORKLOAD = [
    Request(name="w1", cpu_milli=4000, memory_mib=8192, npus=1),
    Request(name="w2", cpu_milli=8000, memory_mib=16384, npus=2),
    Request(name="s1", cpu_milli=1000, share_milli=500),
    Request(name="s2", cpu_milli=1000, share_milli=250),
    Request(name="x1", cpu_milli=1000, npus=1, models=frozenset({"x"})),
    Request(name="c1", cpu_milli=2000),
]


@pytest.mark.parametrize("tune", [0.01, 0.5, 1.0, 1.25, 1.3, 2.0])
def test_curve_shape(tune):
    run = replay(CLUSTER, WORKLOAD, policies.factory("bestfit"), seed=42, tune=tune, explain=True)
    curve = run.allocation_curve
    assert len(curve) == round(tune * 100) + 1
    assert curve == sorted(curve)
    assert run.final_allocation_pct == curve[-1] <= min(100.0, tune * 100)
    assert run.total_devices == 14
    # what is not allocated at the end is exactly what the explanation accounts for
    assert run.explain is not None
    assert sum(run.explain.values()) == pytest.approx(14_000 * (1 - curve[-1] / 100), abs=0.01)


@pytest.mark.parametrize("spec", policies.BASELINES)
def test_replay_is_deterministic_per_seed(spec):
    runs = [replay(CLUSTER, WORKLOAD, policies.factory(spec), seed=s, tune=1.3) for s in (7, 7)]
    a, b = runs
    assert a.allocation_curve == b.allocation_curve
    assert a.unscheduled_pods == b.unscheduled_pods
    assert (a.policy, a.seed, a.tune) == (spec, 7, 1.3)


def test_everything_fits_below_capacity():
    # 14 devices, 1.0 x capacity of whole single-NPU pods: every pod lands, 100% allocated
    pods = [Request(name=f"p{i}", npus=1) for i in range(4)]
    run = replay(CLUSTER, pods, policies.factory("packing"), seed=1, tune=1.0)
    assert run.unscheduled_pods == 0
    assert run.allocation_curve[-1] == 100.0
    # one point per percent: each pod is 1/14 of capacity
    assert run.allocation_curve[50] == pytest.approx(100 * 7 / 14, abs=100 / 14)


def test_progress_is_reported():
    seen = []
    replay(CLUSTER, WORKLOAD, policies.factory("random"), seed=0, tune=0.5,
           progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert seen and seen[-1][0] == seen[-1][1] == len(seen)
    assert [d for d, _ in seen] == list(range(1, len(seen) + 1))


def test_no_devices_is_an_input_error():
    with pytest.raises(InputError, match="no NPU devices"):
        replay([node("cpu", 0)], WORKLOAD, policies.factory("random"), seed=0, tune=1.0)


def test_json_form():
    run = replay(CLUSTER, WORKLOAD, policies.factory("dotprod"), seed=3, tune=1.3)
    doc = run.as_json()
    assert list(doc) == [
        "policy",
        "seed",
        "tune",
        "total_devices",
        "allocation_curve",
        "final_allocation_pct",
        "unscheduled_pods",
        "elapsed_s",
    ]
    assert doc["allocation_curve"] is run.allocation_curve and len(doc["allocation_curve"]) == 131
    assert doc["elapsed_s"] == round(run.elapsed_s, 3)


# --- a slice of the real trace ------------------------------------------------------------


def head(src: Path, dst: Path, lines: int) -> Path:
    with src.open(encoding="utf-8") as f:
        dst.write_text("".join(itertools.islice(f, lines)), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def openb_slice(tmp_path_factory):
    require_openb()
    tmp = tmp_path_factory.mktemp("openb")
    nodes = openb.read_nodes(head(OPENB / "openb_node_list_gpu_node.csv", tmp / "n.csv", 61))
    pods = openb.read_pods(head(OPENB / "openb_pod_list_default.csv", tmp / "p.csv", 301))
    assert len(nodes) == 60 and len(pods) == 300
    return nodes, pods


@pytest.mark.parametrize("spec", policies.BASELINES)
def test_openb_slice_smoke(openb_slice, spec):
    nodes, pods = openb_slice
    run = replay(nodes, pods, policies.factory(spec), seed=42, tune=1.3)
    devices = sum(len(n.devices) for n in nodes)
    assert run.total_devices == devices
    curve = run.allocation_curve
    assert len(curve) == 131 and curve == sorted(curve)
    assert run.final_allocation_pct == curve[-1]
    assert 30 < curve[-1] <= 100
    # allocation never runs ahead of arrivals (plus at most one 8-NPU pod's jump)
    assert all(y <= x + 100 * 8000 / (devices * 1000) for x, y in enumerate(curve))
    assert run.unscheduled_pods > 0  # 130% of capacity cannot all fit


def test_kubenpu_beats_fgd_seed_by_seed_on_a_larger_openb_slice(tmp_path):
    # The claim, on a slice that runs in seconds: 300 nodes, 2000 pods.
    require_openb()
    nodes = openb.read_nodes(head(OPENB / "openb_node_list_gpu_node.csv", tmp_path / "n.csv", 301))
    pods = openb.read_pods(head(OPENB / "openb_pod_list_default.csv", tmp_path / "p.csv", 2001))
    for seed in (42, 43, 44):
        ours, fgd = (
            replay(nodes, pods, policies.factory(spec), seed=seed, tune=1.3).final_allocation_pct
            for spec in ("kubenpu", "fgd")
        )
        assert ours > fgd, f"seed {seed}: kubenpu {ours} <= fgd {fgd}"
