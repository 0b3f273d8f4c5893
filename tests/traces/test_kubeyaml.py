"""Kubernetes YAML exports: documents, Lists, line numbers, and a replay through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kubenpu.errors import InputError
from kubenpu.traces.kubeyaml import is_yaml, read_yaml

KUBENPU = [sys.executable, "-c", "from kubenpu.cli.main import main; main()"]

NODES = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata:
    name: node-a
    labels: {aliyun.com/npu-model: m1}
  status:
    capacity: {cpu: "64", memory: 256Gi, aliyun.com/npu: "4"}
    allocatable: {cpu: 63500m, memory: 250Gi, aliyun.com/npu: "4", aliyun.com/npu-mem: 128}
- apiVersion: v1
  kind: Node
  metadata:
    name: node-b
    labels: {aliyun.com/npu-model: m2}
  status:
    allocatable: {cpu: "1.5e1", memory: 64Gi, aliyun.com/npu: 4}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
"""

PODS = """\
apiVersion: v1
kind: Pod
metadata: {name: whole, namespace: ml}
spec:
  nodeSelector: {aliyun.com/npu-model: m1}
  containers:
  - name: main
    resources:
      limits: {aliyun.com/npu: 2, cpu: "4", memory: 16Gi}
---
apiVersion: v1
kind: Pod
metadata: {name: share}
spec:
  containers:
  - name: main
    resources:
      requests: {aliyun.com/npu-core: 50, aliyun.com/npu-mem: 8, cpu: 500m, memory: 2e3}
---
apiVersion: v1
kind: Pod
metadata: {name: init}
spec:
  initContainers:
  - name: warm
    resources: {requests: {cpu: "8", aliyun.com/npu: 1}}
  containers:
  - name: a
    resources: {requests: {cpu: "1", aliyun.com/npu: 1}}
  - name: b
    resources: {requests: {cpu: "1"}}
---
apiVersion: v1
kind: Pod
metadata: {name: pinned}
spec:
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - {key: aliyun.com/npu-model, operator: In, values: [m2]}
  containers:
  - name: main
    resources: {limits: {aliyun.com/npu-core: "50"}}
"""

NOWHERE = """\
---
apiVersion: v1
kind: Pod
metadata: {name: nowhere}
spec:
  nodeSelector: {aliyun.com/npu-model: m3}
  containers:
  - {name: main, resources: {requests: {aliyun.com/npu-core: 50}}}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def simulate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*KUBENPU, "simulate", *args], capture_output=True, text=True, timeout=120
    )


def problem(path: Path) -> InputError:
    with pytest.raises(InputError) as info:
        read_yaml(path)
    assert info.value.source == str(path)
    return info.value


def test_read_nodes_from_a_list(tmp_path):
    nodes, pods = read_yaml(write(tmp_path, "nodes.yaml", NODES))
    assert pods == []
    a, b = nodes
    assert [d.memory_mib for d in a.devices] == [32 * 1024] * 4
    assert [d.memory_mib for d in b.devices] == [0] * 4
    assert (a.name, a.cpu_milli, a.memory_mib, a.model, len(a.devices)) == (
        "node-a",
        63500,
        250 * 1024,
        "m1",
        4,
    )
    assert (b.name, b.cpu_milli, b.memory_mib, b.model, len(b.devices)) == (
        "node-b",
        15000,
        64 * 1024,
        "m2",
        4,
    )


def test_read_pods_from_documents(tmp_path):
    nodes, pods = read_yaml(write(tmp_path, "pods.yaml", PODS))
    assert nodes == []
    by_name = {p.name: p for p in pods}
    assert list(by_name) == ["ml/whole", "share", "init", "pinned"]
    whole, share, init, pinned = pods
    assert (whole.npus, whole.cpu_milli, whole.memory_mib, whole.models) == (2, 4000, 16384, {"m1"})
    assert (share.share_milli, share.share_memory_mib, share.cpu_milli, share.memory_mib) == (
        500,
        8192,
        500,
        1,
    )
    assert (init.npus, init.cpu_milli) == (1, 8000)
    assert (pinned.share_milli, pinned.models) == (500, {"m2"})


def test_typed_lists_and_mixed_files(tmp_path):
    text = """\
    kind: PodList
    items:
    - {kind: Pod, metadata: {name: a}}
    - {kind: Node, metadata: {name: n}, status: {capacity: {aliyun.com/npu: 1}}}
    ---
    ---
    kind: Service
    metadata: {name: s}
    """
    nodes, pods = read_yaml(write(tmp_path, "mixed.yml", text))
    assert [n.name for n in nodes] == ["n"] and [p.name for p in pods] == ["a"]


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("kind: Pod\nmetadata: {name: a\n", None, "invalid YAML"),
        ("kind: Pod\n  metadata: x\n bad: [\n", 2, "invalid YAML"),
        ("- just\n- a list\n", 1, "not a Kubernetes object"),
        ("kind: 5\n", 1, "kind must be a string"),
        ("kind: List\nitems: {a: 1}\n", 1, "items must be a list"),
        (
            "kind: List\nitems:\n- kind: Pod\n  metadata: {name: a}\n- hello\n",
            5,
            "not a Kubernetes",
        ),
        ("a: !!python/object:os.system x\n", 1, "invalid YAML"),
        ("kind: Pod\nmetadata: [1]\n", 1, "Pod metadata must be a mapping"),
        (
            "kind: Pod\nmetadata: {name: ok}\n---\nkind: Pod\nmetadata: {name: both}\nspec:\n"
            "  containers:\n"
            "  - {resources: {limits: {aliyun.com/npu: 1, aliyun.com/npu-core: 5}}}\n",
            4,
            "pod both: the pod asks for both aliyun.com/npu",
        ),
        (
            "kind: List\nitems:\n- kind: Pod\n  metadata: {name: big}\n  spec:\n    containers:\n"
            "    - {resources: {requests: {aliyun.com/npu-core: 120}}}\n",
            3,
            "aliyun.com/npu-core is 120, but must be 1 to 100",
        ),
        (
            "kind: Node\nmetadata: {name: a}\n---\nkind: Node\nmetadata: {name: a}\n",
            4,
            "Node 'a' appears twice (first at line 1)",
        ),
        (
            "kind: Node\nmetadata: {name: a}\nstatus: {capacity: {cpu: .inf}}\n",
            1,
            "node a: cpu: 'inf' is not a finite quantity",
        ),
    ],
)
def test_errors_name_the_line(tmp_path, text, line, match):
    exc = problem(write(tmp_path, "bad.yaml", text))
    if line is not None:
        assert exc.line == line
    assert match in exc.problem
    assert "\n" not in str(exc)


def test_same_name_in_other_namespace_is_fine(tmp_path):
    text = "kind: Pod\nmetadata: {name: a, namespace: x}\n---\nkind: Pod\nmetadata: {name: a}\n"
    _, pods = read_yaml(write(tmp_path, "ns.yaml", text))
    assert [p.name for p in pods] == ["x/a", "a"]


def test_unreadable(tmp_path):
    assert "cannot read file" in problem(tmp_path / "absent.yaml").problem
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"kind: Pod\nmetadata: {name: \xe9}\n")
    assert "cannot read file" in problem(bad).problem


def test_is_yaml():
    assert is_yaml(Path("a.yaml")) and is_yaml(Path("b.YML"))
    assert not is_yaml(Path("c.csv")) and not is_yaml(Path("yaml"))


# --- replay through the CLI -------------------------------------------------------------


def test_replay_yaml_cluster_through_the_cli(tmp_path):
    nodes = write(tmp_path, "cluster.yaml", NODES)
    pods = write(tmp_path, "pods.yaml", PODS)
    # The pods ask 2000 + 500 + 1000 + 500 = 4000 milli of 8000: at --tune 0.5 no copy fits.
    out = simulate(
        "--nodes", str(nodes), "--pods", str(pods), "--format", "json", "--tune", "0.5",
        "--policy", "bestfit,random", "--seeds", "42",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout)["runs"]
    assert [r["policy"] for r in runs] == ["bestfit", "random"]
    for r in runs:
        assert r["total_devices"] == 8
        assert r["unscheduled_pods"] == 0
        assert r["final_allocation_pct"] == 50.0
        assert len(r["allocation_curve"]) == 51
        assert r["allocation_curve"][-1] == 50.0


def test_replay_honours_models(tmp_path):
    nodes = write(tmp_path, "cluster.yaml", NODES)
    pods = write(tmp_path, "pods.yaml", PODS + NOWHERE)
    out = simulate(
        "--nodes", str(nodes), "--pods", str(pods), "--format", "json", "--tune", "0.5625",
        "--policy", "packing", "--seeds", "7",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (run,) = json.loads(out.stdout)["runs"]
    assert run["unscheduled_pods"] == 1
    assert run["final_allocation_pct"] == 50.0
    assert len(run["allocation_curve"]) == 57


def test_one_file_for_nodes_and_pods(tmp_path):
    both = write(tmp_path, "all.yaml", NODES + "---\n" + PODS)
    out = simulate("--nodes", str(both), "--pods", str(both), "--format", "json", "--policy", "fgd")
    assert out.returncode == 0, out.stderr
    (run,) = json.loads(out.stdout)["runs"]
    assert run["total_devices"] == 8 and len(run["allocation_curve"]) == 131
    assert 50.0 <= run["final_allocation_pct"] <= 100.0


@pytest.mark.parametrize(
    ("flag", "text", "match"),
    [
        ("--nodes", PODS, "no Node objects in file"),
        ("--pods", NODES, "no Pod objects in file"),
    ],
)
def test_files_without_the_right_kind(tmp_path, flag, text, match):
    path = write(tmp_path, "wrong.yaml", text)
    out = simulate(flag, str(path), "--policy", "random")
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {path}: {match}"
