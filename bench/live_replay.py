#!/usr/bin/env python3
"""The openb experiment on the real scheduler: live allocation beside the simulator's.

    python bench/live_replay.py --nodes NODES.csv --pods PODS.csv --seed 42 \\
        --policy kubenpu --format json

One dev cluster (real kube-apiserver, etcd, kube-scheduler v1.37 calling the kubenpu
extender). The trace's nodes are put on the API server as Node objects with their CPU,
memory and device inventory (``adapters/kube_objects.py``): no kubelet runs behind them,
because what is measured is placement, and kube-controller-manager is stopped so that no
lease timeout marks them unready. The seed's arrival order (the same inflation and shuffle
as ``kubenpu simulate``) is replayed one pod at a time: create it, wait until it is bound
or kube-scheduler marks it unschedulable (then delete it: turned away, as in the
simulator), next. kube-scheduler scores every node (``percentageOfNodesToScore: 100``), as
the simulator does. At the end every placement recorded on the pods is checked for
over-commit, and the allocation is printed beside what ``kubenpu simulate`` computes for
the same nodes, pods, order and policy.

Everything stays on loopback; the run is bounded (``--timeout``) and cleans up after itself.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from apinodes import NAMESPACE, add_nodes, api, cluster_for_api_nodes, restart, slow_extender_calls
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from kubenpu.adapters.kube import placement_from_pod
from kubenpu.adapters.kube_objects import pod_object
from kubenpu.cli.simulate import read_nodes, read_pods
from kubenpu.devcluster import extender as dev_extender
from kubenpu.engine import policies
from kubenpu.engine.framework import Engine
from kubenpu.engine.state import FULL, ClusterState
from kubenpu.model import Node, Request
from kubenpu.sim.experiment import arrival_order


class PodEvents:
    """A watch on the replay's pods: resolves each one as bound or unschedulable."""

    def __init__(self, core: k8s.CoreV1Api) -> None:
        self.core = core
        self.events: queue.Queue[tuple[str, str]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            w = k8s_watch.Watch()
            try:
                for event in w.stream(
                    self.core.list_namespaced_pod,
                    NAMESPACE,
                    resource_version=version or None,
                    timeout_seconds=30,
                    _request_timeout=40,
                ):
                    pod = event["object"]
                    version = pod.metadata.resource_version
                    outcome = _outcome(pod)
                    if outcome:
                        self.events.put((pod.metadata.name, outcome))
                    if self._stop.is_set():
                        break
            except k8s.ApiException as exc:
                if exc.status == 410:  # expired: start from now; waiters re-read the pod
                    version = ""
                else:
                    time.sleep(0.5)
            except Exception:  # the connection broke: watch again
                time.sleep(0.5)

    def wait(self, name: str, timeout: float) -> str:
        """ "bound" or "unschedulable" for pod ``name``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pod = self.core.read_namespaced_pod(name, NAMESPACE)
                outcome = _outcome(pod)
                if outcome:
                    return outcome
                raise SystemExit(f"error: pod {name} neither bound nor unschedulable in time")
            try:
                got, outcome = self.events.get(timeout=min(left, 5.0))
            except queue.Empty:
                continue
            if got == name:
                return outcome

    def stop(self) -> None:
        self._stop.set()


def _outcome(pod: Any) -> str:
    if pod.spec.node_name:
        return "bound"
    for cond in pod.status.conditions or []:
        if (
            cond.type == "PodScheduled"
            and cond.status == "False"
            and cond.reason == "Unschedulable"
        ):
            return "unschedulable"
    return ""


def replay_live(core: k8s.CoreV1Api, arrivals: list[Request], per_pod: float) -> dict[str, int]:
    """Create the pods one by one in arrival order; delete the ones turned away."""
    events = PodEvents(core)
    counts = {"bound": 0, "unschedulable": 0}
    try:
        for n, req in enumerate(arrivals):
            obj = pod_object(req, namespace=NAMESPACE)
            core.create_namespaced_pod(NAMESPACE, obj)
            outcome = events.wait(obj["metadata"]["name"], per_pod)
            counts[outcome] += 1
            if outcome == "unschedulable":
                core.delete_namespaced_pod(
                    obj["metadata"]["name"], NAMESPACE, grace_period_seconds=0
                )
            if (n + 1) % 500 == 0:
                print(f"  {n + 1}/{len(arrivals)} pods, {counts}", file=sys.stderr)
    finally:
        events.stop()
    return counts


def live_allocation(core: k8s.CoreV1Api, capacity: int) -> tuple[int, list[str]]:
    """Device compute held by the placements recorded on pods, and any over-commit."""
    used: dict[tuple[str, str], int] = defaultdict(int)
    for pod in core.list_namespaced_pod(NAMESPACE).items:
        obj = core.api_client.sanitize_for_serialization(pod)
        placement = placement_from_pod(obj)
        if placement is None or not pod.spec.node_name:
            continue
        for dev, share in zip(placement.device_ids, placement.shares_milli, strict=True):
            used[(placement.node, dev)] += share
    over = [f"{n}/{d}: {m} milli" for (n, d), m in sorted(used.items()) if m > FULL]
    return sum(used.values()), over


def simulate(
    nodes: list[Node], pods: list[Request], arrivals: list[Request], policy: str, seed: int
) -> tuple[int, int]:
    """What ``kubenpu simulate`` does with these arrivals: (device compute held, turned away).

    The profile is built as the simulator builds it (from the trace's pods), so a gap to
    the live run is the live extender's own view of the task mix, not the arrivals.
    """
    state = ClusterState(nodes)
    engine = Engine(state, policies.factory(policy)(state, pods), seed=seed)
    turned_away = sum(engine.place(req).placement is None for req in arrivals)
    return state.allocated_milli(), turned_away


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nodes", type=Path, required=True, help="openb node CSV or Node YAML")
    ap.add_argument("--pods", type=Path, required=True, help="openb pod CSV or Pod YAML")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--policy", default=policies.DEFAULT)
    ap.add_argument("--tune", type=float, default=1.3)
    ap.add_argument("--limit", type=int, default=0, help="replay only the first N arrivals")
    ap.add_argument("--format", choices=("text", "json"), default="text")
    ap.add_argument(
        "--extender-scores-only",
        action="store_true",
        help="turn kube-scheduler's own score plugins off (the extender alone ranks nodes)",
    )
    ap.add_argument(
        "--task-mix-from-trace",
        action="store_true",
        help="give the extender the trace's pods as its task mix (kubenpu scheduler "
        "--task-mix), as the simulator knows it, instead of its own estimate",
    )
    ap.add_argument(
        "--all-pods",
        action="store_true",
        help="have kube-scheduler ask the extender about every pod, CPU-only ones too",
    )
    ap.add_argument("--timeout", type=float, default=3600, help="seconds for the whole run")
    args = ap.parse_args()
    policies.validate(args.policy)
    nodes, pods = read_nodes(args.nodes), read_pods(args.pods)
    capacity = sum(len(n.devices) for n in nodes) * FULL
    arrivals = arrival_order(pods, capacity, args.tune, args.seed)
    if args.limit:
        arrivals = arrivals[: args.limit]
    simulated, turned_away = simulate(nodes, pods, arrivals, args.policy, args.seed)
    started = time.monotonic()
    state_dir = Path(tempfile.mkdtemp(prefix="kubenpu-live-replay-"))
    cluster = cluster_for_api_nodes(
        state_dir,
        score_all=True,
        own_scores=not args.extender_scores_only,
        all_pods=args.all_pods,
    )
    try:
        flags = [f"--policy={args.policy}", f"--seed={args.seed}"]
        if args.task_mix_from_trace:
            flags.append(f"--task-mix={args.pods.resolve()}")
        restart(cluster, dev_extender.PROCESS, *flags)
        core = api(cluster)
        add_nodes(core, nodes)
        time.sleep(2)  # the extender's informer sees the nodes
        per_pod = max(10.0, args.timeout / max(len(arrivals), 1))
        counts = replay_live(core, arrivals, per_pod)
        held, over = live_allocation(core, capacity)
        slow = slow_extender_calls(cluster.ports.extender)
    finally:
        cluster.down()
    result = {
        "policy": args.policy,
        "seed": args.seed,
        "nodes": len(nodes),
        "npus": capacity // FULL,
        "pods": len(arrivals),
        "live_pct": round(100 * held / capacity, 4),
        "simulated_pct": round(100 * simulated / capacity, 4),
        "live_bound": counts["bound"],
        "live_unschedulable": counts["unschedulable"],
        "simulated_unscheduled": turned_away,
        "overcommitted_devices": over,
        # Extender answers near kube-scheduler's timeout: 0 for a valid run.
        "slow_extender_calls": slow,
        "seconds": round(time.monotonic() - started, 1),
    }
    if args.format == "json":
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}  {value}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
