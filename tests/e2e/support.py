"""Helpers of the end-to-end tests: polling with deadlines, kubectl, pods, devices."""

from __future__ import annotations

import json
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kubenpu import names
from kubenpu.devcluster import binaries
from kubenpu.devcluster.cluster import DevCluster

T = TypeVar("T")

NPUS_PER_NODE = 4
NAMESPACE = "default"
# The examples/ manifests of the README, applied as a user would.
MANIFESTS = Path(__file__).resolve().parents[2] / "examples"


def wait_for(
    what: str, probe: Callable[[], T], *, timeout: float = 60.0, interval: float = 0.1
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds.

    The default is generous on purpose: on a loaded 2-core machine a pod freed by a deletion
    waits for the node, the extender's cache and kube-scheduler's backoff in turn; the
    tests assert that things happen, the benches measure how fast."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}; last: {result!r}"
            )
        time.sleep(interval)


class Cluster:
    """The session's dev cluster with the helpers the tests share."""

    def __init__(self, dev: DevCluster) -> None:
        self.dev = dev
        self.api = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(dev.kubeconfig)))
        self.kubectl_binary = binaries.kubectl()

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        """Run the installed kubectl against the cluster; return stdout, fail on error."""
        assert self.kubectl_binary, "kubectl is not on PATH"
        result = subprocess.run(
            [self.kubectl_binary, "--kubeconfig", str(self.dev.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def get(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Call a client read method and return the raw JSON (no model conversion)."""
        return json.loads(call(*args, _preload_content=False, **kwargs).data)

    def pod(self, name: str) -> dict[str, Any] | None:
        """The pod as JSON, or None if it does not exist."""
        pods = self.get(
            self.api.list_namespaced_pod, NAMESPACE, field_selector=f"metadata.name={name}"
        )["items"]
        return pods[0] if pods else None

    def node(self, name: str) -> dict[str, Any]:
        """The Node as JSON."""
        return self.get(self.api.read_node, name)

    def allocatable_npus(self, node: str) -> int:
        """The Node's allocatable aliyun.com/npu (0 if absent)."""
        allocatable = self.node(node)["status"].get("allocatable", {})
        return int(allocatable.get(names.RESOURCE_NPU, "0"))

    def create_pod(
        self,
        name: str,
        npus: int,
        *,
        node_selector: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        """Create a one-container pod asking for ``npus`` whole NPUs."""
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "npu-registry.example.com/demo/npu-job:1.0",
                    "resources": {"limits": {names.RESOURCE_NPU: str(npus)}},
                }
            ],
        }
        if node_selector:
            spec["nodeSelector"] = node_selector
        self.api.create_namespaced_pod(
            NAMESPACE,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": labels or {}},
                "spec": spec,
            },
        )

    def wait_running(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the pod is Running; return it."""

        def running() -> dict[str, Any] | None:
            pod = self.pod(name)
            return pod if pod and pod["status"].get("phase") == "Running" else None

        return wait_for(f"pod {name} Running", running, timeout=timeout)

    def wait_unschedulable(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until kube-scheduler has marked the pod ``PodScheduled=False/Unschedulable``;
        return it. Its failure handling is then done and the pod waits in its queue for a
        cluster event. In full e2e runs a pod whose capacity was freed within about 0.1 s
        of its FailedScheduling event got no second attempt for over 60 s (kube-scheduler's
        own counts had rejected it; the extender was never asked), as if the queue had
        missed the event and left the pod for its 5-minute flush. Tests that free capacity
        for a waiting pod wait for this first."""

        def marked() -> dict[str, Any] | None:
            pod = self.pod(name)
            conditions = (pod or {}).get("status", {}).get("conditions") or []
            done = any(
                c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
                for c in conditions
            )
            return pod if done else None

        return wait_for(f"pod {name} marked Unschedulable", marked, timeout=timeout)

    def scheduling_failures(self, name: str) -> list[str]:
        """Messages of the FailedScheduling events of a pod."""
        events = self.get(
            self.api.list_namespaced_event,
            NAMESPACE,
            field_selector=f"involvedObject.name={name},reason=FailedScheduling",
        )["items"]
        return [e.get("message", "") for e in events]

    def devices_of(self, pod_name: str) -> tuple[str, list[str]] | None:
        """(node, device ids) the node agents recorded for the pod, or None."""
        for node in self.dev.npu_nodes:
            devices = self.dev.allocations(node.name).get((NAMESPACE, pod_name))
            if devices is not None:
                return node.name, devices
        return None

    def delete_all_pods(self) -> None:
        """Delete every pod in the namespace and wait until the agents freed their devices."""
        self.api.delete_collection_namespaced_pod(NAMESPACE)
        wait_for(
            "all pods gone", lambda: not self.get(self.api.list_namespaced_pod, NAMESPACE)["items"]
        )
        wait_for(
            "node agents freed every device",
            lambda: all(not self.dev.allocations(n.name) for n in self.dev.npu_nodes),
        )


def records(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """Live pods by name, each with its placement record: (node, devices, shares) or None."""
    out = {}
    for p in cluster.get(cluster.api.list_namespaced_pod, NAMESPACE)["items"]:
        if p["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        ann = p["metadata"].get("annotations") or {}
        rec = None
        if names.ANNOTATION_NODE in ann:
            rec = (
                ann[names.ANNOTATION_NODE],
                ann[names.ANNOTATION_DEVICES].split(","),
                [int(s) for s in ann[names.ANNOTATION_SHARES].split(",")],
            )
        out[p["metadata"]["name"]] = {"pod": p, "record": rec}
    return out


def overcommitted(pods: dict[str, dict[str, Any]]) -> dict[tuple[str, str], int]:
    """The (node, device)s whose recorded shares add up to more than one device."""
    used: dict[tuple[str, str], int] = defaultdict(int)
    for entry in pods.values():
        if entry["record"] is not None:
            node, devices, shares = entry["record"]
            for device, share in zip(devices, shares, strict=True):
                used[(node, device)] += share
    return {k: v for k, v in used.items() if v > names.MILLI_PER_DEVICE}
