"""``kubenpu dev-cluster up|status|down`` through the real command, as a person runs it.

The default state directory is used (as in the README's commands), moved into a temporary
cache by KUBENPU_CACHE_DIR so that a developer's own dev cluster is never touched; the
cache links to the control-plane binaries already built.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubenpu import names
from kubenpu.devcluster import binaries, processes
from kubenpu.devcluster.cluster import DevCluster

pytestmark = pytest.mark.e2e

KUBENPU = str(Path(sys.executable).parent / "kubenpu")


@pytest.fixture
def cache() -> Iterator[Path]:
    """A private kubenpu cache holding (a link to) the built control plane."""
    root = Path(tempfile.mkdtemp(prefix="kubenpu-cli-"))
    built = binaries.ensure_built().parent
    (root / built.name).symlink_to(built)
    yield root
    state = DevCluster.load(root / "dev-cluster")
    if state is not None:  # a failed test must not leave a cluster running
        state.down()
    shutil.rmtree(root, ignore_errors=True)


def kubenpu(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``kubenpu`` command with the private cache."""
    env = {**os.environ, "KUBENPU_CACHE_DIR": str(cache)}
    return subprocess.run(
        [KUBENPU, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


def test_up_kubectl_status_down(cache: Path, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "dev.kubeconfig"
    up = kubenpu(
        cache, "dev-cluster", "up", "--nodes", "2", "--npus", "4", "--kubeconfig", str(kubeconfig)
    )
    assert up.returncode == 0, up.stderr
    assert f"kubeconfig: {kubeconfig}" in up.stdout
    assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"

    kubectl = binaries.kubectl()
    assert kubectl, "no kubectl on PATH nor built by hack/build-control-plane.sh"
    plain = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), "get", "nodes"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert [line.split()[:2] for line in plain.splitlines()[1:]] == [
        ["npu-node-1", "Ready"],
        ["npu-node-2", "Ready"],
    ]
    listing = json.loads(
        subprocess.run(
            [kubectl, "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    assert [n["status"]["capacity"][names.RESOURCE_NPU] for n in listing["items"]] == ["4", "4"]

    again = kubenpu(cache, "dev-cluster", "up")
    assert again.returncode == 2
    assert "already running" in again.stderr

    status = kubenpu(cache, "dev-cluster", "status", "--json")
    assert status.returncode == 0, status.stdout
    report = json.loads(status.stdout)
    assert report["healthy"] is True
    assert {p["name"] for p in report["processes"]} == {
        "etcd",
        "kube-apiserver",
        "kube-scheduler",
        "node-agent/npu-node-1",
        "device-plugin/npu-node-1",
        "node-agent/npu-node-2",
        "device-plugin/npu-node-2",
        "webhook",
        "kubenpu-scheduler",
    }
    state = DevCluster.load(cache / "dev-cluster")
    assert state is not None
    records = list(state.processes.values())
    ports = [
        state.ports.etcd_client,
        state.ports.etcd_peer,
        state.ports.apiserver,
        state.ports.scheduler,
        state.ports.webhook,
    ]

    down = kubenpu(cache, "dev-cluster", "down")
    assert down.returncode == 0, down.stderr
    assert not [r.name for r in records if processes.alive(r)]
    assert not [p for p in ports if processes.port_in_use(p)]
    assert not (cache / "dev-cluster").exists()
    assert not kubeconfig.exists()

    after = kubenpu(cache, "dev-cluster", "status")
    assert after.returncode == 1
    assert "no dev cluster" in after.stdout
