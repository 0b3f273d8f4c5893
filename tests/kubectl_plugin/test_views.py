"""The tables of ``kubectl npu``, from Nodes and Pods as the API returns them."""

from __future__ import annotations

from typing import Any

from kubenpu import names
from kubenpu.kubectl_plugin import views


def node(
    name: str, total: int, allocatable: int | None = None, model: str = "hanguang-800"
) -> dict:
    status: dict[str, Any] = {"capacity": {names.RESOURCE_NPU: str(total), "cpu": "104"}}
    if allocatable is not None:
        status["allocatable"] = {names.RESOURCE_NPU: str(allocatable)}
    labels = {names.LABEL_NPU_MODEL: model} if model else {}
    return {"metadata": {"name": name, "labels": labels}, "status": status}


def pod(
    name: str,
    node_name: str = "",
    *,
    npu: int = 0,
    core: int = 0,
    phase: str = "Running",
    namespace: str = "default",
    annotations: dict[str, str] | None = None,
) -> dict:
    limits = {}
    if npu:
        limits[names.RESOURCE_NPU] = str(npu)
    if core:
        limits[names.RESOURCE_NPU_CORE] = str(core)
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": {"limits": limits}}]}
    if node_name:
        spec["nodeName"] = node_name
    return {
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": spec,
        "status": {"phase": phase},
    }


def placed(node_name: str, devices: str, shares: str) -> dict[str, str]:
    return {
        names.ANNOTATION_NODE: node_name,
        names.ANNOTATION_DEVICES: devices,
        names.ANNOTATION_SHARES: shares,
    }


NODES = [
    node("npu-node-2", 4),
    node("npu-node-1", 4, allocatable=3),
    node("cpu-node-1", 0, model=""),
]
PODS = [
    # Whole NPUs without a placement record: counted by request, devices unknown.
    pod("trainer", "npu-node-1", npu=2),
    # Recorded whole NPU and shares: 300 milli = 30 %, 500 milli = 50 %.
    pod("infer", "npu-node-2", npu=1, annotations=placed("npu-node-2", "npu-0", "1000")),
    pod("small-a", "npu-node-2", core=30, annotations=placed("npu-node-2", "npu-1", "300")),
    pod("small-b", "npu-node-2", core=50, annotations=placed("npu-node-2", "npu-1", "500")),
    pod("small-c", "npu-node-1", core=20),
    # Finished pods and pods not yet bound hold nothing.
    pod("done", "npu-node-1", npu=1, phase="Succeeded"),
    pod("waiting", npu=4, phase="Pending", namespace="team-a"),
    pod("web", "cpu-node-1"),
]


def test_node_rows() -> None:
    rows = views.npu_nodes(NODES, views.npu_pods(PODS))
    # npu-node-1: 4 devices, 1 unhealthy (3 allocatable), 2 held by trainer, a 20 % share
    # on an unrecorded device: free = 4 - 1 - 2 = 1. npu-node-2: npu-0 whole, npu-1 shared
    # 30 + 50 = 80 %: free = 4 - 1 - 1 = 2.
    assert views.render(views.node_table(rows)) == (
        "NODE         MODEL          TOTAL   ALLOCATED   SHARED   SHARED-CORE   UNHEALTHY   FREE\n"
        "npu-node-1   hanguang-800   4       2           0        20%           1           1\n"
        "npu-node-2   hanguang-800   4       1           1        80%           0           2\n"
    )
    assert rows[1].as_dict() == {
        "name": "npu-node-2",
        "model": "hanguang-800",
        "total": 4,
        "unhealthy": 0,
        "allocated": 1,
        "shared_devices": 1,
        "shared_core_percent": 80,
        "pods": ["default/infer", "default/small-a", "default/small-b"],
        "free": 2,
    }


def test_pod_rows_all_namespaces() -> None:
    rows = views.npu_pods(PODS)
    assert views.render(views.pod_table(rows, all_namespaces=True)) == (
        "NAMESPACE   NAME      NODE         PHASE       NPUS   DEVICES        SHARES\n"
        "default     done      npu-node-1   Succeeded   1      <unrecorded>   <none>\n"
        "default     infer     npu-node-2   Running     1      npu-0          <none>\n"
        "default     small-a   npu-node-2   Running     0      <none>         npu-1:30%\n"
        "default     small-b   npu-node-2   Running     0      <none>         npu-1:50%\n"
        "default     small-c   npu-node-1   Running     0      <none>         20%\n"
        "default     trainer   npu-node-1   Running     2      <unrecorded>   <none>\n"
        "team-a      waiting   <none>       Pending     4      <unrecorded>   <none>\n"
    )


def test_pod_rows_one_namespace_and_a_malformed_pod() -> None:
    bad = pod("bad", "npu-node-1", npu=1, core=10)
    rows = views.npu_pods([bad])
    table = views.pod_table(rows, all_namespaces=False)
    assert table[0] == ["NAME", "NODE", "PHASE", "NPUS", "DEVICES", "SHARES"]
    assert table[1][:5] == ["bad", "npu-node-1", "Running", "0", "?"]
    assert "the pod asks for both aliyun.com/npu" in table[1][5]
    assert rows[0].as_dict()["problem"]


def test_no_npu_nodes() -> None:
    assert views.npu_nodes([node("cpu-node-1", 0, model="")], []) == []
