"""What the agent reports, built without I/O: Node status, Lease spec, pod statuses.

Each builder takes the time it should write (``now``) so the same input gives the same
body; the agent's API calls (:mod:`kubenpu.devcluster.nodeagent.kubeapi`) send them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kubenpu.devcluster.nodeagent.admission import ListedDevice

if TYPE_CHECKING:
    from kubenpu.devcluster.nodeagent.config import AgentConfig

#: The address every simulated node and pod reports: nothing is ever sent to it.
LOOPBACK = "127.0.0.1"


def timestamp() -> str:
    """The current time as the API's timestamps (seconds)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_timestamp() -> str:
    """The current time as the API's MicroTime (a Lease's renewTime)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def extended_resources(
    devices: Mapping[str, Sequence[ListedDevice]],
) -> tuple[dict[str, str], dict[str, str]]:
    """(capacity, allocatable) of the device-plugin resources: every device, the healthy."""
    capacity = {r: str(len(devs)) for r, devs in devices.items()}
    allocatable = {r: str(sum(d.healthy for d in devs)) for r, devs in devices.items()}
    return capacity, allocatable


def node_status(
    config: AgentConfig,
    capacity: Mapping[str, str],
    allocatable: Mapping[str, str],
    existing_conditions: Sequence[Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    """The Node's status: capacity, a Ready node's conditions, addresses and node info.

    ``lastTransitionTime`` moves only when a condition changes: the times of the
    ``existing_conditions`` (the Node's current ones) with the same status are kept.
    """
    ready_message = "kubenpu node agent is posting ready status"
    conditions: list[dict[str, Any]] = [
        {"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": m}
        for t, r, m in (
            ("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"),
        )
    ]
    conditions.append(
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": ready_message}
    )
    existing = {c["type"]: c for c in existing_conditions}
    for condition in conditions:
        condition["lastHeartbeatTime"] = now
        condition["lastTransitionTime"] = now
        old = existing.get(condition["type"])
        if old is not None and old.get("status") == condition["status"]:
            condition["lastTransitionTime"] = old.get("lastTransitionTime", now)
    machine = hashlib.sha256(config.node.encode()).hexdigest()[:32]
    return {
        "capacity": {**config.capacity, **capacity},
        "allocatable": {**config.capacity, **allocatable},
        "conditions": conditions,
        "addresses": [
            {"type": "InternalIP", "address": LOOPBACK},
            {"type": "Hostname", "address": config.node},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": machine,
            "systemUUID": machine,
            "bootID": machine,
            "kernelVersion": os.uname().release,
            "osImage": "kubenpu dev-cluster simulated node",
            "containerRuntimeVersion": "kubenpu-sim://0",
            "kubeletVersion": config.kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def lease_spec(config: AgentConfig, renew_time: str) -> dict[str, Any]:
    """The spec of the node's Lease in ``kube-node-lease``, renewed at ``renew_time``."""
    return {
        "holderIdentity": config.node,
        "leaseDurationSeconds": config.lease_duration_s,
        "renewTime": renew_time,
    }


def running_status(pod: Mapping[str, Any], now: str) -> dict[str, Any]:
    """A Running pod's status: every container started and ready, the loopback address."""
    meta = pod["metadata"]
    statuses = [
        {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "containerID": "kubenpu-sim://"
            + hashlib.sha256(f"{meta['uid']}/{c['name']}".encode()).hexdigest()[:32],
            "ready": True,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": now}},
        }
        for c in pod["spec"]["containers"]
    ]
    conditions = [
        {"type": t, "status": "True", "lastTransitionTime": now}
        for t in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")
    ]
    return {
        "phase": "Running",
        "hostIP": LOOPBACK,
        "hostIPs": [{"ip": LOOPBACK}],
        "podIP": LOOPBACK,
        "podIPs": [{"ip": LOOPBACK}],
        "startTime": pod.get("status", {}).get("startTime", now),
        "conditions": conditions,
        "containerStatuses": statuses,
    }


def failed_status(pod: Mapping[str, Any], message: str, now: str) -> dict[str, Any]:
    """A pod the agent rejected, as a kubelet reports one (``UnexpectedAdmissionError``)."""
    return {
        "phase": "Failed",
        "reason": "UnexpectedAdmissionError",
        "message": f"Pod was rejected: {message}",
        "startTime": pod.get("status", {}).get("startTime", now),
    }
