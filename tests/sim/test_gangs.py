"""Gang replay: the gang file, the synthetic rule, all-or-nothing placement at the last
member's arrival, and the CLI's side-by-side report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubenpu.cli.main import build_app
from kubenpu.engine import policies
from kubenpu.errors import InputError
from kubenpu.model import Device, Node, Request
from kubenpu.sim.experiment import arrival_order, replay
from kubenpu.sim.gangs import FileGangs, Gang, SyntheticGangs, parse_gang_spec, read_gang_file
from kubenpu.sim.timeline import replay_timeline
from kubenpu.traces.openb import TimedPod

POD_HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli"


def node(name: str = "n", npus: int = 4) -> Node:
    return Node(
        name, 64_000, 256 * 1024, tuple(Device(f"{name}-d{i}", i, "m") for i in range(npus))
    )


def one_npu(name: str) -> Request:
    return Request(name, 1000, 1024, npus=1)


def order(nodes: list[Node], pods: list[Request], tune: float, seed: int = 1) -> list[str]:
    capacity = sum(len(n.devices) for n in nodes) * 1000
    return [r.name for r in arrival_order(pods, capacity, tune, seed)]


# ---- the gang file ---------------------------------------------------------------------


def test_gang_file_is_read(tmp_path: Path) -> None:
    f = tmp_path / "gangs.csv"
    f.write_text("pod,gang,min_count,topology\na,g1,2,\nb,g1,2,\nc,g2,1,require\n")
    gangs = read_gang_file(f, ["a", "b", "c", "d"], default_topology="prefer")
    assert gangs == [
        Gang("g1", ("a", "b"), 2, "prefer"),  # empty topology: the default
        Gang("g2", ("c",), 1, "require"),
    ]


def test_gang_file_without_topology_column(tmp_path: Path) -> None:
    f = tmp_path / "gangs.csv"
    f.write_text("pod,gang,min_count\na,g,1\n")
    assert read_gang_file(f, ["a"]) == [Gang("g", ("a",), 1, "none")]


@pytest.mark.parametrize(
    ("rows", "where", "problem"),
    [
        ("x,g,1", ":2:", "column 'pod': 'x' is not a pod of the trace"),
        ("a,g,1\na,h,1", ":3:", "column 'pod': 'a' is already in a gang (line 2)"),
        (",g,1", ":2:", "column 'pod': empty"),
        ("a,,1", ":2:", "column 'gang': empty"),
        ("a,g,two", ":2:", "column 'min_count': 'two' is not a number"),
        ("a,g,0", ":2:", "column 'min_count': must be at least 1"),
        ("a,g,2\nb,g,1", ":3:", "column 'min_count': 1, but gang 'g' has 2 (line 2)"),
        # The gang's size is known at the end: the error points at its first row.
        ("a,g,3\nb,g,3", ":2:", "gang 'g' needs 3 pods but has 2"),
        ("a,g,1,nearby", ":2:", "column 'topology': 'nearby' is not one of none, prefer"),
        ("a,g,2,prefer\nb,g,2,none", ":3:", "column 'topology': 'none', but gang 'g' has"),
    ],
)
def test_gang_file_errors_name_file_line_and_column(
    tmp_path: Path, rows: str, where: str, problem: str
) -> None:
    f = tmp_path / "gangs.csv"
    # Every row gets the four fields of the header (an empty topology unless given).
    lines = [r if r.count(",") == 3 else r + "," for r in rows.split("\n")]
    f.write_text("pod,gang,min_count,topology\n" + "\n".join(lines) + "\n")
    with pytest.raises(InputError) as exc:
        read_gang_file(f, ["a", "b"])
    assert f"gangs.csv{where}" in str(exc.value)
    assert problem in str(exc.value)


def test_gang_file_missing_column_and_empty(tmp_path: Path) -> None:
    f = tmp_path / "gangs.csv"
    f.write_text("pod,gang\na,g\n")
    with pytest.raises(InputError, match=r"gangs\.csv:1: missing column.*min_count"):
        read_gang_file(f, ["a"])
    f.write_text("pod,gang,min_count\n")
    with pytest.raises(InputError, match="no gangs in file"):
        read_gang_file(f, ["a"])


def test_gang_spec() -> None:
    assert parse_gang_spec("synthetic:4", []) == SyntheticGangs(4, 1, "none")
    assert parse_gang_spec("synthetic:2:8", [], "prefer") == SyntheticGangs(2, 8, "prefer")
    for bad in ("synthetic:", "synthetic:x", "synthetic:0", "synthetic:2:3:4"):
        with pytest.raises(InputError, match="--gangs"):
            parse_gang_spec(bad, [])


# ---- the synthetic rule ----------------------------------------------------------------


def test_synthetic_gangs_group_same_shape_in_arrival_order() -> None:
    # Shapes: 1 NPU (a, c, e, g), 2 NPUs (b, f), a share (s) and a 1-NPU pod that must be
    # model x (m): with K=2, a+c and e+g (1 NPU), b+f (2 NPUs); s never, m stays alone.
    arrivals = [
        Request("a", 1, 1, npus=1),
        Request("b", 9, 9, npus=2),
        Request("s", 1, 1, share_milli=500),
        Request("c", 5, 5, npus=1),  # other CPU and memory: still the same NPU shape
        Request("m", 1, 1, npus=1, models=frozenset({"x"})),
        Request("e", 1, 1, npus=1),
        Request("f", 1, 1, npus=2),
        Request("g", 1, 1, npus=1),
    ]
    gangs = SyntheticGangs(2).gangs(arrivals)
    assert [g.members for g in gangs] == [("a", "c"), ("b", "f"), ("e", "g")]
    assert all(g.min_count == 2 for g in gangs)
    # M=2: only pods of 2 NPUs or more.
    assert [g.members for g in SyntheticGangs(2, min_npus=2).gangs(arrivals)] == [("b", "f")]


def test_synthetic_gangs_are_deterministic_per_seed() -> None:
    # Twelve 1-NPU pods, 12 NPUs (tune 1: no copies): four gangs of 3, whose members
    # follow the seed's shuffle.
    pods = [one_npu(f"p{i}") for i in range(12)]

    def gangs(seed: int) -> list[Gang]:
        return SyntheticGangs(3).gangs(arrival_order(pods, 12_000, 1.0, seed))

    assert gangs(7) == gangs(7)
    assert len(gangs(7)) == 4
    assert any(gangs(seed) != gangs(7) for seed in range(8, 12))


# ---- the replay ------------------------------------------------------------------------


def gang_run(nodes: list[Node], pods: list[Request], gangs: list[Gang], tune: float, **kw):
    return replay(
        nodes,
        pods,
        policies.factory("bestfit"),
        seed=1,
        tune=tune,
        gangs=FileGangs(tuple(gangs)),
        **kw,
    )


def test_a_gang_waits_for_its_last_member_and_is_all_or_nothing() -> None:
    # One node of 4 NPUs, five 1-NPU pods (5000 milli = 125% of 4000: no copies at 1.25).
    # Plain: the first four arrivals take the NPUs, the fifth is turned away.
    nodes = [node(npus=4)]
    pods = [one_npu(f"p{i}") for i in range(5)]
    first, second, *_, last = order(nodes, pods, 1.25)
    plain = replay(nodes, pods, policies.factory("bestfit"), seed=1, tune=1.25)
    assert (plain.final_allocation_pct, plain.unscheduled_pods) == (100.0, 1)

    # Gang {first, last}: first waits holding nothing, the three in between take 3 NPUs;
    # when last comes 1 NPU is free for a gang of 2: both are turned away (75% allocated).
    late = gang_run(nodes, pods, [Gang("g", (first, last), 2)], 1.25)
    assert late.final_allocation_pct == 75.0
    assert late.unscheduled_pods == 2
    g = late.gangs
    assert g is not None
    assert (g.gangs, g.placed, g.turned_away, g.pods_turned_away) == (1, 0, 1, 2)

    # Gang {first, second}: complete at the second arrival, placed at once (2 NPUs); then
    # two more fit and the last is turned away as in the plain run.
    early = gang_run(nodes, pods, [Gang("g", (first, second), 2)], 1.25)
    assert (early.final_allocation_pct, early.unscheduled_pods) == (100.0, 1)
    assert early.gangs is not None and (early.gangs.placed, early.gangs.pods_turned_away) == (1, 0)
    assert early.gangs.domains == {"cluster": 1}


def test_a_gang_of_four_on_three_free_npus_places_none() -> None:
    # The acceptance case: 3 NPUs, a gang of four 1-NPU pods: nothing is bound.
    nodes = [node(npus=3)]
    pods = [one_npu(f"p{i}") for i in range(4)]
    run = gang_run(nodes, pods, [Gang("g", tuple(p.name for p in pods), 4)], 4 / 3)
    assert run.final_allocation_pct == 0.0
    assert run.unscheduled_pods == 4
    assert run.gangs is not None and run.gangs.turned_away == 1


def test_min_count_places_part_of_a_gang() -> None:
    # 2 NPUs, a gang of 3 that needs 2: two are placed, the third is turned away.
    nodes = [node(npus=2)]
    pods = [one_npu(f"p{i}") for i in range(3)]
    run = gang_run(nodes, pods, [Gang("g", tuple(p.name for p in pods), 2)], 1.5)
    assert run.final_allocation_pct == 100.0
    assert run.gangs is not None
    assert (run.gangs.placed, run.gangs.turned_away, run.gangs.pods_turned_away) == (1, 0, 1)


def test_topology_require_keeps_a_gang_on_one_node() -> None:
    # Two nodes of 2 NPUs, three 1-NPU pods (75%: no copies). The first to arrive is a
    # single and takes an NPU of one node; the other two are a gang that requires one node:
    # only the other node, with both NPUs free, can take it.
    nodes = [node("a", 2), node("b", 2)]
    pods = [one_npu("x"), one_npu("y"), one_npu("z")]
    names = order(nodes, pods, 0.75)
    rest = [n for n in names if n != names[0]]
    run = gang_run(nodes, pods, [Gang("g", tuple(rest), 2, "require")], 0.75)
    assert run.gangs is not None and run.gangs.placed == 1
    assert run.gangs.domains == {"node": 1}


def test_thinned_gang_members_make_an_incomplete_gang() -> None:
    # Tune 0.5 of 4 NPUs: thinning keeps two of the four 1-NPU pods; a gang of all four
    # needing 4 can never start.
    nodes = [node(npus=4)]
    pods = [one_npu(f"p{i}") for i in range(4)]
    run = gang_run(nodes, pods, [Gang("g", tuple(p.name for p in pods), 4)], 0.5)
    assert run.gangs is not None
    assert (run.gangs.turned_away, run.gangs.incomplete, run.gangs.pods_turned_away) == (1, 1, 2)
    assert run.final_allocation_pct == 0.0


@pytest.mark.parametrize("spec", [policies.DEFAULT, *policies.BASELINES])
def test_every_policy_places_whole_gangs_only(spec: str) -> None:
    # Synthetic gangs of 3 (min_count 3): every gang turned away loses all 3 members, and
    # no gang member is turned away otherwise.
    nodes = [node(f"n{i}", 4) for i in range(6)]
    pods = [Request(f"p{i}", 1000 * (1 + i % 3), 2048, npus=1 + i % 2) for i in range(24)]
    run = replay(nodes, pods, policies.factory(spec), seed=3, tune=1.5, gangs=SyntheticGangs(3))
    g = run.gangs
    assert g is not None and g.gangs > 0
    assert g.placed + g.turned_away == g.gangs
    assert g.pods_turned_away == 3 * g.turned_away
    assert g.member_pods == 3 * g.gangs


# ---- the CLI ---------------------------------------------------------------------------


def write_trace(tmp_path: Path) -> tuple[Path, Path]:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(
        "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,4,V100M16\nn1,64000,262144,4,V100M16\n"
    )
    pods = tmp_path / "pods.csv"
    pods.write_text(POD_HEADER + "\n" + "".join(f"p{i},1000,1024,1,1000\n" for i in range(10)))
    return nodes, pods


def test_cli_gang_file_json_reports_both_runs(tmp_path: Path) -> None:
    nodes, pods = write_trace(tmp_path)
    gangs = tmp_path / "gangs.csv"
    gangs.write_text("pod,gang,min_count\n" + "".join(f"p{i},g,5\n" for i in range(5)))
    result = CliRunner().invoke(
        build_app("simulate"),
        [
            "simulate",
            "--nodes",
            str(nodes),
            "--pods",
            str(pods),
            "--gangs",
            str(gangs),
            "--policy",
            "bestfit,fgd",
            "--seeds",
            "1,2",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    runs = json.loads(result.output)["runs"]
    assert len(runs) == 4
    for run in runs:
        assert run["gangs"]["gangs"] == 1
        assert run["gangs"]["placed"] + run["gangs"]["turned_away"] == 1
        assert set(run["baseline"]) == {"final_allocation_pct", "unscheduled_pods"}


def test_cli_synthetic_table(tmp_path: Path) -> None:
    nodes, pods = write_trace(tmp_path)
    result = CliRunner().invoke(
        build_app("simulate"),
        [
            "simulate",
            "--nodes",
            str(nodes),
            "--pods",
            str(pods),
            "--gangs",
            "synthetic:4",
            "--policy",
            "bestfit",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "plain vs. with gangs" in result.output and "bestfit" in result.output


def test_cli_bad_gang_line_is_one_error(tmp_path: Path) -> None:
    nodes, pods = write_trace(tmp_path)
    gangs = tmp_path / "gangs.csv"
    gangs.write_text("pod,gang,min_count\np0,g,1\np1,g,x\n")
    runner = CliRunner()
    for args, problem in [
        (["--gangs", str(gangs)], "gangs.csv:3: column 'min_count': 'x' is not a number"),
        (["--gangs", "synthetic:zero"], "--gangs 'synthetic:zero'"),
        (["--gangs", "synthetic:2", "--gang-topology", "near"], "--gang-topology"),
    ]:
        result = runner.invoke(
            build_app("simulate"),
            ["simulate", "--nodes", str(nodes), "--pods", str(pods), *args],
        )
        assert result.exit_code == 2, result.output
        assert problem in result.output
        assert len(result.output.strip().splitlines()) == 1


# ---- in the timeline -------------------------------------------------------------------


def timed(name: str, created: int, runtime: int, patience: int = 10**6) -> TimedPod:
    return TimedPod(one_npu(name), created, created + patience, runtime)


def timeline(pods: list[TimedPod], gangs: list[Gang], npus: int = 2):
    return replay_timeline(
        [node(npus=npus)],
        pods,
        policies.factory("bestfit"),
        seed=1,
        samples=11,
        gangs=FileGangs(tuple(gangs)),
    )


def test_timeline_gang_waits_as_a_unit() -> None:
    # 2 NPUs. a holds one 0..100; the gang {b, c} is complete at 20 but 1 NPU is free; d
    # (a single) takes it at 30 and runs to 230. At 100 one NPU frees: still not two. At
    # 230 both are free: b and c start together, 210 s after the gang was complete (their
    # waits count from then: waiting for the rest of one's gang is not waiting for room).
    pods = [timed("a", 0, 100), timed("b", 10, 50), timed("c", 20, 50), timed("d", 30, 200)]
    result = timeline(pods, [Gang("g", ("b", "c"), 2)])
    assert result.placed == 4
    assert result.wait_s["max"] == 210
    assert result.waited == 2
    # Complete at once when it fits: no wait, though b came 10 s before c.
    fits = timeline([timed("b", 10, 50), timed("c", 20, 50)], [Gang("g", ("b", "c"), 2)])
    assert (fits.placed, fits.waited) == (2, 0)
    assert result.gangs is not None and (result.gangs.placed, result.gangs.turned_away) == (1, 0)


def test_timeline_gang_is_given_up_when_all_members_are() -> None:
    # The gang's members are deleted at 60 and 70; a frees its NPU only at 100: given up.
    pods = [timed("a", 0, 100), timed("b", 10, 5, patience=50), timed("c", 20, 5, patience=50)]
    result = timeline(pods, [Gang("g", ("b", "c"), 2)])
    assert (result.placed, result.gave_up) == (1, 2)
    assert result.gangs is not None and result.gangs.turned_away == 1
    assert result.gangs.pods_turned_away == 2


def test_timeline_gang_that_never_fits_waits_to_the_end() -> None:
    # One NPU, a gang of two 1-NPU pods: it can never start.
    result = timeline([timed("b", 0, 5), timed("c", 1, 5)], [Gang("g", ("b", "c"), 2)], npus=1)
    assert (result.placed, result.waiting_at_end) == (0, 2)
    assert result.gangs is not None and result.gangs.turned_away == 1
