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
        "driver": "device-plugin",
        "devices": [],  # no inventory annotation on these nodes
        "allocated_devices": ["npu-0", "npu-1"],
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


def unschedulable(p: dict, message: str, *, nominated: str = "") -> dict:
    p["status"] = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
        ],
    }
    if nominated:
        p["status"]["nominatedNodeName"] = nominated
    return p


def test_pending_pods_say_why_they_wait() -> None:
    # A gang member the extender could not place, a preemptor whose victims are going, and a
    # running pod (no WAITING of its own).
    gang_why = (
        "0/2 nodes are available: 2 gang default/job: 4 members (min 4) needing 4 whole NPUs "
        "do not fit at once."
    )
    rows = views.npu_pods(
        [
            unschedulable(pod("job-0", npu=1), gang_why),
            unschedulable(
                pod("high", npu=1),
                "0/2 nodes are available: 2 Insufficient aliyun.com/npu.",
                nominated="npu-node-1",
            ),
            pod("run", "npu-node-2", npu=1, annotations=placed("npu-node-2", "npu-0", "1000")),
        ]
    )
    by_name = {r.name: r for r in rows}
    assert by_name["job-0"].waiting == gang_why
    assert by_name["high"].waiting == (
        "preempting on npu-node-1: victims chosen, waiting for them to go; "
        "0/2 nodes are available: 2 Insufficient aliyun.com/npu."
    )
    assert by_name["run"].waiting == ""
    table = views.pod_table(rows, all_namespaces=False)
    assert table[0][-1] == "WAITING"
    assert [row[-1] for row in table[1:]] == [by_name["high"].waiting, gang_why, "-"]


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


# ---- DRA-served nodes and pods ----------------------------------------------------------

DRIVER = names.DRA_DRIVER


def dra_node(name: str) -> dict:
    """A node the DRA driver serves: labelled so, no aliyun.com/npu of its own."""
    obj = node(name, 0)
    obj["metadata"]["labels"][names.LABEL_NPU_DRIVER] = names.NPU_DRIVER_DRA
    return obj


def resource_slice(node_name: str, devices: int, *, sick: tuple[int, ...] = ()) -> dict:
    return {
        "metadata": {"name": f"{node_name}-{DRIVER}"},
        "spec": {
            "driver": DRIVER,
            "nodeName": node_name,
            "pool": {"name": node_name, "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {"name": f"npu-{i}", "attributes": {"healthy": {"bool": i not in sick}}}
                for i in range(devices)
            ],
        },
    }


def claim(name: str, node_name: str, devices: list[str], *, pod_name: str = "", **share) -> dict:
    results = [
        {"request": "npu", "driver": DRIVER, "pool": node_name, "device": d, **share}
        for d in devices
    ]
    status: dict[str, Any] = {"allocation": {"devices": {"results": results}}}
    if pod_name:
        status["reservedFor"] = [{"resource": "pods", "name": pod_name, "uid": "u"}]
    return {"metadata": {"name": name, "namespace": "default"}, "status": status}


def extended(p: dict, claim_name: str) -> dict:
    """The pod as kube-scheduler leaves it: its extended-resource claim named."""
    p["status"]["extendedResourceClaimStatus"] = {
        "requestMappings": [
            {"containerName": "c", "resourceName": names.RESOURCE_NPU, "requestName": "r"}
        ],
        "resourceClaimName": claim_name,
    }
    return p


DRA_NODES = [dra_node("dra-node-1"), node("npu-node-1", 2)]
SLICES = [
    resource_slice("dra-node-1", 4, sick=(3,)),
    # Another driver's slice on the same node is not ours to count.
    {"spec": {"driver": "gpu.example.com", "nodeName": "dra-node-1", "devices": [{"name": "g"}]}},
]
CLAIMS = [
    claim("seed-extended-resources-abc", "dra-node-1", ["npu-2"], pod_name="seed"),
    claim("pair-npus-xyz", "dra-node-1", ["npu-0", "npu-1"], pod_name="pair"),
]
DRA_PODS = [
    extended(pod("seed", "dra-node-1", npu=1), "seed-extended-resources-abc"),
    # A pod with a user's claim from a template: the claim named in its status.
    {
        **pod("pair", "dra-node-1"),
        "spec": {
            "nodeName": "dra-node-1",
            "containers": [{"name": "c", "resources": {"claims": [{"name": "npus"}]}}],
            "resourceClaims": [{"name": "npus", "resourceClaimTemplateName": "two-npus"}],
        },
        "status": {
            "phase": "Running",
            "resourceClaimStatuses": [{"name": "npus", "resourceClaimName": "pair-npus-xyz"}],
        },
    },
    # Its claim went with it; the extender's kubenpu.io/devices still says which it had.
    extended(
        pod(
            "old",
            "dra-node-1",
            npu=1,
            phase="Succeeded",
            annotations={names.ANNOTATION_DEVICES: "npu-1"},
        ),
        "old-extended-resources-gone",
    ),
    # A pod with claims of another driver only is no NPU pod.
    {
        **pod("gpu", "dra-node-1"),
        "spec": {
            "containers": [{"name": "c"}],
            "resourceClaims": [{"name": "g", "resourceClaimName": "gpu"}],
        },
    },
]


def test_dra_pods_show_their_claims_devices() -> None:
    gpu = {
        "metadata": {"name": "gpu", "namespace": "default"},
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {"request": "g", "driver": "gpu.example.com", "pool": "p", "device": "g"}
                    ]
                }
            }
        },
    }
    rows = views.npu_pods(DRA_PODS, [*CLAIMS, gpu])
    assert views.render(views.pod_table(rows, all_namespaces=False)) == (
        "NAME   NODE         PHASE       NPUS   DEVICES       SHARES\n"
        "old    dra-node-1   Succeeded   1      npu-1         <none>\n"
        "pair   dra-node-1   Running     2      npu-0,npu-1   <none>\n"
        "seed   dra-node-1   Running     1      npu-2         <none>\n"
    )
    by_name = {r.name: r for r in rows}
    assert by_name["seed"].claims == ("seed-extended-resources-abc",)
    assert by_name["pair"].as_dict()["claims"] == ["pair-npus-xyz"]
    assert by_name["old"].claims == ()  # from the annotation: the claim is gone
    # Without the claims listed, the extender's annotation still tells the device.
    assert views.npu_pods(DRA_PODS[:1])[0].devices == ()  # neither claim nor annotation


def test_a_whole_device_is_whole_with_a_share_id_too() -> None:
    # The driver's devices allow several allocations, so the allocator gives every result
    # a shareID; one that consumes the whole device's compute is a whole NPU.
    whole = claim("w", "dra-node-1", ["npu-2"], shareID="s0", consumedCapacity={"compute": "100"})
    (row,) = views.npu_nodes([dra_node("dra-node-1")], [], SLICES, [whole])
    assert (row.allocated, row.shared_devices, row.allocated_devices) == (1, 0, ["npu-2"])


def test_dra_nodes_from_their_slices_and_the_claims() -> None:
    pods = views.npu_pods([*PODS[:1], *DRA_PODS], CLAIMS)
    rows = views.npu_nodes(DRA_NODES, pods, SLICES, CLAIMS)
    # dra-node-1: 4 devices in its slice, npu-3 unhealthy; npu-2 (seed) and npu-0, npu-1
    # (pair) allocated by claims: free = 4 - 1 - 3 = 0. npu-node-1: the device plugin's.
    assert views.render(views.node_table(rows)) == (
        "NODE         MODEL          TOTAL   ALLOCATED   SHARED   SHARED-CORE   UNHEALTHY   FREE\n"
        "dra-node-1   hanguang-800   4       3           0        0%            1           0\n"
        "npu-node-1   hanguang-800   2       2           0        0%            0           0\n"
    )
    dra = rows[0].as_dict()
    assert dra["driver"] == "dra"
    assert dra["devices"] == ["npu-0", "npu-1", "npu-2", "npu-3"]
    assert dra["allocated_devices"] == ["npu-0", "npu-1", "npu-2"]
    assert dra["pods"] == ["default/pair", "default/seed"]  # old is done
    assert rows[1].driver == "device-plugin"


def test_a_dra_node_without_its_slice_and_shared_devices() -> None:
    # The driver is not running yet: the node shows, with no devices.
    (row,) = views.npu_nodes([dra_node("dra-node-2")], [], [], [])
    assert (row.total, row.allocated, row.free, row.devices) == (0, 0, 0, [])
    # Two shares of one device (consumable capacity: a shareID per allocation).
    shares = [
        claim("a", "dra-node-2", ["npu-0"], shareID="s1", consumedCapacity={"compute": "30"}),
        claim("b", "dra-node-2", ["npu-0"], shareID="s2", consumedCapacity={"compute": "60"}),
    ]
    (row,) = views.npu_nodes(
        [dra_node("dra-node-2")], [], [resource_slice("dra-node-2", 2)], shares
    )
    assert (row.total, row.allocated, row.shared_devices, row.shared_core_percent, row.free) == (
        2,
        0,
        1,
        90,
        1,
    )
    assert row.allocated_devices == ["npu-0"]
    p = extended(pod("s", "dra-node-2", npu=1), "a")
    (one,) = views.npu_pods([p], shares)
    assert (one.npus, one.devices, one.shares) == (0, (), (("npu-0", 30),))


def test_a_dra_pod_whose_claim_is_malformed_says_so() -> None:
    bad = {
        "metadata": {"name": "seed-x", "namespace": "default"},
        "status": {"allocation": {"devices": "nope"}},
    }
    p = extended(pod("seed", "dra-node-1", npu=1), "seed-x")
    (row,) = views.npu_pods([p], [bad])
    assert "status.allocation.devices is not an object" in row.problem
