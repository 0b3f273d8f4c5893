"""``kubectl npu``: the real kubectl finds the ``kubectl-npu`` plugin on PATH and runs it
against the dev cluster."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from e2e.support import NAMESPACE, Cluster, wait_for
from kubenpu import names
from kubenpu.devcluster import processes

pytestmark = pytest.mark.e2e

#: The virtualenv's bin holds kubectl-npu; kubectl looks for plugins on PATH.
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def kubectl_npu(
    cluster: Cluster, *args: str, stdin: str | None = None, kubeconfig: str | None = None
) -> subprocess.CompletedProcess[str]:
    assert cluster.kubectl_binary
    config = kubeconfig or str(cluster.dev.kubeconfig)
    return subprocess.run(
        [cluster.kubectl_binary, "npu", *args, "--kubeconfig", config],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PATH": PATH},
    )


def test_nodes_pods_run_and_secret(clean: Cluster) -> None:
    cluster = clean
    nodes = kubectl_npu(cluster, "nodes")
    assert nodes.returncode == 0, nodes.stderr
    lines = nodes.stdout.splitlines()
    assert lines[0].split() == [
        "NODE", "MODEL", "TOTAL", "ALLOCATED", "SHARED", "SHARED-CORE", "UNHEALTHY", "FREE"
    ]  # fmt: skip
    assert [line.split() for line in lines[1:]] == [
        ["npu-node-1", "hanguang-800", "4", "0", "0", "0%", "0", "4"],
        ["npu-node-2", "hanguang-800", "4", "0", "0", "0%", "0", "4"],
    ]

    secret = kubectl_npu(
        cluster,
        "secret", "create", "npu-pull", "--server", "npu-registry.example.com",
        "--username", "npu-user", "--password-stdin",
        stdin="not-a-real-password\n",
    )  # fmt: skip
    assert secret.returncode == 0, secret.stderr
    assert secret.stdout == "secret/npu-pull created\n"
    stored = json.loads(cluster.kubectl("get", "secret", "npu-pull", "-o", "json"))
    assert stored["type"] == "kubernetes.io/dockerconfigjson"
    auth = json.loads(base64.b64decode(stored["data"][".dockerconfigjson"]))
    assert auth["auths"]["npu-registry.example.com"]["password"] == "not-a-real-password"
    cluster.kubectl("delete", "secret", "npu-pull")

    image = "npu-registry.example.com/demo/npu-resnet50:1.0"
    dry = kubectl_npu(cluster, "run", "npu-job", "--image", image, "--npu", "2", "--dry-run")
    assert yaml.safe_load(dry.stdout)["spec"]["containers"][0]["resources"] == {
        "limits": {names.RESOURCE_NPU: "2"}
    }
    assert cluster.pod("npu-job") is None
    run = kubectl_npu(
        cluster, "run", "npu-job", "--image", image, "--npu", "2", "--pull-secret", "regsecret"
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "pod/npu-job created\n"
    node = cluster.wait_running("npu-job")["spec"]["nodeName"]

    pods = json.loads(kubectl_npu(cluster, "pods", "-o", "json", "-n", NAMESPACE).stdout)
    assert [(p["name"], p["node"], p["phase"], p["npus"]) for p in pods["items"]] == [
        ("npu-job", node, "Running", 2)
    ]
    everywhere = kubectl_npu(cluster, "pods", "-A", "--context", "kubenpu-dev").stdout
    assert everywhere.splitlines()[1].split()[:5] == [NAMESPACE, "npu-job", node, "Running", "2"]
    rows = json.loads(kubectl_npu(cluster, "nodes", "-o", "json").stdout)["items"]
    held = {r["name"]: (r["allocated"], r["free"], r["pods"]) for r in rows}
    assert held[node] == (2, 2, [f"{NAMESPACE}/npu-job"])

    # A device turned unhealthy shows as soon as the node reports it.
    cluster.dev.set_device_health("npu-node-1", "npu-3", healthy=False)
    wait_for("npu-node-1 allocatable 3", lambda: cluster.allocatable_npus("npu-node-1") == 3)
    rows = json.loads(kubectl_npu(cluster, "nodes", "-o", "json").stdout)["items"]
    assert rows[0]["name"] == "npu-node-1"
    assert rows[0]["unhealthy"] == 1


def test_friendly_errors(cluster: Cluster, tmp_path: Path) -> None:
    refused = kubectl_npu(cluster, "run", "job", "--image", "img", "--npu", "0")
    assert (refused.returncode, refused.stderr) == (2, "error: --npu: at least 1, got 0\n")

    config = yaml.safe_load(cluster.dev.kubeconfig.read_text())
    port = processes.free_port()
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    gone = tmp_path / "gone.kubeconfig"
    gone.write_text(yaml.safe_dump(config))
    down = kubectl_npu(cluster, "nodes", kubeconfig=str(gone))
    assert down.returncode == 1
    assert down.stderr == (
        f"error: cannot reach the cluster at https://127.0.0.1:{port} (connection refused); "
        "check --kubeconfig and --context\n"
    )
