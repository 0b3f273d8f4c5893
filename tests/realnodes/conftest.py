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
from kubernetes import client as k8s

from kubenpu.devcluster import images, workload_images
from kubenpu.devcluster.cluster import ClusterSpec, up

NPUS_PER_NODE = 4
NPU_NODES = ("npu-node-1", "npu-node-2")
#: The npu-check image the real-node tests run (npu-check prints env, devices, record).
NPU_CHECK_IMAGE = "npu-registry.example.com/demo/npu-check:0.1.0"
#: The :func:`dra` cluster's nodes: the device plugin's, and the DRA driver's.
DRA_DP_NODE, DRA_NODE = "npu-node-1", "npu-node-2"


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


def push_resnet50(cluster: Cluster) -> str:
    """The seed's training image (examples/resnet50) in ``cluster``'s private registry, as
    examples/test-npu-pod.yaml names it. Built here when the cache lacks it; pushed again
    (a no-op for the blobs) in case ``up`` did not push it with the other examples."""
    (image,) = images.build(["resnet50"])
    cluster.dev.push_image(
        image.path, workload_images.REGISTRY_REPOSITORY, workload_images.REGISTRY_TAG
    )
    return workload_images.registry_reference()


def create_regsecret(cluster: Cluster) -> str:
    """The seed's ``kubectl create secret docker-registry regsecret``, from the dev
    cluster's registry credentials (one there already is replaced); kubectl's answer."""
    creds = cluster.dev.registry_credentials()
    assert creds is not None
    cluster.kubectl("delete", "secret", "regsecret", "--ignore-not-found")
    return cluster.kubectl(
        "create",
        "secret",
        "docker-registry",
        "regsecret",
        f"--docker-server={creds['server']}",
        f"--docker-username={creds['username']}",
        f"--docker-password={creds['password']}",
    )


@pytest.fixture(scope="session")
def resnet50(real: Cluster) -> str:
    """The seed's training image in the session cluster's registry (:func:`push_resnet50`)."""
    return push_resnet50(real)


@pytest.fixture
def regsecret(real: Cluster) -> Iterator[str]:
    """The seed's ``regsecret`` (:func:`create_regsecret`); deleted afterwards."""
    yield create_regsecret(real)
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


@pytest.fixture(scope="module")
def dra() -> Iterator[Cluster]:
    """A cluster with one device-plugin node (:data:`DRA_DP_NODE`) and one DRA node
    (:data:`DRA_NODE`), two NPUs each, with ``regsecret``; one per test module."""
    require_root()
    state_dir = Path(tempfile.mkdtemp(prefix="kubenpu-dra-"))
    dev = up(state_dir, ClusterSpec(npu_nodes=2, npus_per_node=2, dra_nodes=1))
    try:
        cluster = Cluster(dev)
        create_regsecret(cluster)
        yield cluster
    finally:
        dev.down()


def custom_objects(cluster: Cluster) -> k8s.CustomObjectsApi:
    """The cluster's custom-objects API (ResourceSlices, claims, DeviceClasses)."""
    return k8s.CustomObjectsApi(cluster.api.api_client)


def npu_check_pod(
    name: str, *, limits: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A pod running npu-check (``args``), with ``limits`` or ``claims`` (names of its
    ``resourceClaims``) on its container; the rest of ``spec`` as given."""
    container: dict[str, Any] = {
        "name": "main",
        "image": NPU_CHECK_IMAGE,
        "args": spec.pop("args", []),
    }
    if limits:
        container["resources"] = {"limits": limits}
    if "claims" in spec:
        container["resources"] = {"claims": [{"name": c} for c in spec.pop("claims")]}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "imagePullSecrets": [{"name": "regsecret"}],
            "containers": [container],
            **spec,
        },
    }
