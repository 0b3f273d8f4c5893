"""The inverse of :mod:`kubenpu.adapters.kube`: Kubernetes objects for model nodes and pods.

For benches and tools that put a trace on a real API server: what these write,
``node_from_object`` and ``request_from_pod`` read back unchanged (tests check the round
trip), so the cluster sees exactly the trace's nodes and requests.
"""

from __future__ import annotations

from typing import Any

from kubenpu.adapters.kube import device_inventory_annotation
from kubenpu.errors import ObjectError
from kubenpu.model import Node, Request
from kubenpu.names import (
    ANNOTATION_DEVICE_INVENTORY,
    LABEL_NPU_MODEL,
    MILLI_PER_CORE_UNIT,
    RESOURCE_NPU,
    RESOURCE_NPU_CORE,
    RESOURCE_NPU_MEM,
)

#: Pods a node object accepts: trace nodes hold many small pods.
MAX_PODS = 1000


def node_object(node: Node) -> dict[str, Any]:
    """A Node (metadata and status) advertising ``node``'s CPU, memory and devices."""
    npus = len(node.devices)
    amounts = {
        "cpu": f"{node.cpu_milli}m",
        "memory": f"{node.memory_mib}Mi",
        "pods": str(MAX_PODS),
        RESOURCE_NPU: str(npus),
        RESOURCE_NPU_CORE: str(npus * 100),
    }
    mem_gib = sum(d.memory_mib for d in node.devices) // 1024
    if mem_gib:
        amounts[RESOURCE_NPU_MEM] = str(mem_gib)
    labels = dict(node.labels)
    if node.model and npus:
        labels[LABEL_NPU_MODEL] = node.model
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {ANNOTATION_DEVICE_INVENTORY: device_inventory_annotation(node.devices)}
            if npus
            else {},
        },
        "status": {
            "capacity": amounts,
            "allocatable": amounts,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


def pod_object(
    req: Request, *, namespace: str = "default", image: str = "kubenpu.local/pause:3.10"
) -> dict[str, Any]:
    """A Pod asking what ``req`` asks: CPU and memory, whole NPUs or a share, its models."""
    if req.share_memory_mib % 1024:
        raise ObjectError(
            f"pod {req.name}: {RESOURCE_NPU_MEM} counts GiB; {req.share_memory_mib} MiB is not"
        )
    if req.share_milli % MILLI_PER_CORE_UNIT:
        raise ObjectError(
            f"pod {req.name}: {RESOURCE_NPU_CORE} counts percent; {req.share_milli} milli is not"
        )
    limits = {"cpu": f"{req.cpu_milli}m", "memory": f"{req.memory_mib}Mi"}
    if req.npus:
        limits[RESOURCE_NPU] = str(req.npus)
    if req.share_milli:
        limits[RESOURCE_NPU_CORE] = str(req.share_milli // MILLI_PER_CORE_UNIT)
    if req.share_memory_mib:
        limits[RESOURCE_NPU_MEM] = str(req.share_memory_mib // 1024)
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "main",
                "image": image,
                # Requests equal to limits, as the API server would default them.
                "resources": {"limits": limits, "requests": limits},
            }
        ],
    }
    if req.models:
        term = {"key": LABEL_NPU_MODEL, "operator": "In", "values": sorted(req.models)}
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [term]}]
                }
            }
        }
    name = req.name.rsplit("/", 1)[-1]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
