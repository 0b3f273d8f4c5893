"""Nodes, Pods and Events as the API returns them, for the console's tests."""

from __future__ import annotations

from typing import Any

from kubenpu import names
from kubenpu.adapters.kube import device_inventory_annotation
from kubenpu.model import Device


def node(
    name: str,
    npus: int = 4,
    *,
    unhealthy: tuple[int, ...] = (),
    model: str = names.REFERENCE_NPU_MODEL,
    groups: int = 2,
) -> dict[str, Any]:
    """An NPU node whose device plugin published its inventory."""
    devices = [
        Device(
            f"{name}-npu{i}",
            i,
            model,
            memory_mib=32768,
            healthy=i not in unhealthy,
            group=i * groups // max(npus, 1),
        )
        for i in range(npus)
    ]
    amounts = {"cpu": "32", "memory": "128Gi", names.RESOURCE_NPU: str(npus - len(unhealthy))}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                names.LABEL_NPU_MODEL: model,
                names.LABEL_INSTANCE_TYPE: names.REFERENCE_INSTANCE_TYPE,
            },
            "annotations": {
                names.ANNOTATION_DEVICE_INVENTORY: device_inventory_annotation(devices)
            },
        },
        "status": {
            "capacity": {**amounts, names.RESOURCE_NPU: str(npus)},
            "allocatable": amounts,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def cpu_node(name: str) -> dict[str, Any]:
    """A node without NPUs."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {}},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi"}},
    }


def pod(
    name: str,
    *,
    npus: int = 0,
    core: int = 0,
    node: str = "",
    devices: tuple[str, ...] = (),
    shares: tuple[int, ...] = (),
    phase: str = "",
    namespace: str = "default",
    created: str = "2026-01-01T00:00:00Z",
) -> dict[str, Any]:
    """A pod asking for whole NPUs or a share; ``devices``: its placement record."""
    limits: dict[str, str] = {"cpu": "1", "memory": "1Gi"}
    if npus:
        limits[names.RESOURCE_NPU] = str(npus)
    if core:
        limits[names.RESOURCE_NPU_CORE] = str(core)
    annotations = {}
    labels = {}
    if devices:
        milli = shares or tuple(
            names.MILLI_PER_DEVICE if npus else core * names.MILLI_PER_CORE_UNIT for _ in devices
        )
        annotations = {
            names.ANNOTATION_NODE: node,
            names.ANNOTATION_DEVICES: ",".join(devices),
            names.ANNOTATION_SHARES: ",".join(str(m) for m in milli),
            names.ANNOTATION_ASSUMED_AT: "2026-01-01T00:00:01.000000Z",
        }
        labels = {names.LABEL_PLACED_NODE: node}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "creationTimestamp": created,
            "annotations": annotations,
            "labels": labels,
        },
        "spec": {
            "nodeName": node or None,
            "schedulerName": "default-scheduler",
            "containers": [
                {"name": "main", "image": "x", "resources": {"limits": limits, "requests": limits}}
            ],
        },
        "status": {"phase": phase or ("Running" if node else "Pending")},
    }


def event(
    name: str,
    kind: str,
    target: str,
    reason: str,
    message: str,
    *,
    namespace: str = "default",
    when: str = "2026-01-01T00:01:00Z",
    type_: str = "Normal",
    count: int = 1,
) -> dict[str, Any]:
    """A core v1 Event about a Node or a Pod."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "involvedObject": {"kind": kind, "name": target, "namespace": namespace},
        "reason": reason,
        "message": message,
        "type": type_,
        "count": count,
        "lastTimestamp": when,
        "source": {"component": "default-scheduler" if kind == "Pod" else "kubelet"},
    }


FAILED = (
    "0/3 nodes are available: 1 node(s) had untolerated taint {node-role: cp}, "
    "2 Insufficient aliyun.com/npu. preemption: 0/3 nodes are available: "
    "3 Preemption is not helpful for scheduling."
)
