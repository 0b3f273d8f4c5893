#!/usr/bin/env python3
"""Pods per second through kube-scheduler, with the kubenpu extender and without.

    python bench/scheduler_throughput.py                  # 1,000 and 5,000 nodes
    python bench/scheduler_throughput.py --sizes 1000 --pods 1000

One dev cluster (kube-apiserver, etcd, kube-scheduler v1.37, the extender), nodes that are
API objects only (``bench/apinodes.py``): 8 NPUs each, of the reference model. Beside the
cluster's kube-scheduler, which calls the extender, a second kube-scheduler of the same
binary runs the default profile under another name and no extender. For each size, the same
pods (one whole NPU each, the extended-resource pods of upstream's scheduler_perf) are
created from several threads, first for the extender's scheduler, then, once they are
deleted, for the plain one; pods/s is bound pods over the time from the first create to the
last bind. kube-scheduler's default ``percentageOfNodesToScore`` (adaptive) applies to both.
Also printed: the extender's per-call p50/p99 under that load, from its own latency
histogram (filter, prioritize, bind), and the ratio of the two rates.

Upstream's scheduler_perf expects about 180 pods/s for extended-resource pods at 5,000
nodes on a large machine; here kube-apiserver, etcd, both schedulers, the extender and the
client share this machine's cores, so the ratio is the figure to read.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from apinodes import (
    NAMESPACE,
    add_nodes,
    api,
    cluster_for_api_nodes,
    delete_nodes,
    extender_histogram,
)
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from kubenpu import names
from kubenpu.devcluster import binaries, processes
from kubenpu.devcluster.cluster import DevCluster
from kubenpu.devcluster.controlplane import scheduler_argv
from kubenpu.model import Device, Node

PLAIN = "plain-scheduler"


def start_plain_scheduler(cluster: DevCluster) -> None:
    """A second kube-scheduler: default profile named ``plain-scheduler``, no extender."""
    config = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(cluster.paths.scheduler_kubeconfig)},
        "leaderElection": {"leaderElect": False},
        "profiles": [{"schedulerName": PLAIN}],
    }
    path = cluster.paths.root / "plain-scheduler.yaml"
    path.write_text(yaml.safe_dump(config))
    ports = cluster.ports
    argv = scheduler_argv(binaries.bin_dir() / "kube-scheduler", cluster.paths, ports, path)
    port = processes.free_port()
    argv = [a if not a.startswith("--secure-port=") else f"--secure-port={port}" for a in argv]
    argv = [a for a in argv if not a.startswith("--cert-dir=")] + [
        f"--cert-dir={cluster.paths.root / 'plain-scheduler'}"
    ]
    log = cluster.paths.root / "logs" / "plain-scheduler.log"
    log.parent.mkdir(exist_ok=True)
    cluster.processes[PLAIN] = processes.spawn(PLAIN, tuple(argv), log)
    cluster.save()


def npu_nodes(count: int, start: int) -> list[Node]:
    model = names.REFERENCE_NPU_MODEL
    return [
        Node(
            f"bench-{i:05d}",
            104_000,
            384 * 1024,
            tuple(Device(f"bench-{i:05d}-npu{j}", j, model, 16384, group=j // 4) for j in range(8)),
            {names.LABEL_NPU_MODEL: model},
        )
        for i in range(start, start + count)
    ]


def pod(name: str, scheduler: str) -> dict[str, object]:
    limits = {"cpu": "1", "memory": "1Gi", names.RESOURCE_NPU: "1"}
    return {
        "metadata": {"name": name},
        "spec": {
            "schedulerName": scheduler,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "main",
                    "image": "kubenpu.local/pause:3.10",
                    "resources": {"limits": limits},
                }
            ],
        },
    }


def run_pods(core: k8s.CoreV1Api, count: int, scheduler: str, timeout: float) -> float:
    """Create ``count`` pods for ``scheduler``; pods/s until the last is bound."""
    bound: set[str] = set()
    done = threading.Event()
    prefix = f"{scheduler[:5]}-{int(time.time() * 1000) % 10**8}-"

    def watch() -> None:
        w = k8s_watch.Watch()
        for event in w.stream(core.list_namespaced_pod, NAMESPACE, timeout_seconds=int(timeout)):
            obj = event["object"]
            if obj.metadata.name.startswith(prefix) and obj.spec.node_name:
                bound.add(obj.metadata.name)
                if len(bound) >= count:
                    done.set()
                    w.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(0.5)  # the watch is open before the first create
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda k: core.create_namespaced_pod(NAMESPACE, pod(f"{prefix}{k}", scheduler)),
                range(count),
            )
        )
    if not done.wait(timeout):
        raise SystemExit(f"error: {scheduler}: {len(bound)} of {count} pods bound in {timeout} s")
    return count / (time.monotonic() - started)


def delete_pods(core: k8s.CoreV1Api) -> None:
    """Force-delete every bench pod (no kubelet would ever confirm a graceful delete)."""
    names_ = [p.metadata.name for p in core.list_namespaced_pod(NAMESPACE).items]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda n: core.delete_namespaced_pod(n, NAMESPACE, grace_period_seconds=0),
                names_,
            )
        )
    deadline = time.monotonic() + 120
    while core.list_namespaced_pod(NAMESPACE).items and time.monotonic() < deadline:
        time.sleep(0.5)


def quantile(before: list[tuple[float, float]], after: list[tuple[float, float]], q: float) -> str:
    """The bucket bound under which ``q`` of the calls between two scrapes fell."""
    prior = dict(before)
    diffs = sorted((le, count - prior.get(le, 0.0)) for le, count in after)
    total = diffs[-1][1] if diffs else 0
    if not total:
        return "-"
    for le, count in diffs:
        if count >= q * total:
            return "<=" + (f"{le * 1000:g} ms" if le != float("inf") else "inf")
    return "-"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1000,5000", help="node counts, ascending")
    ap.add_argument("--pods", type=int, default=2000, help="pods per run")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run")
    args = ap.parse_args()
    sizes = sorted(int(x) for x in args.sizes.split(",") if x.strip())
    state_dir = Path(tempfile.mkdtemp(prefix="kubenpu-throughput-"))
    cluster = cluster_for_api_nodes(state_dir, score_all=False)
    rows = []
    try:
        start_plain_scheduler(cluster)
        core = api(cluster)
        have = 0
        for size in sizes:
            add_nodes(core, npu_nodes(size - have, have))
            have = size
            time.sleep(3)  # the informers see the nodes
            before = extender_histogram(cluster.ports.extender)
            with_ext = run_pods(core, args.pods, "default-scheduler", args.timeout)
            after = extender_histogram(cluster.ports.extender)
            delete_pods(core)
            plain = run_pods(core, args.pods, PLAIN, args.timeout)
            delete_pods(core)
            lat = {
                verb: (
                    quantile(before.get(verb, []), b, 0.5),
                    quantile(before.get(verb, []), b, 0.99),
                )
                for verb, b in sorted(after.items())
            }
            rows.append((size, with_ext, plain, lat))
            print(
                f"  {size} nodes: {with_ext:.1f} pods/s with the extender, {plain:.1f} without",
                file=sys.stderr,
            )
        delete_nodes(core, [f"bench-{i:05d}" for i in range(have)])
    finally:
        cluster.down()
    print(
        f"{'nodes':>6} {'pods':>6} {'extender pods/s':>16} {'plain pods/s':>13} {'ratio':>6}"
        "  extender p50/p99 per call"
    )
    for size, with_ext, plain, lat in rows:
        calls = ", ".join(f"{v} {p50}/{p99}" for v, (p50, p99) in lat.items())
        print(
            f"{size:>6} {args.pods:>6} {with_ext:>16.1f} {plain:>13.1f} {with_ext / plain:>6.2f}"
            f"  {calls}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
