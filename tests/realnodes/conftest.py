"""Real-node fixtures: one dev cluster of real kubelets per test session.

``kubenpu dev-cluster up --nodes 2 --npus 4`` as the README runs it: two NPU nodes, each a
kubelet v1.37 with its own containerd and runc in namespaces of its own, the private
registry holding the example images. Real nodes need root; a developer without it gets
these tests skipped with the reason, CI (which runs as root) gets a failure instead.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.support import Cluster, wait_for

from kubenpu.devcluster import images, workload_images
from kubenpu.devcluster.cluster import ClusterSpec, up

NPUS_PER_NODE = 4
NPU_NODES = ("npu-node-1", "npu-node-2")


def require_root() -> None:
    """Skip without root (a developer's machine); fail without it under CI, which has it."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("real-node tests need root, and CI runs as root")
        pytest.skip("real nodes need root (network and mount namespaces)")


def wait_phase(cluster: Cluster, name: str, *phases: str, timeout: float = 180) -> dict[str, Any]:
    """Pod ``name`` once its phase is one of ``phases``."""

    def reached() -> dict[str, Any] | None:
        pod = cluster.pod(name)
        return pod if pod and pod["status"].get("phase") in phases else None

    return wait_for(f"pod {name} in {phases}", reached, timeout=timeout)


def npu_check_facts(log: str) -> dict[str, list[str]]:
    """npu-check's lines, by kind: env, device, record, ok/error."""
    facts: dict[str, list[str]] = {}
    for line in log.splitlines():
        kind, _, value = line.partition(" ")
        facts.setdefault(kind, []).append(value)
    return facts


@pytest.fixture(scope="session")
def real() -> Iterator[Cluster]:
    """A running dev cluster of two real NPU nodes with four NPUs each."""
    require_root()
    state_dir = Path(tempfile.mkdtemp(prefix="kubenpu-real-"))
    dev = up(state_dir, ClusterSpec(npu_nodes=2, npus_per_node=NPUS_PER_NODE))
    try:
        yield Cluster(dev)
    finally:
        dev.down()


@pytest.fixture(scope="session")
def resnet50(real: Cluster) -> str:
    """The seed's training image (examples/resnet50) in the private registry, as
    examples/test-npu-pod.yaml names it. Built here when the cache lacks it; pushed again
    (a no-op for the blobs) in case ``up`` did not push it with the other examples."""
    (image,) = images.build(["resnet50"])
    real.dev.push_image(
        image.path, workload_images.REGISTRY_REPOSITORY, workload_images.REGISTRY_TAG
    )
    return workload_images.registry_reference()


@pytest.fixture
def regsecret(real: Cluster) -> Iterator[str]:
    """The seed's ``kubectl create secret docker-registry regsecret``, from the dev
    cluster's registry credentials; deleted afterwards."""
    creds = real.dev.registry_credentials()
    assert creds is not None
    real.kubectl("delete", "secret", "regsecret", "--ignore-not-found")
    out = real.kubectl(
        "create",
        "secret",
        "docker-registry",
        "regsecret",
        f"--docker-server={creds['server']}",
        f"--docker-username={creds['username']}",
        f"--docker-password={creds['password']}",
    )
    yield out
    real.kubectl("delete", "secret", "regsecret", "--ignore-not-found")


@pytest.fixture
def clean(real: Cluster) -> Iterator[Cluster]:
    """The cluster, left as it was found: every process up, no pods, every NPU free."""
    yield real
    for status in real.dev.status():
        if not status.running:
            real.dev.start_process(status.name)
    for node in real.dev.npu_nodes:
        for marker in node.health_dir.glob("unhealthy-*"):
            marker.unlink()
    real.kubectl("delete", "pods", "--all", "--wait=false")
    wait_for(
        "all pods gone",
        lambda: not real.get(real.api.list_namespaced_pod, "default")["items"],
        timeout=120,
    )
    for node in NPU_NODES:
        wait_for(
            f"{node} allocatable back to {NPUS_PER_NODE}",
            lambda node=node: real.allocatable_npus(node) == NPUS_PER_NODE,
            timeout=60,
        )
