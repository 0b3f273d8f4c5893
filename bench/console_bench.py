"""``kubenpu console``'s pages at 1,000 NPU nodes: time to answer each, uncached.

1,000 nodes x 8 NPUs (two groups of four), about 70% of the compute held by 6,000 pods of
whole NPUs and shares (recorded placements), 50 pods waiting with a FailedScheduling event
each; every request follows a change (a pod event), so each page is computed afresh. The
pages are fetched over HTTP from uvicorn on loopback, as a browser would. A change rebuilds
only what it touched (the grid's rows and the metrics' lines of the changed node); the
first request of each page (its max) is the cold one that builds every row.

    .venv/bin/python bench/console_bench.py [--nodes 1000] [--requests 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from console.objects import FAILED, event, node, pod
from console.server import get, serving

from kubenpu.console.app import Console
from kubenpu.console.simreport import SimulatorFeed
from kubenpu.console.store import ConsoleStore


def cluster(store: ConsoleStore, nodes: int) -> None:
    store.replace_nodes([node(f"n{i:04d}", 8) for i in range(nodes)])
    pods, events = [], []
    for i in range(nodes):
        name = f"n{i:04d}"
        pods.append(pod(f"w{i}-a", npus=2, node=name, devices=(f"{name}-npu0", f"{name}-npu1")))
        pods.append(pod(f"w{i}-b", npus=1, node=name, devices=(f"{name}-npu2",)))
        pods.append(pod(f"w{i}-c", npus=1, node=name, devices=(f"{name}-npu3",)))
        pods.append(pod(f"w{i}-d", npus=1, node=name, devices=(f"{name}-npu4",)))
        pods.append(pod(f"s{i}-a", core=60, node=name, devices=(f"{name}-npu5",)))
        pods.append(pod(f"s{i}-b", core=30, node=name, devices=(f"{name}-npu5",)))
    for k in range(50):
        pods.append(pod(f"pending-{k}", npus=8))
        events.append(event(f"e{k}", "Pod", f"pending-{k}", "FailedScheduling", FAILED))
    store.replace_pods(pods)
    store.replace_events(events)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    store = ConsoleStore()
    started = time.perf_counter()
    cluster(store, args.nodes)
    print(
        f"{args.nodes} nodes, {len(store.pods)} pods loaded in "
        f"{time.perf_counter() - started:.1f} s"
    )
    console = Console(store, SimulatorFeed(budget_s=1))
    with serving(console.app) as base:
        for path in ("/", "/nodes/n0500", "/pending", "/?fragment=1", "/metrics"):
            times, size = [], 0
            for k in range(args.requests):
                changed = pod("w0-b", npus=1, node="n0000", devices=("n0000-npu2",))
                changed["metadata"]["labels"]["round"] = f"{path}{k}"
                store.pod_event("MODIFIED", changed)
                t = time.perf_counter()
                status, _, body = get(base + path)
                times.append(1000 * (time.perf_counter() - t))
                assert status == 200, status
                size = len(body)
            times.sort()
            print(
                f"{path:16} p50 {statistics.median(times):6.1f} ms  max {times[-1]:6.1f} ms"
                f"  {size / 1024:7.0f} KiB"
            )
        get(base + "/")  # after the last change: computed
        t = time.perf_counter()
        get(base + "/")
        print(f"/ again, unchanged (cached): {1000 * (time.perf_counter() - t):.1f} ms")


if __name__ == "__main__":
    main()
