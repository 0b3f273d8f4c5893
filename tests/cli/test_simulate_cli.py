"""``kubenpu simulate`` as a user runs it: a real process, its output and its exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from kubenpu.cli.simulate import parse_seeds

KUBENPU = [sys.executable, "-c", "from kubenpu.cli.main import main; main()"]
NODE_HEADER = "sn,cpu_milli,memory_mib,gpu,model"
POD_HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec"


def simulate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*KUBENPU, "simulate", *args], capture_output=True, text=True, timeout=120
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def trace(tmp_path):
    """A tiny valid openb cluster and workload: (nodes.csv, pods.csv)."""
    nodes = write(
        tmp_path / "nodes.csv",
        f"{NODE_HEADER}\nn0,32000,131072,4,T4\nn1,32000,131072,2,P100\n",
    )
    pods = write(
        tmp_path / "pods.csv",
        f"{POD_HEADER}\np0,4000,8192,1,1000,\np1,2000,4096,1,500,\np2,8000,16384,2,1000,T4\n",
    )
    return nodes, pods


# --- --seeds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("42", [42]),
        ("42-44", [42, 43, 44]),
        ("42,43", [42, 43]),
        ("1-3,7", [1, 2, 3, 7]),
        (" 5 , 6 ", [5, 6]),
        ("0", [0]),
        ("9-9", [9]),
    ],
)
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["44-42", "x", "", "42-", "-1", "1--2", "4,,5", "1.5", "1-x"])
def test_parse_seeds_rejects(text):
    with pytest.raises(typer.BadParameter):
        parse_seeds(text)


# --- output -----------------------------------------------------------------------------


def test_json_on_the_built_in_default():
    out = simulate("--policy", "random", "--seeds", "42", "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert list(doc) == ["runs"]
    (run,) = doc["runs"]
    assert set(run) == {
        "policy",
        "seed",
        "tune",
        "total_devices",
        "allocation_curve",
        "final_allocation_pct",
        "unscheduled_pods",
        "elapsed_s",
    }
    assert (run["policy"], run["seed"], run["tune"]) == ("random", 42, 1.3)
    assert run["total_devices"] == 1120  # 120 nodes x 8 + 40 nodes x 4
    curve = run["allocation_curve"]
    assert len(curve) == 131
    assert all(isinstance(x, int | float) for x in curve)
    assert curve == sorted(curve)
    assert 0 <= curve[0] <= curve[-1] <= 100
    assert run["final_allocation_pct"] == curve[-1]
    assert 50 < run["final_allocation_pct"] < 100
    assert isinstance(run["unscheduled_pods"], int) and run["unscheduled_pods"] > 0
    assert 0 < run["elapsed_s"] < 60
    assert out.stderr == ""  # no progress bar when stderr is not a terminal


def test_seed_range_gives_one_run_per_seed_and_is_deterministic(trace):
    nodes, pods = trace
    args = ("--nodes", str(nodes), "--pods", str(pods), "--policy", "bestfit", "--format", "json")
    first = json.loads(simulate(*args, "--seeds", "42-44").stdout)["runs"]
    again = json.loads(simulate(*args, "--seeds", "42,43").stdout)["runs"]
    assert [r["seed"] for r in first] == [42, 43, 44]
    assert [r["seed"] for r in again] == [42, 43]
    for a, b in zip(first, again, strict=False):
        assert a["allocation_curve"] == b["allocation_curve"]
        assert a["unscheduled_pods"] == b["unscheduled_pods"]
    for r in first:
        assert r["total_devices"] == 6
        assert len(r["allocation_curve"]) == 131


def test_tune_sets_the_curve_length(trace):
    nodes, pods = trace
    out = simulate("--nodes", str(nodes), "--pods", str(pods), "--policy", "fgd",
                   "--tune", "0.8", "--format", "json")  # fmt: skip
    (run,) = json.loads(out.stdout)["runs"]
    assert run["tune"] == 0.8
    assert len(run["allocation_curve"]) == 81
    assert run["final_allocation_pct"] <= 80


def test_table_has_a_row_per_policy():
    out = simulate("--policy", "random,bestfit", "--seeds", "42")
    assert out.returncode == 0, out.stderr
    rows = {}
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 7 and cells[0] in ("random", "bestfit"):
            rows[cells[0]] = cells
    assert set(rows) == {"random", "bestfit"}
    for cells in rows.values():
        assert cells[1] == "1"
        mean, lo, hi = (float(c) for c in cells[2:5])
        assert lo == mean == hi and 50 < mean < 100
    assert "NPU allocation at 130% arrival" in out.stdout
    assert "1120 NPUs" in out.stdout


def test_plot_writes_a_png(trace, tmp_path):
    nodes, pods = trace
    png = tmp_path / "curves.png"
    out = simulate("--nodes", str(nodes), "--pods", str(pods), "--policy", "random,packing",
                   "--seeds", "42,43", "--plot", str(png), "--quiet")  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


# --- bad input: one line on stderr, naming the file, line and problem; exit code 2 -------


def assert_one_line_error(out: subprocess.CompletedProcess, *parts: str) -> str:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ")
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


BAD_CSV = [
    ("missing-column", "nodes", "sn,cpu_milli,gpu,model\na,1,1,T4\n", ":1:", "missing column"),
    ("non-numeric", "nodes", f"{NODE_HEADER}\na,1,1,1,T4\nb,lots,1,1,T4\n", ":3:", "not a number"),
    ("negative", "pods", f"{POD_HEADER}\np,1,-8,1,1000,\n", ":2:", "is negative"),
    ("fraction", "nodes", f"{NODE_HEADER}\na,1,1,0.5,T4\n", ":2:", "not a whole number"),
    ("too-many-gpus", "pods", f"{POD_HEADER}\np,1,1,9,1000,\n", ":2:", "at most 8"),
    ("empty-cluster", "nodes", f"{NODE_HEADER}\na,64000,1024,0,\n", "nodes", "no NPU devices"),
    ("no-pods", "pods", f"{POD_HEADER}\n", "pods", "no pods in file"),
    ("cut-last-row", "pods", f"{POD_HEADER}\np,1,1,1,1000,\nq,1,1,1,10,", ":3:", "cut short"),
    ("cut-model", "nodes", f"{NODE_HEADER}\na,1,1,1,P1\n", ":2:", "unknown device model 'P1'"),
]


@pytest.mark.parametrize(
    ("which", "text", "where", "problem"),
    [case[1:] for case in BAD_CSV],
    ids=[case[0] for case in BAD_CSV],
)
def test_bad_csv(trace, tmp_path, which, text, where, problem):
    nodes, pods = trace
    bad = write(tmp_path / f"bad-{which}.csv", text)
    files = {"nodes": nodes, "pods": pods, which: bad}
    out = simulate(
        "--nodes", str(files["nodes"]), "--pods", str(files["pods"]), "--policy", "random"
    )
    line = assert_one_line_error(out, str(bad), problem)
    assert where in line


def test_unreadable_file(tmp_path):
    missing = tmp_path / "nope" / "nodes.csv"
    out = simulate("--nodes", str(missing), "--policy", "random")
    assert_one_line_error(out, str(missing), "cannot read file")


def test_unknown_policy():
    out = simulate("--policy", "random,bogus")
    assert_one_line_error(out, "unknown policy 'bogus'", "fgd")


BAD_YAML = [
    ("malformed", "kind: Pod\nmetadata:\n  name: [a\n", ":4:", "invalid YAML"),
    (
        "npu-and-core",
        "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        "  - resources: {requests: {aliyun.com/npu: 1, aliyun.com/npu-core: 20}}\n",
        ":1:",
        "the pod asks for both aliyun.com/npu",
    ),
    (
        "core-over-100",
        "---\n# a comment\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        "  - resources: {limits: {aliyun.com/npu-core: 101}}\n",
        ":3:",
        "aliyun.com/npu-core is 101, but must be 1 to 100",
    ),
    ("not-an-object", "- a\n- b\n", ":1:", "not a Kubernetes object"),
    (
        "infinite",
        "kind: Pod\nmetadata: {name: p}\n"
        "spec: {containers: [{resources: {requests: {cpu: .inf}}}]}\n",
        ":1:",
        "finite",
    ),
]


@pytest.mark.parametrize(
    ("text", "where", "problem"), [c[1:] for c in BAD_YAML], ids=[c[0] for c in BAD_YAML]
)
def test_bad_yaml_pods(tmp_path, text, where, problem):
    bad = write(tmp_path / "pods.yaml", text)
    out = simulate("--pods", str(bad), "--policy", "random")
    line = assert_one_line_error(out, str(bad) + where, problem)
    assert len(line) > 80  # long enough that a wrapping console would have split it


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--seeds", "44-42"), "--seeds: '44-42' is not a seed or a range"),
        (("--seeds", "-3"), "--seeds: '-3'"),
        (("--format", "xml"), "--format must be table or json"),
        (("--tune", "0"), "--tune must be in (0, 10]"),
        (("--tune", "nan"), "--tune must be in (0, 10]"),
    ],
)
def test_bad_flags(args, problem):
    out = simulate("--policy", "random", *args)
    assert_one_line_error(out, problem)


def test_unwritable_plot(trace, tmp_path):
    nodes, pods = trace
    target = tmp_path / "missing-dir" / "x.png"
    out = simulate("--nodes", str(nodes), "--pods", str(pods), "--policy", "random",
                   "--plot", str(target))  # fmt: skip
    assert_one_line_error(out, "--plot", str(target))


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("kubenpu")
    if not script.exists():
        pytest.skip("no kubenpu console script next to the interpreter")
    out = subprocess.run([str(script), "simulate", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--nodes", "--pods", "--policy", "--seeds", "--tune", "--format", "--plot"):
        assert flag in out.stdout
