"""Time-driven replay: waits, give-ups, the queue's order, time-weighted allocation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openb_trace import OPENB, require_openb
from typer.testing import CliRunner

from kubenpu.cli.main import build_app
from kubenpu.engine import policies
from kubenpu.model import Device, Node, Request
from kubenpu.sim.timeline import offered_load, replay_timeline, speed_up
from kubenpu.traces.openb import TimedPod, read_pod_timeline

HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time,scheduled_time"


def node(npus: int = 1) -> Node:
    return Node("n", 8000, 65536, tuple(Device(f"d{i}", i, "m") for i in range(npus)))


def pod(name: str, created: int, runtime: int, npus: int = 1, patience: int = 10**6) -> TimedPod:
    return TimedPod(Request(name, 1000, 1024, npus=npus), created, created + patience, runtime)


def run(pods: list[TimedPod], npus: int = 1, spec: str = "bestfit"):
    return replay_timeline([node(npus)], pods, policies.factory(spec), seed=1, samples=11)


def test_a_pod_waits_until_capacity_frees() -> None:
    # One NPU: a holds it 0..100; b comes at 10 and starts at 100 (waits 90 s).
    result = run([pod("a", 0, 100), pod("b", 10, 50)])
    assert result.placed == 2
    assert result.waited == 1
    assert result.wait_s["max"] == 90
    assert result.gave_up == result.waiting_at_end == 0


def test_a_pod_gives_up_at_its_deletion_time() -> None:
    # b would wait 90 s but was deleted 40 s after it came: never placed.
    result = run([pod("a", 0, 100), pod("b", 10, 50, patience=40)])
    assert (result.placed, result.gave_up, result.waiting_at_end) == (1, 1, 0)


def test_a_pod_that_fits_no_node_waits_forever() -> None:
    result = run([pod("a", 0, 10), pod("big", 5, 10, npus=2)])
    assert (result.placed, result.gave_up, result.waiting_at_end) == (1, 0, 1)


def test_oldest_first_and_no_head_of_line_blocking() -> None:
    # Two NPUs, held by a (0..100) and b (0..150). At 100 one frees: c (2 NPUs, the
    # oldest waiting) cannot start on it, so d (1 NPU) takes it at once (waited 80 s, runs
    # to 130); c starts when b leaves at 150 (came at 10: waited 140 s).
    pods = [pod("a", 0, 100), pod("b", 0, 150), pod("c", 10, 5, npus=2), pod("d", 20, 30)]
    result = run(pods, npus=2)
    assert result.placed == 4
    assert result.wait_s["max"] == 140
    assert result.waited == 2


def test_allocation_is_time_weighted_over_the_arrivals() -> None:
    # One NPU held 0..50 of a 100 s replay (the last arrival, a CPU-only pod, is at 100).
    cpu_only = TimedPod(Request("c", 100, 100), 100, 200, 10)
    result = run([pod("a", 0, 50), cpu_only])
    assert result.mean_allocation_pct == pytest.approx(50)
    assert result.peak_allocation_pct == 100
    assert result.allocation[0] == 100 and result.allocation[-1] == 0


def test_speed_up_divides_gaps_and_keeps_runtimes_and_patience() -> None:
    fast = speed_up([pod("a", 100, 7, patience=30), pod("b", 300, 9, patience=40)], 4)
    assert [(p.created_s, p.deleted_s, p.runtime_s) for p in fast] == [(100, 130, 7), (150, 190, 9)]
    assert offered_load(fast, 1000) > offered_load([pod("a", 100, 7), pod("b", 300, 9)], 1000)


def test_time_columns_are_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "pods.csv"
    good.write_text(f"{HEADER}\np0,1000,1024,1,500,10,100,20\np1,1000,1024,0,0,5,6,\n")
    p0, p1 = read_pod_timeline(good)
    assert (p0.created_s, p0.deleted_s, p0.runtime_s) == (10, 100, 80)
    assert p1.runtime_s == 1  # never scheduled: from creation to deletion
    runner = CliRunner()
    for text, problem in [
        ("p0,1000,1024,1,500,100,10,", "before creation"),
        ("p0,1000,1024,1,500,10,100,200", "outside creation..deletion"),
        ("p0,1000,1024,1,500,x,100,", "'creation_time': 'x' is not a number"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text(f"{HEADER}\n{text}\n")
        result = runner.invoke(
            build_app("simulate"), ["simulate", "--timeline", "--pods", str(bad)]
        )
        assert result.exit_code == 2
        assert "bad.csv:2: column" in result.output and problem in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_cli_needs_time_columns(tmp_path: Path) -> None:
    untimed = tmp_path / "pods.csv"
    untimed.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1,1,1,1000\n")
    runner = CliRunner()
    for args in (["--timeline"], ["--timeline", "--pods", str(untimed)]):
        result = runner.invoke(build_app("simulate"), ["simulate", *args])
        assert result.exit_code == 2
        assert "creation_time" in result.output


@pytest.mark.slow
def test_openb_default_timeline_json() -> None:
    require_openb()
    result = CliRunner().invoke(
        build_app("simulate"),
        [
            "simulate",
            "--timeline",
            "--speedup",
            "20",
            "--policy",
            "bestfit",
            "--nodes",
            str(OPENB / "openb_node_list_gpu_node.csv"),
            "--pods",
            str(OPENB / "openb_pod_list_default.csv"),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    (run_,) = json.loads(result.output)["timeline"]
    assert run_["placed"] + run_["never_placed"] == 8152
    assert 0 < run_["mean_allocation_pct"] <= run_["peak_allocation_pct"] <= 100
