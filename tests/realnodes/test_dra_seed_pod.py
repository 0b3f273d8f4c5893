"""The seed's literal pod on DRA nodes: ``kubenpu dev-cluster up --nodes 2 --npus 4 --dra``.

examples/test-npu-pod.yaml, applied as the file is (as tests/realnodes/test_walkthrough.py
applies it on device-plugin nodes), asks for ``aliyun.com/npu: 1`` and reads
``KUBENPU_DEVICES`` from the pod's ``kubenpu.io/devices`` annotation through the downward
API. On DRA nodes kube-scheduler's DRA plugin allocates an extended-resource claim in
PreBind and the extender, binding, writes that claim's device as the annotation; the
container (the ResNet-50 image, which checks its devices with npu-check's code) sees the
device node and env the driver's CDI spec gave it, finds them equal to the annotation,
trains and completes. Its log names exactly the device the claim was allocated, and
``kubectl npu nodes/pods`` show that device held, from the node's ResourceSlice and the
claim.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.support import MANIFESTS, Cluster, wait_for
from kubernetes import client as k8s
from typer.testing import CliRunner

from kubenpu import names
from kubenpu.devcluster import extender as dev_extender
from kubenpu.devcluster.cluster import ClusterSpec, up
from kubenpu.kubectl_plugin import cli as kubectl_npu
from realnodes.conftest import (
    create_regsecret,
    npu_check_facts,
    push_resnet50,
    require_root,
    wait_phase,
)

pytestmark = pytest.mark.realnodes

#: The seed pod's budget on a DRA node, as on a device-plugin node (test_walkthrough).
SEED_POD_SECONDS = 300


@pytest.fixture(scope="module")
def dra_only() -> Iterator[Cluster]:
    """``dev-cluster up --nodes 2 --npus 4 --dra``: every NPU node served by the DRA driver."""
    require_root()
    state_dir = Path(tempfile.mkdtemp(prefix="kubenpu-dra-seed-"))
    dev = up(state_dir, ClusterSpec(npu_nodes=2, npus_per_node=4, dra_nodes=2))
    try:
        yield Cluster(dev)
    finally:
        dev.down()


def test_the_seeds_pod_completes_with_its_claims_device(dra_only: Cluster) -> None:
    cluster = dra_only
    resnet50 = push_resnet50(cluster)
    assert create_regsecret(cluster).strip() == "secret/regsecret created"
    for node in cluster.dev.npu_nodes:
        assert cluster.allocatable_npus(node.name) == 0  # nothing but DRA serves them
    out = cluster.kubectl("apply", "-f", str(MANIFESTS / "test-npu-pod.yaml"))
    assert out.strip() == "pod/test-npu-pod created"

    # The claim kube-scheduler made for aliyun.com/npu, read while the pod runs (it goes
    # with the pod once the pod is done).
    def claimed() -> dict[str, Any] | None:
        pod = cluster.pod("test-npu-pod") or {}
        return pod if (pod.get("status") or {}).get("extendedResourceClaimStatus") else None

    pod = wait_for("test-npu-pod's extended-resource claim", claimed, timeout=120)
    claim_status = pod["status"]["extendedResourceClaimStatus"]
    (mapping,) = claim_status["requestMappings"]
    assert mapping["resourceName"] == names.RESOURCE_NPU
    claim = k8s.CustomObjectsApi(cluster.api.api_client).get_namespaced_custom_object(
        "resource.k8s.io", "v1", "default", "resourceclaims", claim_status["resourceClaimName"]
    )
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    device = result["device"]
    index = device.rsplit("-", 1)[1]

    # kubectl npu, against the real API meanwhile: the node's slice, the claim's device.
    plugin = ["--kubeconfig", str(cluster.dev.kubeconfig), "-o", "json"]
    out = CliRunner().invoke(kubectl_npu.app, ["nodes", *plugin])
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.stdout)["items"]}
    assert {n.name for n in cluster.dev.npu_nodes} == set(rows)
    held = rows[result["pool"]]
    assert (held["driver"], held["total"], held["allocated"]) == ("dra", 4, 1)
    assert held["devices"] == ["npu-0", "npu-1", "npu-2", "npu-3"]
    assert held["allocated_devices"] == [device]
    out = CliRunner().invoke(kubectl_npu.app, ["pods", *plugin])
    assert out.exit_code == 0, out.output
    (listed,) = json.loads(out.stdout)["items"]
    assert (listed["name"], listed["devices"]) == ("test-npu-pod", [device])
    assert listed["claims"] == [claim_status["resourceClaimName"]]

    pod = wait_phase(cluster, "test-npu-pod", "Succeeded", "Failed", timeout=SEED_POD_SECONDS)
    log = cluster.kubectl("logs", "test-npu-pod")
    print(log)
    assert pod["status"]["phase"] == "Succeeded", log
    assert "Completed" in cluster.kubectl("get", "po", "test-npu-pod")
    assert pod["spec"]["containers"][0]["image"] == resnet50
    node = pod["spec"]["nodeName"]
    assert (result["driver"], result["pool"]) == (names.DRA_DRIVER, node)

    # The extender wrote exactly that device on the pod, and no placement record.
    annotations = pod["metadata"]["annotations"]
    assert annotations[names.ANNOTATION_DEVICES] == device
    assert names.ANNOTATION_NODE not in annotations
    assert names.LABEL_PLACED_NODE not in (pod["metadata"].get("labels") or {})

    # The container saw that device only, through the driver's CDI spec, and said so.
    facts = npu_check_facts(log)
    assert f"NPU_VISIBLE_DEVICES={index}" in facts["env"], log
    assert f"MOCK_NPU_VISIBLE_DEVICES={index}" in facts["env"], log
    assert [d.split()[0] for d in facts["device"]] == [f"/dev/mock-npu{index}"], log
    assert facts["record"] == [device], log
    assert facts["ok"] == [f"1 device(s): {index}"], log
    assert log.splitlines()[-1].startswith("top-1: "), log

    extender_log = Path(cluster.dev.processes[dev_extender.PROCESS].log).read_text()
    assert f"bound default/test-npu-pod to {node}: devices {device} from its claims" in (
        extender_log
    )
