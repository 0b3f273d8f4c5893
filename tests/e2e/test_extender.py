"""The scheduler extender on a real control plane: 60 mixed NPU pods onto 4 NPU nodes.

kube-scheduler (unmodified) calls ``kubenpu scheduler`` for every NPU pod; the node agents
admit the pods through the real device plugins. Checked from both ends: the placement
records on the pods and what the node agents got from the plugins' Allocate.
"""

from __future__ import annotations

import math
import random
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.support import NAMESPACE, Cluster, wait_for
from kubenpu import names
from kubenpu.devcluster.cluster import ClusterSpec, up
from kubenpu.devcluster.extender import PROCESS as EXTENDER

pytestmark = pytest.mark.e2e

NODES = [f"npu-node-{i}" for i in range(1, 5)]
NPUS = 8
OTHER_MODEL = "ascend-910"
FULL = 1000


@pytest.fixture(scope="module")
def npu4() -> Iterator[Cluster]:
    """Four NPU nodes with 8 NPUs each (groups npu-0..3 and npu-4..7); npu-node-4 is
    relabelled to another model."""
    state_dir = Path(tempfile.mkdtemp(prefix="kubenpu-x-"))
    dev = up(
        state_dir, ClusterSpec(npu_nodes=4, npus_per_node=NPUS, node_kind="agent"), webhook=False
    )
    try:
        cluster = Cluster(dev)
        cluster.kubectl(
            "label", "node", NODES[3], f"{names.LABEL_NPU_MODEL}={OTHER_MODEL}", "--overwrite"
        )
        yield cluster
    finally:
        dev.down()


def manifest(name: str, resources: dict[str, str], model: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "main",
                "image": "npu-registry.example.com/demo/npu-job:1.0",
                "resources": {"limits": {"cpu": "500m", "memory": "1Gi", **resources}},
            }
        ],
    }
    if model:
        spec["nodeSelector"] = {names.LABEL_NPU_MODEL: model}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def workload() -> list[dict[str, Any]]:
    """60 pods, 31 of the 32 devices: whole (1, 2, 4 NPUs), model-bound, shares of 25/50%."""
    npu, core = names.RESOURCE_NPU, names.RESOURCE_NPU_CORE
    pods = [manifest(f"whole1-{i}", {npu: "1"}) for i in range(6)]
    pods += [manifest(f"whole2-{i}", {npu: "2"}) for i in range(2)]
    pods += [manifest("whole4-0", {npu: "4"})]
    pods += [manifest(f"model-{i}", {npu: "1"}, OTHER_MODEL) for i in range(3)]
    pods += [manifest(f"share50-{i}", {core: "50"}) for i in range(8)]
    pods += [manifest(f"share25-{i}", {core: "25"}) for i in range(40)]
    random.Random(6).shuffle(pods)
    return pods


def apply(cluster: Cluster, pods: list[dict[str, Any]]) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(pods))


def pods_by_name(cluster: Cluster) -> dict[str, dict[str, Any]]:
    items = cluster.get(cluster.api.list_namespaced_pod, NAMESPACE)["items"]
    return {p["metadata"]["name"]: p for p in items}


def all_running(cluster: Cluster, wanted: set[str]) -> dict[str, dict[str, Any]] | None:
    pods = pods_by_name(cluster)
    ok = all(pods.get(n, {}).get("status", {}).get("phase") == "Running" for n in wanted)
    return pods if ok else None


def records(pods: dict[str, dict[str, Any]]) -> dict[str, tuple[str, list[str], list[int]]]:
    """pod -> (node, devices, shares) from the placement annotations."""
    out = {}
    for name, pod in pods.items():
        ann = pod["metadata"].get("annotations") or {}
        if names.ANNOTATION_NODE in ann:
            out[name] = (
                ann[names.ANNOTATION_NODE],
                ann[names.ANNOTATION_DEVICES].split(","),
                [int(s) for s in ann[names.ANNOTATION_SHARES].split(",")],
            )
    return out


def check_no_overcommit(cluster: Cluster, pods: dict[str, dict[str, Any]]) -> None:
    """From the records and from the node agents' Allocate answers."""
    used: dict[tuple[str, str], int] = defaultdict(int)
    for name, (node, devices, shares) in records(pods).items():
        if pods[name]["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        assert node == pods[name]["spec"].get("nodeName", node), name
        for device, share in zip(devices, shares, strict=True):
            used[(node, device)] += share
    assert max(used.values(), default=0) <= FULL, {k: v for k, v in used.items() if v > FULL}
    for node in NODES:
        checkpoint = cluster.dev.checkpoint(node)
        got: dict[str, int] = defaultdict(int)
        for entry in checkpoint["pods"].values():
            for per in entry["containers"].values():
                for resource, alloc in per.items():
                    answer = alloc["response"]["annotations"]
                    if resource == names.RESOURCE_NPU:
                        for device in alloc["devices"]:
                            got[device] += FULL
                    elif resource == names.RESOURCE_NPU_CORE:
                        got[answer[names.ANNOTATION_DEVICES]] += int(
                            answer[names.ANNOTATION_SHARES]
                        )
        assert max(got.values(), default=0) <= FULL, (node, dict(got))


def check_allocate_matches_records(cluster: Cluster, pods: dict[str, dict[str, Any]]) -> int:
    """Every admitted container got exactly the devices recorded on its pod."""
    recorded = records(pods)
    checked = 0
    for node in NODES:
        for entry in cluster.dev.checkpoint(node)["pods"].values():
            name = entry["name"]
            rec_node, devices, _ = recorded[name]
            assert rec_node == node, name
            for per in entry["containers"].values():
                for resource, alloc in per.items():
                    answer = alloc["response"]["annotations"]
                    if resource == names.RESOURCE_NPU:
                        assert sorted(alloc["devices"]) == sorted(devices), name
                    assert answer[names.ANNOTATION_DEVICES].split(",") == devices, name
                    checked += 1
    return checked


def test_sixty_mixed_pods(npu4: Cluster) -> None:
    cluster = npu4
    pods = workload()
    apply(cluster, pods)
    wanted = {p["metadata"]["name"] for p in pods}
    running = wait_for("60 pods Running", lambda: all_running(cluster, wanted), timeout=180)
    recorded = records(running)
    assert set(recorded) == wanted

    check_no_overcommit(cluster, running)
    assert check_allocate_matches_records(cluster, running) == 60
    # Model constraint: only the relabelled node.
    for i in range(3):
        assert recorded[f"model-{i}"][0] == NODES[3]
    # Topology: the 4-NPU pod sits in one interconnect group.
    _, quad, _ = recorded["whole4-0"]
    assert quad in (
        [f"npu-{i}" for i in range(4)],
        [f"npu-{i}" for i in range(4, 8)],
    ), quad
    # Shares packed: 25% and 50% shares tile devices exactly, so the policy uses no more
    # devices than their total needs, and no device holds a share and a whole pod.
    shared: dict[tuple[str, str], int] = defaultdict(int)
    whole: set[tuple[str, str]] = set()
    for name, (node, devices, shares) in recorded.items():
        if name.startswith("share"):
            shared[(node, devices[0])] += shares[0]
        else:
            whole.update((node, d) for d in devices)
    total = sum(shared.values())
    assert len(shared) == math.ceil(total / FULL), dict(shared)
    assert not whole & set(shared)

    # Deleting pods frees their devices for the next ones: two 4-NPU pods cannot fit now
    # (one device is free), and run once enough whole pods are gone.
    late = [manifest(f"late4-{i}", {names.RESOURCE_NPU: "4"}) for i in range(2)]
    apply(cluster, late)
    messages = wait_for("FailedScheduling", lambda: cluster.scheduling_failures("late4-0"))
    assert any(names.RESOURCE_NPU in m for m in messages), messages
    victims = ["whole4-0", "whole2-0", "whole2-1", *(f"whole1-{i}" for i in range(6))]
    for name in victims:
        cluster.api.delete_namespaced_pod(name, NAMESPACE)
    after = wait_for(
        "late pods Running",
        lambda: all_running(cluster, {"late4-0", "late4-1"}),
        timeout=60,
    )
    check_no_overcommit(cluster, after)
    for name in ("late4-0", "late4-1"):
        assert len(records(after)[name][1]) == 4
    cluster.delete_all_pods()


def test_extender_killed_mid_run_loses_nothing(npu4: Cluster) -> None:
    cluster = npu4
    first = [manifest(f"early-{i}", {names.RESOURCE_NPU_CORE: "50"}) for i in range(10)]
    first += [manifest(f"early-w{i}", {names.RESOURCE_NPU: "1"}) for i in range(6)]
    apply(cluster, first)
    wait_for("early pods Running", lambda: all_running(cluster, _names(first)), timeout=60)
    before = records(pods_by_name(cluster))

    # A burst, and the extender killed while it binds it.
    burst = [manifest(f"burst-{i}", {names.RESOURCE_NPU_CORE: "25"}) for i in range(28)]
    burst += [manifest(f"burst-w{i}", {names.RESOURCE_NPU: "2"}) for i in range(4)]
    apply(cluster, burst)
    wait_for(
        "a few burst pods bound",
        lambda: sum(n.startswith("burst") for n in records(pods_by_name(cluster))) >= 3,
        timeout=60,
    )
    cluster.dev.stop_process(EXTENDER, kill=True)
    bound = {n for n, p in pods_by_name(cluster).items() if p["spec"].get("nodeName")}
    assert not _names(burst) <= bound, "the burst was bound before the kill; make it bigger"
    cluster.dev.start_process(EXTENDER)

    everyone = _names(first) | _names(burst)
    pods = wait_for("every pod Running", lambda: all_running(cluster, everyone), timeout=180)
    after = records(pods)
    # No lost placement: what was recorded before the kill is still what the pods hold.
    assert {n: after[n] for n in before} == before
    check_no_overcommit(cluster, pods)
    assert check_allocate_matches_records(cluster, pods) == len(everyone)
    cluster.delete_all_pods()


def _names(pods: list[dict[str, Any]]) -> set[str]:
    return {p["metadata"]["name"] for p in pods}


def test_scheduler_metrics_and_readiness(npu4: Cluster) -> None:
    import http.client

    port = npu4.dev.ports.extender
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/readyz")
    assert conn.getresponse().read() == b"ok\n"
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    assert 'kubenpu_extender_decisions_total{result="ok",verb="bind"}' in text
    assert 'kubenpu_extender_cache_objects{kind="nodes"} 4.0' in text
