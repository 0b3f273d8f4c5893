"""The README's commands through the real ``kubenpu`` and ``kubectl``, as a person runs them.

``kubenpu dev-cluster up --nodes 2 --npus 4 --kubeconfig PATH``, the seed's secret, pod and
logs, ``status -o json`` and ``down``, which must leave no process, mount, namespace, link
or port behind. The default state directory is used, moved into a temporary cache by
KUBENPU_CACHE_DIR so that a developer's own dev cluster is never touched; the cache links
to the binaries and images already built.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.support import MANIFESTS, wait_for

from kubenpu import names
from kubenpu.devcluster import binaries, processes
from kubenpu.devcluster.cluster import DevCluster
from kubenpu.devcluster.images import images_dir
from realnodes.conftest import require_root

pytestmark = pytest.mark.realnodes

KUBENPU = str(Path(sys.executable).parent / "kubenpu")


@pytest.fixture
def cache() -> Iterator[Path]:
    """A private kubenpu cache holding (links to) the built binaries and images."""
    require_root()
    root = Path(tempfile.mkdtemp(prefix="kubenpu-cli-"))
    for built in (
        binaries.ensure_built().parent,
        binaries.ensure_node_built().parent,
        images_dir(),
    ):
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
        [KUBENPU, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _leftovers(state_dir: Path, slot: int) -> list[str]:
    """Mounts, namespaces, links and processes of the dev cluster still on the machine.

    Only this cluster's: other clusters (a developer's, another test's) may be running."""
    ours = f"knpu{slot}"
    found = [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if str(state_dir) in line or f"/{ours}-" in line
    ]
    netns = Path("/run/netns")
    found += [f"netns {n.name}" for n in netns.glob(f"{ours}-*")] if netns.is_dir() else []
    found += [
        f"link {n.name}"
        for n in Path("/sys/class/net").iterdir()
        if n.name == ours or n.name.startswith(f"{ours}n")
    ]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(state_dir).encode() in cmdline:
                found.append(f"process {proc.name}: {cmdline[:120]!r}")
    return found


def test_up_seed_walkthrough_status_down(cache: Path, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "dev.kubeconfig"
    up = kubenpu(
        cache, "dev-cluster", "up", "--nodes", "2", "--npus", "4", "--kubeconfig", str(kubeconfig)
    )
    assert up.returncode == 0, up.stderr
    assert f"kubeconfig: {kubeconfig}" in up.stdout
    assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"

    kubectl_binary = binaries.kubectl()
    assert kubectl_binary, "no kubectl built by hack/build-control-plane.sh nor on PATH"

    def kubectl(*args: str) -> str:
        return subprocess.run(
            [kubectl_binary, "--kubeconfig", str(kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    plain = kubectl("get", "nodes")
    assert [line.split()[:2] for line in plain.splitlines()[1:]] == [
        ["npu-node-1", "Ready"],
        ["npu-node-2", "Ready"],
    ]
    listing = json.loads(kubectl("get", "nodes", "-o", "json"))
    assert [n["status"]["capacity"][names.RESOURCE_NPU] for n in listing["items"]] == ["4", "4"]

    again = kubenpu(cache, "dev-cluster", "up")
    assert again.returncode == 2
    assert "already running" in again.stderr

    status = kubenpu(cache, "dev-cluster", "status", "-o", "json")
    assert status.returncode == 0, status.stdout
    report = json.loads(status.stdout)
    assert report["healthy"] is True
    per_node = ("containerd", "kubelet", "kube-proxy", "device-plugin")
    assert {p["name"] for p in report["processes"]} == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "relay",
        "registry",
        "webhook",
        "kubenpu-scheduler",
        *(f"{p}/npu-node-{i}" for p in per_node for i in (1, 2)),
    }
    assert [
        (n["name"], n["kubelet_version"], n["container_runtime_version"]) for n in report["nodes"]
    ] == [
        (
            f"npu-node-{i}",
            binaries.KUBERNETES_VERSION,
            "containerd://" + binaries.CONTAINERD_VERSION.removeprefix("v"),
        )
        for i in (1, 2)
    ]
    registry = report["registry"]
    assert registry["server"] == "npu-registry.example.com"
    assert registry["username"] == "npu-user" and registry["password"]

    # The seed's commands, as the README gives them.
    kubectl(
        "create",
        "secret",
        "docker-registry",
        "regsecret",
        f"--docker-server={registry['server']}",
        f"--docker-username={registry['username']}",
        f"--docker-password={registry['password']}",
    )
    kubectl("apply", "-f", str(MANIFESTS / "test-npu-pod.yaml"))
    # The seed's ResNet-50 job: its image pulled, trained and evaluated within 5 minutes.
    wait_for(
        "test-npu-pod Completed",
        lambda: "Completed" in kubectl("get", "po", "test-npu-pod"),
        timeout=300,
    )
    log = kubectl("logs", "test-npu-pod")
    assert "ok 1 device(s)" in log, log
    assert re.search(r"^top-1: \d+\.\d%  top-5: \d+\.\d%  on CPU$", log, re.M), log
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
    assert state.network_slot is not None
    assert not _leftovers(cache / "dev-cluster", state.network_slot)

    after = kubenpu(cache, "dev-cluster", "status")
    assert after.returncode == 1
    assert "no dev cluster" in after.stdout
