"""Gangs on the real control plane: the Workload API's PodGroup with a gang policy,
kube-scheduler's GangScheduling plugin and the extender's plans together.

Two NPU nodes with 2 NPUs each (agent mode), GenericWorkload on (``--workloads``). A
sampler reads the placement records all along: no device is ever over 100 percent.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.support import NAMESPACE, Cluster, overcommitted, records, wait_for
from kubenpu import names
from kubenpu.devcluster.cluster import ClusterSpec, up
from kubenpu.kubectl_plugin import views

pytestmark = pytest.mark.e2e

#: How long a gang that cannot start is watched for a half-bind.
WATCH_S = 15.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Two NPU nodes with 2 NPUs each, the Workload API served; sampled for over-commit."""
    state_dir = Path(tempfile.mkdtemp(prefix="kubenpu-g-"))
    spec = ClusterSpec(npu_nodes=2, npus_per_node=2, node_kind="agent", workloads=True)
    dev = up(state_dir, spec, webhook=False)
    problems: list[dict[tuple[str, str], int]] = []
    stop = threading.Event()
    cluster = Cluster(dev)

    def sample() -> None:
        while not stop.wait(0.2):
            try:
                bad = overcommitted(records(cluster))
            except Exception:  # a transient API error: the next sample reads again
                continue
            if bad:
                problems.append(bad)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield cluster
    finally:
        stop.set()
        thread.join()
        dev.down()
    assert not problems, problems[:3]


def pod_group(name: str, min_count: int, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1beta1",
        "kind": "PodGroup",
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations},
        "spec": {"schedulingPolicy": {"gang": {"minCount": min_count}}},
    }


def npu_pod(name: str, group: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "main",
                "image": "npu-registry.example.com/demo/npu-job:1.0",
                "resources": {"limits": {"cpu": "1", "memory": "1Gi", names.RESOURCE_NPU: "1"}},
            }
        ],
    }
    if group:
        spec["schedulingGroup"] = {"podGroupName": group}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def bound(cluster: Cluster, prefix: str) -> dict[str, str]:
    """Pods named ``prefix*`` that are bound, with their node."""
    return {
        name: entry["pod"]["spec"]["nodeName"]
        for name, entry in records(cluster).items()
        if name.startswith(prefix) and entry["pod"]["spec"].get("nodeName")
    }


def test_a_gang_of_four_binds_none_on_three_free_npus_and_all_four_once_one_frees(
    cluster: Cluster,
) -> None:
    cluster.api.create_namespaced_pod(NAMESPACE, npu_pod("filler"))
    cluster.wait_running("filler")
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(pod_group("job", 4)))
    for i in range(4):
        cluster.api.create_namespaced_pod(NAMESPACE, npu_pod(f"job-{i}", "job"))

    deadline = time.monotonic() + WATCH_S
    while time.monotonic() < deadline:
        assert bound(cluster, "job-") == {}, "a gang that cannot start was bound in part"
        time.sleep(0.5)
    assert all(records(cluster)[f"job-{i}"]["record"] is None for i in range(4))

    # Why they wait is on the pods: the extender's reason for the member it was asked
    # about, kube-scheduler's minCount for the others; `kubectl npu pods` shows both.
    def said() -> list[str]:
        listed = cluster.get(cluster.api.list_namespaced_pod, NAMESPACE)["items"]
        return [r.waiting for r in views.npu_pods(listed) if r.name.startswith("job-")]

    reasons = wait_for("why the members wait", lambda: all(said()) and said(), timeout=30)
    assert any("gang default/job: 4 members (min 4) needing 4 whole NPUs" in r for r in reasons)
    assert all("gang" in r or "minCount (4)" in r for r in reasons), reasons

    cluster.api.delete_namespaced_pod("filler", NAMESPACE)
    for i in range(4):
        cluster.wait_running(f"job-{i}", timeout=120)
    placed = records(cluster)
    devices = {
        (placed[f"job-{i}"]["record"][0], placed[f"job-{i}"]["record"][1][0]) for i in range(4)
    }
    assert len(devices) == 4  # four distinct NPUs, two per node
    cluster.delete_all_pods()


def test_a_gang_that_prefers_one_node_gets_one_node(cluster: Cluster) -> None:
    # Empty cluster, a gang of two that prefers one domain: both on the same node, where
    # kube-scheduler's own scoring (least allocated) would spread them.
    group = pod_group("pair", 2, **{names.ANNOTATION_GANG_TOPOLOGY: "prefer"})
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(group))
    for i in range(2):
        cluster.api.create_namespaced_pod(NAMESPACE, npu_pod(f"pair-{i}", "pair"))
    for i in range(2):
        cluster.wait_running(f"pair-{i}", timeout=90)
    assert len(set(bound(cluster, "pair-").values())) == 1
    cluster.delete_all_pods()
