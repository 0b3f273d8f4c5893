"""Preemption on the real control plane: kube-scheduler's own dry run offers nodes, the
extender's ``preempt`` verb answers device-aware victims, kube-scheduler deletes them and
the preemptor runs.

Two NPU nodes with 2 NPUs each (agent mode). Priority classes lowest 10, lower 50, low 100,
mid 200, high 1000. A sampler thread reads the placement records all along: no device is
ever over 100 percent (a victim holds its devices until it is gone).

kube-scheduler only offers nodes where its own counts need an eviction: a whole NPU on a
node whose NPUs hold shares fits by its aliyun.com/npu count, so the first test fills the
nodes' CPU too (docs/preemption.md, "What kube-scheduler offers").
"""

from __future__ import annotations

import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.support import NAMESPACE, Cluster, overcommitted, records
from kubenpu import names
from kubenpu.devcluster.cluster import ClusterSpec, up

pytestmark = pytest.mark.e2e

NODE1, NODE2 = "npu-node-1", "npu-node-2"
PRIORITIES = {"lowest": 10, "lower": 50, "low": 100, "mid": 200, "high": 1000}


@pytest.fixture(scope="module")
def small() -> Iterator[Cluster]:
    """Two NPU nodes with 2 NPUs each, and the priority classes."""
    state_dir = Path(tempfile.mkdtemp(prefix="kubenpu-p-"))
    dev = up(state_dir, ClusterSpec(npu_nodes=2, npus_per_node=2, node_kind="agent"), webhook=False)
    try:
        cluster = Cluster(dev)
        classes = [
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
            }
            for name, value in PRIORITIES.items()
        ]
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(classes))
        yield cluster
    finally:
        dev.down()


@pytest.fixture
def cluster(small: Cluster) -> Iterator[Cluster]:
    """The cluster, sampled for over-commit while the test runs, emptied after."""
    problems: list[dict[tuple[str, str], int]] = []
    samples = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            try:
                bad = overcommitted(records(small))
            except Exception:  # a transient API error: the next sample reads again
                continue
            samples[0] += 1
            if bad:
                problems.append(bad)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield small
    finally:
        stop.set()
        thread.join()
        small.kubectl("delete", "pdb", "--all", "-n", NAMESPACE)
        small.delete_all_pods()
    assert not problems, problems[:3]
    assert samples[0] > 0


def manifest(
    name: str,
    priority: str,
    *,
    npus: int = 0,
    core: int = 0,
    cpu: str = "1",
    node: str = "",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    limits = {"cpu": cpu, "memory": "1Gi"}
    if npus:
        limits[names.RESOURCE_NPU] = str(npus)
    if core:
        limits[names.RESOURCE_NPU_CORE] = str(core)
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "priorityClassName": priority,
        "containers": [
            {
                "name": "main",
                "image": "npu-registry.example.com/demo/npu-job:1.0",
                "resources": {"limits": limits},
            }
        ],
    }
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    meta = {"name": name, "labels": labels or {}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def create_in_order(cluster: Cluster, pods: list[dict[str, Any]]) -> None:
    """One at a time, each Running before the next (the device layout follows the order)."""
    for p in pods:
        cluster.api.create_namespaced_pod(NAMESPACE, p)
        cluster.wait_running(p["metadata"]["name"])


def device_of(pods: dict[str, dict[str, Any]], name: str) -> tuple[str, str]:
    node, devices, _ = pods[name]["record"]
    assert len(devices) == 1, (name, devices)
    return node, devices[0]


def preempt_and_run(cluster: Cluster, pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Create the preemptor; wait until it runs; the live pods then."""
    before = set(records(cluster))
    cluster.api.create_namespaced_pod(NAMESPACE, pod)
    name = pod["metadata"]["name"]
    cluster.wait_running(name, timeout=90)
    after = records(cluster)
    assert name not in before and name in after
    return after


def test_a_whole_npu_evicts_exactly_the_shares_of_one_device(cluster: Cluster) -> None:
    # npu-node-1: four 50% shares (priority lowest), 26 CPU each: its 104 CPU are full.
    # npu-node-2: two whole NPUs (priority low), 52 CPU each: full too. kube-scheduler's
    # own dry run needs one victim per node (CPU; NPU count on node 2) and would take any
    # single share on node 1, which frees no device. The extender answers, per node, the
    # two shares of one device (highest victim priority 10) and one whole pod (100);
    # kube-scheduler picks the lower: node 1.
    fill = [manifest(f"s{i}", "lowest", core=50, cpu="26", node=NODE1) for i in range(4)]
    fill += [manifest(f"w{i}", "low", npus=1, cpu="52", node=NODE2) for i in range(2)]
    create_in_order(cluster, fill)
    layout = records(cluster)
    by_device: dict[tuple[str, str], set[str]] = defaultdict(set)
    for i in range(4):
        by_device[device_of(layout, f"s{i}")].add(f"s{i}")
    assert sorted(len(v) for v in by_device.values()) == [2, 2], dict(by_device)

    after = preempt_and_run(cluster, manifest("big", "high", npus=1))
    gone = set(layout) - set(after)
    node, device = device_of(after, "big")
    assert node == NODE1
    assert gone == by_device[(NODE1, device)], (gone, dict(by_device))
    assert {f"w{i}" for i in range(2)} <= set(after)
    assert not overcommitted(after)


def share_layout() -> dict[str, tuple[str, str]]:
    """Pod -> (priority class, percent), created on npu-node-1 in this order; the default
    policy then puts e, c, d (25 mid, 25 lowest, 50 lower) on one device and f, a, b
    (25 mid, 25 lowest, 50 low) on the other (checked: the test depends on it)."""
    return {
        "e": ("mid", "25"),
        "c": ("lowest", "25"),
        "d": ("lower", "50"),
        "f": ("mid", "25"),
        "a": ("lowest", "25"),
        "b": ("low", "50"),
    }


def fill_shares(cluster: Cluster, labels: dict[str, dict[str, str]] | None = None) -> None:
    pods = [
        manifest(n, prio, core=int(pct), node=NODE1, labels=(labels or {}).get(n))
        for n, (prio, pct) in share_layout().items()
    ]
    create_in_order(cluster, pods)
    layout = records(cluster)
    together = {device_of(layout, n) for n in "cde"}, {device_of(layout, n) for n in "abf"}
    assert all(len(s) == 1 for s in together) and together[0] != together[1], {
        n: device_of(layout, n) for n in "abcdef"
    }


def test_a_half_share_evicts_the_lowest_share_that_frees_half_a_device(
    cluster: Cluster,
) -> None:
    # aliyun.com/npu-core 200 of 200 requested on npu-node-1. kube-scheduler's count
    # reprieves e, f (200), b (100), d (50) and takes a + c (lowest): 25 + 25 "free", on
    # two devices, no device with 50. The extender answers d alone: 50 on npu-0 at
    # priority 50 (b: 100; a + f, c + e: 200).
    fill_shares(cluster)
    after = preempt_and_run(cluster, manifest("half", "high", core=50, node=NODE1))
    assert set("abcdef") - set(after) == {"d"}
    layout_device = device_of(after, "c")
    assert device_of(after, "half") == layout_device
    assert not overcommitted(after)


def test_a_pdb_that_forbids_the_eviction_is_honoured(cluster: Cluster) -> None:
    # As above, with d protected by a PDB (maxUnavailable 0: no disruption allowed). The
    # best set without a violation is b (priority 100, 50 on npu-1).
    fill_shares(cluster, {"d": {"app": "keep-d"}})
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "keep-d", "namespace": NAMESPACE},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "keep-d"}}},
    }
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(pdb))
    after = preempt_and_run(cluster, manifest("half", "high", core=50, node=NODE1))
    assert set("abcdef") - set(after) == {"b"}
    assert device_of(after, "half") == device_of(after, "a")
    assert not overcommitted(after)
