"""The DRA driver on real kubelets v1.37: ResourceSlice, claims prepared through CDI, the
seed's ``aliyun.com/npu`` pod through the DeviceClass's ``extendedResourceName``.

One cluster for the module: ``npu-node-1`` served by the device plugin, ``npu-node-2`` by
``kubenpu dra-driver`` (``ClusterSpec(dra_nodes=1)``, ``dev-cluster up --dra-nodes 1``),
two NPUs each.

1. the driver registers with the kubelet and publishes a ResourceSlice; the dev cluster
   creates the DeviceClass ``npu.aliyun.com`` mapping ``aliyun.com/npu``;
2. a pod with a ResourceClaimTemplate gets one NPU on the DRA node: the container sees the
   allocated device node and env (npu-check prints them), the claim is prepared (CDI spec,
   checkpoint), survives a driver crash, and is unprepared when the pod ends;
3. the seed's plain ``limits: {aliyun.com/npu: 1}`` pod, with kube-scheduler configured
   as ``up`` wrote it (the extender manages ``aliyun.com/npu``): on the DRA node the
   extender passes the node and binds it without a record (it writes only the claim's
   device as ``kubenpu.io/devices``), and kube-scheduler's DRA plugin serves the pod
   through an extended-resource claim; on the device-plugin node, in the
   same cluster, the extender records the device and the device plugin serves it;
4. the extender rates the DRA node from its ResourceSlice and the claims' allocations (its
   own informers, its RBAC): with both its NPUs held by a claim, the DRA node is no
   candidate for a 1-NPU pod and the device-plugin node is the engine's pick.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import yaml
from e2e.support import Cluster, wait_for

from kubenpu import names
from kubenpu.devcluster import extender as dev_extender
from kubenpu.dra import deviceclass
from kubenpu.extender.core import DRA_SCORE
from realnodes.conftest import DRA_DP_NODE as DP_NODE
from realnodes.conftest import DRA_NODE, npu_check_facts, wait_phase
from realnodes.conftest import custom_objects as _custom
from realnodes.conftest import npu_check_pod as _pod

pytestmark = pytest.mark.realnodes

DRIVER = names.DRA_DRIVER


def test_driver_publishes_its_slice_and_the_device_class(dra: Cluster) -> None:
    custom = _custom(dra)
    listing = custom.list_cluster_custom_object("resource.k8s.io", "v1", "resourceslices")
    ours = [s for s in listing["items"] if s["spec"]["driver"] == DRIVER]
    assert [s["spec"]["nodeName"] for s in ours] == [DRA_NODE]
    devices = ours[0]["spec"]["devices"]
    assert [d["name"] for d in devices] == ["npu-0", "npu-1"]
    assert devices[1]["attributes"]["index"] == {"int": 1}
    assert devices[1]["allowMultipleAllocations"] is True
    assert devices[1]["capacity"]["memory"]["value"] == "16Gi"
    assert not any("taints" in d for d in devices)  # every device healthy
    klass = custom.get_cluster_custom_object("resource.k8s.io", "v1", "deviceclasses", DRIVER)
    assert klass["spec"]["extendedResourceName"] == names.RESOURCE_NPU
    # The DRA node advertises no aliyun.com/npu itself; the device-plugin node does.
    assert dra.allocatable_npus(DRA_NODE) == 0
    assert dra.allocatable_npus(DP_NODE) == 2
    log = Path(dra.dev.processes[f"dra-driver/{DRA_NODE}"].log).read_text()
    assert "registered with the kubelet" in log


def test_claim_template_pod_gets_its_npu_through_cdi(dra: Cluster) -> None:
    dra.kubectl(
        "apply", "-f", "-", stdin=yaml.safe_dump(deviceclass.claim_template("one-npu", DRIVER))
    )
    pod = _pod(
        "claimed",
        claims=["npu"],
        args=["--sleep", "20"],
        resourceClaims=[{"name": "npu", "resourceClaimTemplateName": "one-npu"}],
    )
    dra.api.create_namespaced_pod("default", pod)
    running = wait_phase(dra, "claimed", "Running", timeout=90)
    assert running["spec"]["nodeName"] == DRA_NODE
    (status,) = running["status"]["resourceClaimStatuses"]
    claim = _custom(dra).get_namespaced_custom_object(
        "resource.k8s.io", "v1", "default", "resourceclaims", status["resourceClaimName"]
    )
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    assert (result["driver"], result["pool"]) == (DRIVER, DRA_NODE)
    index = result["device"].rsplit("-", 1)[1]
    node = dra.dev.node(DRA_NODE)
    uid = claim["metadata"]["uid"]
    spec_file = node.cdi_dir / f"{DRIVER}-{uid}.json"
    checkpoint = node.kubelet_dir / "plugins" / DRIVER / "checkpoint.json"
    assert spec_file.exists()
    assert uid in checkpoint.read_text()

    # A driver crash with the claim prepared loses nothing: the checkpoint brings it back.
    dra.dev.stop_process(f"dra-driver/{DRA_NODE}", kill=True)
    dra.dev.start_process(f"dra-driver/{DRA_NODE}")
    log_path = Path(dra.dev.processes[f"dra-driver/{DRA_NODE}"].log)
    wait_for(
        "the restarted driver restored the claim",
        lambda: "restored 1 prepared claim" in log_path.read_text(),
        timeout=30,
    )
    done = wait_phase(dra, "claimed", "Succeeded", "Failed", timeout=90)
    log = dra.kubectl("logs", "claimed")
    print(log)
    assert done["status"]["phase"] == "Succeeded", log
    facts = npu_check_facts(log)
    assert f"NPU_VISIBLE_DEVICES={index}" in facts["env"]
    assert f"MOCK_NPU_VISIBLE_DEVICES={index}" in facts["env"]
    assert facts["device"] == [f"/dev/mock-npu{index} 241:{index}"]
    # The pod ended: the kubelet unprepares the claim and the driver removes its spec.
    wait_for("the claim unprepared", lambda: not spec_file.exists(), timeout=60)
    wait_for("the checkpoint forgot it", lambda: uid not in checkpoint.read_text(), timeout=10)
    dra.kubectl("delete", "pod", "claimed", "--wait=true")


def test_plain_npu_pod_through_extended_resource_name(dra: Cluster) -> None:
    # kube-scheduler runs as `up` configured it: the extender manages aliyun.com/npu.
    config = yaml.safe_load(dev_extender.scheduler_config_path(dra.dev.paths).read_text())
    managed = [r["name"] for r in config["extenders"][0]["managedResources"]]
    assert names.RESOURCE_NPU in managed
    limits = {names.RESOURCE_NPU: "1"}  # the seed's pod: a plain extended resource
    on_dra = {"nodeSelector": {names.LABEL_NPU_DRIVER: names.NPU_DRIVER_DRA}}
    on_dp = {"nodeSelector": {"kubernetes.io/hostname": DP_NODE}}
    sleep = ["--sleep", "10"]  # time to read the claim, which goes with the pod
    try:
        dra.api.create_namespaced_pod(
            "default", _pod("seed-dra", limits=limits, args=sleep, **on_dra)
        )
        dra.api.create_namespaced_pod("default", _pod("seed-dp", limits=limits, **on_dp))
        running = wait_phase(dra, "seed-dra", "Running", timeout=120)
        # DRA serves it through a claim kube-scheduler made for the extended resource.
        claim_status = running["status"]["extendedResourceClaimStatus"]
        assert claim_status["requestMappings"][0]["resourceName"] == names.RESOURCE_NPU
        claim = _custom(dra).get_namespaced_custom_object(
            "resource.k8s.io",
            "v1",
            "default",
            "resourceclaims",
            claim_status["resourceClaimName"],
        )
        (result,) = claim["status"]["allocation"]["devices"]["results"]
        assert (result["driver"], result["pool"]) == (DRIVER, DRA_NODE)
        dra_index = result["device"].rsplit("-", 1)[1]
        for name, node in (("seed-dra", DRA_NODE), ("seed-dp", DP_NODE)):
            done = wait_phase(dra, name, "Succeeded", "Failed", timeout=120)
            log = dra.kubectl("logs", name)
            print(f"{name} on {done['spec']['nodeName']}:\n{log}")
            assert done["status"]["phase"] == "Succeeded", log
            assert done["spec"]["nodeName"] == node
            facts = npu_check_facts(log)
            assert len(facts["device"]) == 1 and facts["ok"], log
        dra_pod, dp_pod = dra.pod("seed-dra"), dra.pod("seed-dp")
        assert dra_pod and dp_pod
        # The container saw the claim's device; the extender bound it without a record.
        dra_env = npu_check_facts(dra.kubectl("logs", "seed-dra"))["env"]
        assert f"NPU_VISIBLE_DEVICES={dra_index}" in dra_env
        # No record (no kubenpu.io/node): only the claim's device, for the downward API.
        dra_annotations = dra_pod["metadata"].get("annotations") or {}
        assert dra_annotations.get(names.ANNOTATION_DEVICES) == result["device"]
        assert names.ANNOTATION_NODE not in dra_annotations
        # The device plugin served the second as before, on the device the extender chose.
        assert "extendedResourceClaimStatus" not in dp_pod["status"]
        recorded = dp_pod["metadata"]["annotations"][names.ANNOTATION_DEVICES]
        dp_index = recorded.rsplit("-", 1)[1]
        assert (
            f"NPU_VISIBLE_DEVICES={dp_index}"
            in npu_check_facts(dra.kubectl("logs", "seed-dp"))["env"]
        )
        log = Path(dra.dev.processes[dev_extender.PROCESS].log).read_text()
        bound = f"bound default/seed-dra to {DRA_NODE}: devices {result['device']} from its claims"
        assert bound in log
    finally:
        dra.kubectl("delete", "pods", "--all", "--wait=true")


def _prioritize(dra: Cluster, pod: dict, nodes: list[str]) -> dict[str, int]:
    """The extender's prioritize answer, asked the way kube-scheduler asks it."""
    config = yaml.safe_load(dev_extender.scheduler_config_path(dra.dev.paths).read_text())
    url = config["extenders"][0]["urlPrefix"].rstrip("/") + "/prioritize"
    assert url.startswith("http://127."), url  # the dev cluster's extender, on loopback
    body = json.dumps({"Pod": pod, "NodeNames": nodes}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return {h["Host"]: h["Score"] for h in json.loads(answer.read())}


def test_the_extender_rates_the_dra_node_from_its_slice_and_claims(dra: Cluster) -> None:
    one = _pod("asking", limits={names.RESOURCE_NPU: "1"})
    one["metadata"]["namespace"] = "default"
    nodes = [DP_NODE, DRA_NODE]

    # Both nodes empty: the DRA node is rated by the engine from its slice (not the flat
    # score of a node whose NPUs the extender does not know).
    def rated() -> dict[str, int] | None:
        scores = _prioritize(dra, one, nodes)
        return scores if scores[DRA_NODE] != DRA_SCORE else None

    wait_for("the DRA node rated from its slice", rated, timeout=30)
    holder = _pod(
        "holder",
        limits={names.RESOURCE_NPU: "2"},
        args=["--sleep", "120"],
        nodeSelector={names.LABEL_NPU_DRIVER: names.NPU_DRIVER_DRA},
    )
    try:
        dra.api.create_namespaced_pod("default", holder)
        wait_phase(dra, "holder", "Running", timeout=120)

        def held() -> dict[str, int] | None:
            scores = _prioritize(dra, one, nodes)
            return scores if scores[DRA_NODE] == 0 else None

        # The claim holds both of the DRA node's NPUs: no candidate there; the
        # device-plugin node is the engine's pick.
        assert wait_for("the claim seen", held, timeout=30)[DP_NODE] == 10
    finally:
        dra.kubectl("delete", "pods", "--all", "--wait=true")
