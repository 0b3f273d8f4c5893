"""Preemption in the replay: priorities, the fast plan (checked against the engine's
``plan_preemption``), evictions in the replay, and the CLI's report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kubenpu.cli.main import build_app
from kubenpu.engine import policies
from kubenpu.engine.framework import Engine
from kubenpu.engine.preemption import plan_preemption
from kubenpu.engine.state import ClusterState
from kubenpu.errors import InputError
from kubenpu.model import Device, Node, Placement, Request
from kubenpu.sim.evictions import (
    LOW_SHARE,
    EvictionStats,
    Preemptor,
    priorities_from_qos,
    seeded_priorities,
)
from kubenpu.sim.experiment import arrival_order, original_name, replay
from kubenpu.sim.timeline import replay_timeline
from kubenpu.traces.openb import TimedPod, read_pod_qos


def node(name: str = "n", npus: int = 2, cpu: int = 64_000) -> Node:
    return Node(name, cpu, 256 * 1024, tuple(Device(f"{name}-d{i}", i, "m") for i in range(npus)))


# ---- priorities ------------------------------------------------------------------------


def test_priorities_from_qos() -> None:
    got = priorities_from_qos({"a": "LS", "b": "BE", "c": "Burstable", "d": "Guaranteed"})
    assert got == {"a": 1000, "b": 0, "c": 500, "d": 1000}
    with pytest.raises(InputError, match="qos 'Gold'"):
        priorities_from_qos({"a": "Gold"})


def test_seeded_priorities_are_per_seed_and_near_the_low_share() -> None:
    pods = [Request(f"p{i}") for i in range(2000)]
    a, b = seeded_priorities(pods, 1), seeded_priorities(pods, 2)
    assert a == seeded_priorities(pods, 1) and a != b
    assert set(a.values()) == {0, 1000}
    low = sum(v == 0 for v in a.values()) / len(pods)
    assert abs(low - LOW_SHARE) < 0.05


def test_read_pod_qos(tmp_path: Path) -> None:
    f = tmp_path / "pods.csv"
    f.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli,qos\na,1,1,1,1000,LS\nb,1,1,0,0,BE\n")
    assert read_pod_qos(f) == {"a": "LS", "b": "BE"}
    f.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1,1,1,1000\n")
    assert read_pod_qos(f) is None
    f.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli,qos\na,1,1,1,1000,LS\nb,1,1,0,0,\n")
    with pytest.raises(InputError, match=r"pods\.csv:3: column 'qos': empty"):
        read_pod_qos(f)


def test_copies_stand_for_their_original() -> None:
    originals = {"a", "a-c1", "b"}
    assert original_name("a", originals) == "a"
    assert original_name("a-c1", originals) == "a-c1"  # an original that looks like a copy
    assert original_name("a-c7", originals) == "a"
    assert original_name("a-c1-c3", originals) == "a-c1"


# ---- the plan on one state -------------------------------------------------------------


def put(state: ClusterState, pre: Preemptor, pod: str, node: str, devs: list[int], req: Request):
    shares = (1000,) * req.npus if req.npus else (req.share_milli,) * len(devs)
    state.reserve(Placement(pod, node, tuple(f"{node}-d{d}" for d in devs), shares), req)
    pre.track(pod)


def test_a_whole_npu_evicts_the_shares_of_one_device() -> None:
    # One node, 2 NPUs: d0 holds shares of 300 and 400 (priority 0), d1 one of 600
    # (priority 0). A 1-NPU pod of priority 1000 needs a device cleared: d1 costs one
    # victim (600), d0 two (300 + 400): the fewest win, so only the 600 share goes.
    state = ClusterState([node()])
    prio = {"s300": 0, "s400": 0, "s600": 0, "big": 1000}
    pre = Preemptor(state, prio)
    put(state, pre, "s300", "n", [0], Request("s300", 100, 100, share_milli=300))
    put(state, pre, "s400", "n", [0], Request("s400", 100, 100, share_milli=400))
    put(state, pre, "s600", "n", [1], Request("s600", 100, 100, share_milli=600))
    engine = Engine(state, policies.factory("bestfit")(state, []), seed=1)
    big = Request("big", 100, 100, npus=1)
    assert engine.decide(big).placement is None
    stats = EvictionStats()
    evicted = pre.preempt(engine, big, stats)
    assert evicted is not None and [r.name for r in evicted] == ["s600"]
    assert state.holdings["big"].placement.device_ids == ("n-d1",)
    assert (stats.preemptions, stats.evictions, stats.evicted_milli) == (1, 1, 600)


def test_a_share_evicts_the_lowest_priority_share_that_frees_enough() -> None:
    # d0: 500 (priority 500) and 300 (priority 0); d1: 600 (priority 0). A 500 share of
    # priority 1000 can free 500 on d0 by evicting the 500 (priority 500: higher) or on d1
    # by evicting the 600 (priority 0): lowest highest-priority first, so the 600 goes.
    # The 300 on d0 alone frees 200 + 300 = 500 too, at priority 0 and one victim, and
    # d0 comes first: so it is the 300.
    state = ClusterState([node()])
    prio = {"a500": 500, "b300": 0, "c600": 0, "new": 1000}
    pre = Preemptor(state, prio)
    put(state, pre, "a500", "n", [0], Request("a500", 100, 100, share_milli=500))
    put(state, pre, "b300", "n", [0], Request("b300", 100, 100, share_milli=300))
    put(state, pre, "c600", "n", [1], Request("c600", 100, 100, share_milli=600))
    engine = Engine(state, policies.factory("bestfit")(state, []), seed=1)
    evicted = pre.preempt(engine, Request("new", 100, 100, share_milli=500), EvictionStats())
    assert evicted is not None and [r.name for r in evicted] == ["b300"]


def test_no_victim_of_equal_or_higher_priority() -> None:
    state = ClusterState([node(npus=1)])
    pre = Preemptor(state, {"old": 1000, "new": 1000})
    put(state, pre, "old", "n", [0], Request("old", 100, 100, npus=1))
    engine = Engine(state, policies.factory("bestfit")(state, []), seed=1)
    stats = EvictionStats()
    assert pre.preempt(engine, Request("new", 100, 100, npus=1), stats) is None
    assert "old" in state.holdings and stats.no_victims == 1


@pytest.mark.parametrize("seed", range(30))
def test_plan_is_plan_preemption(seed: int) -> None:
    # Random clusters filled by the engine with pods of random priorities; for random
    # preemptors the fast plan must give plan_preemption's answer (node and victims), and
    # its per-priority counts must stay those of the state after evictions.
    rng = np.random.default_rng(seed)
    nodes = [
        node(f"n{i}", npus=int(rng.integers(1, 5)), cpu=int(rng.integers(4, 17)) * 1000)
        for i in range(int(rng.integers(2, 6)))
    ]
    state = ClusterState(nodes)
    engine = Engine(state, policies.factory("bestfit")(state, []), seed=seed)
    prio: dict[str, int] = {}
    pre = Preemptor(state, prio)  # levels are fixed at creation: fill prio first
    levels = [0, 10, 500, 1000]

    def request(name: str) -> Request:
        kind = rng.integers(3)
        cpu = int(rng.integers(1, 5)) * 1000
        if kind == 0:
            return Request(name, cpu, 1024, npus=int(rng.integers(1, 3)))
        if kind == 1:
            return Request(name, cpu, 1024, share_milli=int(rng.integers(1, 10)) * 100)
        return Request(name, cpu, 1024)

    pods = [request(f"p{k}") for k in range(40)]
    prio.update({p.name: int(rng.choice(levels)) for p in pods})
    pre = Preemptor(state, prio)
    for p in pods[:30]:
        if engine.place(p).placement is not None:
            pre.track(p.name)
    for p in pods[30:]:
        want = plan_preemption(state, p, prio[p.name], prio)
        got = pre.plan(p, prio[p.name])
        assert (got is None) == (want is None)
        if got is not None and want is not None:
            assert (got.node, got.names) == (want.node, want.names)
        if engine.decide(p).placement is None:
            pre.preempt(engine, p, EvictionStats())
        elif engine.place(p).placement is not None:
            pre.track(p.name)
        fresh = Preemptor(state, prio)
        assert (fresh.cpu == pre.cpu).all() and (fresh.dev == pre.dev).all()
        assert (fresh.pods_on == pre.pods_on).all()


# ---- the replay ------------------------------------------------------------------------


def test_replay_evicts_only_for_higher_priority() -> None:
    # One node, 2 NPUs, three 1-NPU pods (150%: no copies): lo1 and lo2 of priority 0, hi
    # of 1000. Whatever the order, the end is hi and one low pod running (100%), one pod
    # not running; hi evicts exactly when it arrives last.
    nodes = [node(npus=2)]
    pods = [Request(n, 1000, 1024, npus=1) for n in ("lo1", "lo2", "hi")]
    prio = {"lo1": 0, "lo2": 0, "hi": 1000}
    for seed in range(6):
        names = [r.name for r in arrival_order(pods, 2000, 1.5, seed)]
        run = replay(nodes, pods, policies.factory("bestfit"), seed=seed, tune=1.5, priorities=prio)
        assert run.final_allocation_pct == 100.0 and run.unscheduled_pods == 1
        ev = run.preemption
        assert ev is not None
        last = names[-1] == "hi"
        assert (ev.preemptions, ev.evictions, ev.no_victims) == (
            int(last),
            int(last),
            int(not last),
        )


def test_replay_without_priorities_has_no_preemption_report() -> None:
    nodes = [node(npus=2)]
    pods = [Request("a", 1000, 1024, npus=1)]
    run = replay(nodes, pods, policies.factory("bestfit"), seed=1, tune=0.5)
    assert run.preemption is None and "preemption" not in run.as_json()


# ---- the CLI ---------------------------------------------------------------------------


def test_cli_preempt_json_and_table(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,V100M16\n")
    pods = tmp_path / "pods.csv"
    pods.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,qos\n"
        "a,1000,1024,1,1000,BE\nb,1000,1024,1,1000,BE\nc,1000,1024,1,1000,LS\n"
    )
    args = ["simulate", "--nodes", str(nodes), "--pods", str(pods), "--preempt", "--tune", "1.5"]
    result = CliRunner().invoke(
        build_app("simulate"), [*args, "--seeds", "0-5", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    runs = json.loads(result.output)["runs"]
    for run in runs:
        ev = run["preemption"]
        assert ev["preemptions"] == ev["evictions"] <= 1
        assert run["final_allocation_pct"] == 100.0
        assert run["baseline"]["unscheduled_pods"] == 1
    # The LS pod arrives last for some seed and evicts a BE pod.
    assert any(run["preemption"]["evictions"] for run in runs)
    table = CliRunner().invoke(build_app("simulate"), [*args, "--policy", "fgd", "--quiet"])
    assert table.exit_code == 0, table.output
    assert "plain vs. with preemption" in table.output and "evicted" in table.output


def test_cli_preempt_bad_qos_is_one_error(tmp_path: Path) -> None:
    pods = tmp_path / "pods.csv"
    pods.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli,qos\na,1,1,1,1000,Gold\n")
    result = CliRunner().invoke(
        build_app("simulate"), ["simulate", "--pods", str(pods), "--preempt"]
    )
    assert result.exit_code == 2
    assert "pods.csv:2: column 'qos': 'Gold' is not one of BE, Burstable" in result.output
    assert len(result.output.strip().splitlines()) == 1


# ---- in the timeline -------------------------------------------------------------------


def test_timeline_evicted_pods_wait_again() -> None:
    # 1 NPU. lo (priority 0) runs from 0; hi (1000) comes at 10 and evicts it; lo waits
    # again from 10 and starts when hi leaves at 60 (waited 50), to run its 100 s again
    # (to 160). Its first run's leave event (100) must not end the second run: x (priority
    # 0, at 120) waits until 160 (40 s), so two pods waited.
    def timed(name: str, created: int, runtime: int) -> TimedPod:
        return TimedPod(Request(name, 1000, 1024, npus=1), created, created + 10**6, runtime)

    pods = [timed("lo", 0, 100), timed("hi", 10, 50), timed("x", 120, 10)]
    result = replay_timeline(
        [node(npus=1)],
        pods,
        policies.factory("bestfit"),
        seed=1,
        samples=11,
        priorities={"lo": 0, "hi": 1000, "x": 0},
    )
    ev = result.preemption
    assert ev is not None and (ev.preemptions, ev.evictions) == (1, 1)
    assert result.placed == 4  # lo twice
    assert result.waited == 2
    assert result.wait_s["max"] == 50
    assert (result.gave_up, result.waiting_at_end) == (0, 0)


def test_cli_timeline_with_gangs_and_preemption(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,V100M16\n")
    pods = tmp_path / "pods.csv"
    rows = [
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,qos,creation_time,deletion_time,"
        "scheduled_time",
        "a,1000,1024,1,1000,BE,0,500,0",
        "b,1000,1024,1,1000,BE,1,500,1",
        "c,1000,1024,1,1000,LS,5,100,5",
        "d,1000,1024,1,1000,LS,6,100,6",
    ]
    pods.write_text("\n".join(rows) + "\n")
    args = ["simulate", "--timeline", "--nodes", str(nodes), "--pods", str(pods), "--preempt"]
    result = CliRunner().invoke(
        build_app("simulate"), [*args, "--gangs", "synthetic:2", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    for run in json.loads(result.output)["timeline"]:
        assert run["gangs"]["gangs"] == 2
        assert {"mean_allocation_pct", "waited", "never_placed"} <= set(run["baseline"])
        assert "preemption" in run
    table = CliRunner().invoke(build_app("simulate"), [*args, "--policy", "fgd"])
    assert table.exit_code == 0, table.output
    assert "plain vs. with preemption" in table.output
    # c and d (LS) come when a and b (BE) hold both NPUs: each evicts one.
    assert "│ fgd" in table.output
