"""Benches on the real control plane with nodes that are API objects only.

Placement and scheduling throughput need what kube-scheduler and the extender read, the
Node objects (capacity, labels, the device inventory), not kubelets: so the benches create
thousands of Nodes through the API (``adapters/kube_objects.node_object``) with no process
behind them, and stop kube-controller-manager so that no missing lease marks them unready.
(KWOK would fake pod status too, which nothing measured here reads; the real-node dev
cluster is where kubelets are tested.) Pods are never run: bound is the end of their road.
"""

from __future__ import annotations

import re
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kubenpu.adapters.kube_objects import node_object
from kubenpu.devcluster import extender as dev_extender
from kubenpu.devcluster.cluster import ClusterSpec, DevCluster, up
from kubenpu.extender.config import extender_entry
from kubenpu.model import Node

NAMESPACE = "bench"


def cluster_for_api_nodes(
    state_dir: Path, *, score_all: bool, own_scores: bool = True, all_pods: bool = False
) -> DevCluster:
    """A dev cluster whose only nodes will be the bench's (``score_all``: kube-scheduler
    scores every feasible node, as the simulator does, not its adaptive sample).

    SIGTERM (a ``timeout``, a Ctrl-C from a wrapper) now unwinds, so the caller's
    ``finally: cluster.down()`` runs.
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cluster = up(state_dir, ClusterSpec(npu_nodes=1, npus_per_node=1, node_kind="agent"))
    try:
        core = api(cluster)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        # kube-controller-manager makes the namespace's service account; then it goes.
        wait_until(lambda: _has_default_sa(core), 60, "the bench namespace's service account")
        for name in list(cluster.processes):
            if name.startswith(("node-agent/", "device-plugin/")):
                cluster.stop_process(name)
        cluster.stop_process("kube-controller-manager")
        for node in core.list_node().items:
            core.delete_node(node.metadata.name)
        if score_all or not own_scores or all_pods:
            path = dev_extender.scheduler_config_path(cluster.paths)
            config = yaml.safe_load(path.read_text())
            if score_all:
                config["percentageOfNodesToScore"] = 100
            if not own_scores:
                # kube-scheduler's own score plugins off: the extender alone ranks nodes.
                profile = {"schedulerName": "default-scheduler"}
                profile["plugins"] = {"score": {"disabled": [{"name": "*"}]}}
                config["profiles"] = [profile]
            if all_pods:
                # kube-scheduler asks the extender about every pod, those without NPUs
                # too (the simulator places them with the policy).
                config["extenders"] = [
                    extender_entry(e["urlPrefix"], all_pods=True) for e in config["extenders"]
                ]
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            restart(cluster, "kube-scheduler")
    except BaseException:
        cluster.down()
        raise
    return cluster


def restart(cluster: DevCluster, name: str, *flags: str) -> None:
    """Restart one of the cluster's processes, with ``--flag=value`` flags set anew."""
    cluster.stop_process(name)
    record = cluster.processes[name]
    given = {f.split("=", 1)[0] for f in flags}
    argv = [a for a in record.argv if a.split("=", 1)[0] not in given] + list(flags)
    cluster.processes[name] = replace(record, argv=tuple(argv))
    cluster.start_process(name)


def api(cluster: DevCluster) -> k8s.CoreV1Api:
    """The core API as the cluster's admin."""
    return k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig)))


def _has_default_sa(core: k8s.CoreV1Api) -> bool:
    try:
        core.read_namespaced_service_account("default", NAMESPACE)
    except k8s.ApiException:
        return False
    return True


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``check`` until true; SystemExit naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"error: timed out waiting for {what}")
        time.sleep(0.2)


def add_nodes(core: k8s.CoreV1Api, nodes: Sequence[Node], threads: int = 8) -> None:
    """Create the nodes, Ready, with their capacity and device inventory."""

    def one(node: Node) -> None:
        obj = node_object(node)
        status = obj.pop("status")
        core.create_node(obj)
        core.patch_node_status(node.name, {"status": status})
        # Admission taints a new Node not-ready until the (stopped) lifecycle controller
        # sees it Ready; it is Ready, so the taint goes.
        core.patch_node(node.name, {"spec": {"taints": []}})

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, nodes))


def extender_histogram(port: int) -> dict[str, list[tuple[float, float]]]:
    """Cumulative (le, count) buckets of the extender's answer latency, per verb."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out: dict[str, list[tuple[float, float]]] = {}
    for labels, value in re.findall(
        r"kubenpu_extender_latency_seconds_bucket\{([^}]*)\} (\S+)", text
    ):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        out.setdefault(fields["verb"], []).append((float(fields["le"]), float(value)))
    return out


def slow_extender_calls(port: int, over_s: float = 2.5) -> int:
    """Extender answers slower than ``over_s`` (its histogram's last finite bucket): near
    kube-scheduler's 5 s timeout, after which it decides without the extender. A valid
    run has none."""
    slow = 0
    for buckets in extender_histogram(port).values():
        counts = dict(buckets)
        slow += int(counts.get(float("inf"), 0) - counts.get(over_s, 0))
    return slow


def delete_nodes(core: k8s.CoreV1Api, names: Sequence[str], threads: int = 8) -> None:
    """Delete the nodes (their pods are the caller's to delete first)."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(core.delete_node, names))
