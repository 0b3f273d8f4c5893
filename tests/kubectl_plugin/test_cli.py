"""``kubectl-npu`` as a command, with the cluster replaced by canned answers (the real
thing, through kubectl, is in tests/e2e/test_kubectl_npu.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from typer.testing import CliRunner

from kubectl_plugin.test_views import NODES, PODS, node
from kubenpu.devcluster import processes
from kubenpu.kubectl_plugin import cli

runner = CliRunner()


class FakeCluster:
    """Stands in for cli.Cluster: canned nodes and pods, records what is created."""

    nodes_: ClassVar[list[dict[str, Any]]] = NODES
    pods_: ClassVar[list[dict[str, Any]]] = PODS
    slices_: ClassVar[list[dict[str, Any]]] = []
    claims_: ClassVar[list[dict[str, Any]]] = []
    created: ClassVar[list[tuple[str, str, dict[str, Any]]]] = []
    #: The DRA lists asked for (resource, namespace).
    listed: ClassVar[list[tuple[str, str | None]]] = []

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        self.default_namespace = "default"

    def nodes(self) -> list[dict[str, Any]]:
        return self.nodes_

    def pods(self, namespace: str | None) -> list[dict[str, Any]]:
        return [p for p in self.pods_ if namespace in (None, p["metadata"]["namespace"])]

    def resource_slices(self) -> list[dict[str, Any]]:
        self.listed.append(("resourceslices", None))
        return self.slices_

    def resource_claims(self, namespace: str | None) -> list[dict[str, Any]]:
        self.listed.append(("resourceclaims", namespace))
        return [c for c in self.claims_ if namespace in (None, c["metadata"]["namespace"])]

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> None:
        self.created.append((kind, namespace, body))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeCluster]:
    monkeypatch.setattr(cli, "Cluster", FakeCluster)
    FakeCluster.nodes_ = NODES
    FakeCluster.pods_ = PODS
    FakeCluster.slices_ = []
    FakeCluster.claims_ = []
    FakeCluster.created = []
    FakeCluster.listed = []
    return FakeCluster


def test_nodes_json_and_yaml(fake: type[FakeCluster]) -> None:
    out = runner.invoke(cli.app, ["nodes", "-o", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["kind"] == "NpuNodeList"
    assert [(n["name"], n["allocated"], n["free"]) for n in data["items"]] == [
        ("npu-node-1", 2, 1),
        ("npu-node-2", 1, 2),
    ]
    out = runner.invoke(cli.app, ["nodes", "-o", "yaml"])
    assert yaml.safe_load(out.stdout)["items"][1]["shared_core_percent"] == 80


def test_nodes_and_pods_show_dra_devices(fake: type[FakeCluster]) -> None:
    from kubectl_plugin.test_views import CLAIMS, DRA_NODES, DRA_PODS, SLICES

    fake.nodes_, fake.pods_, fake.slices_, fake.claims_ = DRA_NODES, DRA_PODS, SLICES, CLAIMS
    out = runner.invoke(cli.app, ["nodes", "-o", "json"])
    assert out.exit_code == 0, out.output
    dra = json.loads(out.stdout)["items"][0]
    assert (dra["name"], dra["driver"], dra["total"], dra["free"]) == ("dra-node-1", "dra", 4, 0)
    assert dra["allocated_devices"] == ["npu-0", "npu-1", "npu-2"]
    out = runner.invoke(cli.app, ["pods"])
    assert out.exit_code == 0, out.output
    assert "seed   dra-node-1   Running     1      npu-2" in out.stdout
    assert fake.listed == [
        ("resourceclaims", None),
        ("resourceslices", None),
        ("resourceclaims", "default"),
    ]
    # Without DRA nodes or claim pods nothing DRA is listed.
    fake.nodes_, fake.pods_, fake.listed = NODES, PODS, []
    assert runner.invoke(cli.app, ["nodes"]).exit_code == 0
    assert runner.invoke(cli.app, ["pods", "-A"]).exit_code == 0
    assert fake.listed == []


def test_no_npu_nodes_is_a_friendly_error(fake: type[FakeCluster]) -> None:
    fake.nodes_ = [node("cpu-node-1", 0, model="")]
    out = runner.invoke(cli.app, ["nodes"])
    assert out.exit_code == 1
    assert out.stderr == (
        "error: no NPU nodes: none of the 1 node(s) has aliyun.com/npu capacity "
        "(is the kubenpu device plugin running on them?)\n"
    )
    out = runner.invoke(cli.app, ["run", "job", "--image", "img", "--npu", "1"])
    assert out.exit_code == 1
    assert "no NPU nodes" in out.stderr
    assert fake.created == []


def test_pods_namespace_and_all(fake: type[FakeCluster]) -> None:
    out = runner.invoke(cli.app, ["pods", "-n", "team-a"])
    assert out.stdout.splitlines() == [
        "NAME      NODE     PHASE     NPUS   DEVICES        SHARES",
        "waiting   <none>   Pending   4      <unrecorded>   <none>",
    ]
    out = runner.invoke(cli.app, ["pods", "-A"])
    assert out.stdout.splitlines()[0].startswith("NAMESPACE")
    assert len(out.stdout.splitlines()) == 8
    out = runner.invoke(cli.app, ["pods", "-n", "nobody"])
    assert out.exit_code == 0
    assert out.stderr == "No pods asking for NPUs in namespace nobody.\n"


def test_secret_create_reads_the_password_from_stdin(fake: type[FakeCluster]) -> None:
    args = ["secret", "create", "regsecret", "--server", "npu-registry.example.com"]
    args += ["--username", "npu-user", "--password-stdin", "-n", "team-a"]
    out = runner.invoke(cli.app, args, input="s3cret pass\n")
    assert out.exit_code == 0, out.output
    assert out.stdout == "secret/regsecret created\n"
    assert "s3cret" not in out.output
    kind, namespace, body = fake.created[0]
    assert (kind, namespace, body["type"]) == ("secret", "team-a", "kubernetes.io/dockerconfigjson")
    config = json.loads(base64.b64decode(body["data"][".dockerconfigjson"]))
    assert config == {
        "auths": {
            "npu-registry.example.com": {
                "username": "npu-user",
                "password": "s3cret pass",
                "auth": base64.b64encode(b"npu-user:s3cret pass").decode(),
            }
        }
    }


def test_secret_create_refuses_without_password_stdin(fake: type[FakeCluster]) -> None:
    args = ["secret", "create", "s", "--server", "r", "--username", "u"]
    out = runner.invoke(cli.app, args)
    assert out.exit_code == 2
    assert out.stderr.startswith("error: pass --password-stdin")
    out = runner.invoke(cli.app, [*args, "--password-stdin"], input="\n")
    assert out.exit_code == 2
    assert "empty" in out.stderr


def test_run_dry_run_prints_the_seed_pod(fake: type[FakeCluster]) -> None:
    args = ["run", "test-npu-pod", "--image", "npu-registry.example.com/demo/npu-resnet50:1.0"]
    args += [
        "--npu",
        "1",
        "--pull-secret",
        "regsecret",
        "--dry-run",
        "--",
        "python3",
        "/app/infer.py",
    ]
    out = runner.invoke(cli.app, args)
    assert out.exit_code == 0, out.output
    assert yaml.safe_load(out.stdout) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "test-npu-pod"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "test-npu-pod",
                    "image": "npu-registry.example.com/demo/npu-resnet50:1.0",
                    "resources": {"limits": {"aliyun.com/npu": "1"}},
                    "command": ["python3", "/app/infer.py"],
                }
            ],
            "imagePullSecrets": [{"name": "regsecret"}],
        },
    }
    assert fake.created == []
    out = runner.invoke(cli.app, ["run", "j", "--image", "i", "--npu", "0", "--dry-run"])
    assert out.exit_code == 2
    assert out.stderr == "error: --npu: at least 1, got 0\n"


def test_run_creates_the_pod(fake: type[FakeCluster]) -> None:
    out = runner.invoke(cli.app, ["run", "job", "--image", "img", "--npu", "2", "-n", "team-a"])
    assert out.exit_code == 0, out.output
    assert out.stdout == "pod/job created\n"
    assert fake.created[0][:2] == ("pod", "team-a")


def test_unreachable_cluster_and_bad_kubeconfig(tmp_path: Path) -> None:
    """The real client against a port nobody listens on: one line, no traceback."""
    port = processes.free_port()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "x"}}],
        "current-context": "dev",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    out = runner.invoke(cli.app, ["nodes", "--kubeconfig", str(path)])
    assert out.exit_code == 1
    assert out.stderr == (
        f"error: cannot reach the cluster at https://127.0.0.1:{port} (connection refused); "
        "check --kubeconfig and --context\n"
    )
    out = runner.invoke(cli.app, ["pods", "--kubeconfig", str(path), "--context", "nope"])
    assert out.exit_code == 2
    assert out.stderr == "error: kubeconfig: no context 'nope'\n"
    out = runner.invoke(cli.app, ["pods", "--kubeconfig", str(tmp_path / "missing")])
    assert out.exit_code == 2
    assert out.stderr.startswith("error: kubeconfig: ")
