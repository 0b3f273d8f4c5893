"""The DRA driver on real kubelets v1.37: shared NPUs, device taints, bad claims.

One cluster for the module (:func:`realnodes.conftest.dra`): ``npu-node-1`` served by the
device plugin, ``npu-node-2`` by ``kubenpu dra-driver``, two NPUs each.

1. two pods with a "30% of one NPU" claim (consumable capacity, KEP-5075) run at once on
   one device of the DRA node, each with its share in its env (``NPU_CORE_LIMIT``, as the
   device plugin's shared path sets it), while a whole-device claim gets the other device;
2. a device the backend reports failed carries a ``NoSchedule`` taint in the
   ResourceSlice: a new claim gets the other device, or stays Pending when none is left,
   and gets the device once it recovers and the taint is gone;
3. a claim whose opaque config is malformed gets the driver's error in a pod event, and
   nothing of it is left on the node (no CDI spec, no checkpoint entry).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.support import Cluster, wait_for

from kubenpu import names
from kubenpu.dra import deviceclass, slices
from realnodes.conftest import DRA_NODE, custom_objects, npu_check_facts, npu_check_pod, wait_phase

pytestmark = pytest.mark.realnodes

DRIVER = names.DRA_DRIVER
GROUP, VERSION = "resource.k8s.io", "v1"
#: npu-check, after printing the share variables (npu-check prints only the
#: ``*NPU_VISIBLE_DEVICES`` ones) as ``share NAME=value`` lines.
SHOW_SHARE = (
    "import os, runpy, sys\n"
    "for k in ('NPU_CORE_LIMIT', 'NPU_MEM_LIMIT_GIB'):\n"
    "    if k in os.environ: print('share', k + '=' + os.environ[k])\n"
    "sys.argv = ['npu_check.py', *sys.argv[1:]]\n"
    "runpy.run_path('/app/npu_check.py', run_name='__main__')\n"
)


def _apply(cluster: Cluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(obj))


def _claim_pod(name: str, template: str, *args: str) -> dict[str, Any]:
    pod = npu_check_pod(
        name,
        claims=["npu"],
        args=list(args),
        resourceClaims=[{"name": "npu", "resourceClaimTemplateName": template}],
    )
    pod["spec"]["containers"][0]["command"] = ["python3", "-c", SHOW_SHARE]
    return pod


def _claim_of(cluster: Cluster, pod_name: str) -> dict[str, Any]:
    """The (generated) ResourceClaim of a claim-template pod, once it is allocated."""

    def allocated() -> dict[str, Any] | None:
        pod = cluster.pod(pod_name) or {}
        statuses = pod.get("status", {}).get("resourceClaimStatuses") or []
        if not statuses or not statuses[0].get("resourceClaimName"):
            return None
        claim: dict[str, Any] = custom_objects(cluster).get_namespaced_custom_object(
            GROUP, VERSION, "default", "resourceclaims", statuses[0]["resourceClaimName"]
        )
        return claim if claim.get("status", {}).get("allocation") else None

    return wait_for(f"the claim of {pod_name} allocated", allocated, timeout=90)


def _result(claim: dict[str, Any]) -> dict[str, Any]:
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    assert (result["driver"], result["pool"]) == (DRIVER, DRA_NODE)
    return result


def _slice(cluster: Cluster) -> dict[str, Any]:
    """The DRA node's ResourceSlice."""
    obj: dict[str, Any] = custom_objects(cluster).get_cluster_custom_object(
        GROUP, VERSION, "resourceslices", slices.slice_name(DRA_NODE, DRIVER)
    )
    return obj


def _taints(cluster: Cluster) -> dict[str, list[dict[str, Any]]]:
    """Device name -> its taints in the DRA node's ResourceSlice."""
    return {d["name"]: d.get("taints", []) for d in _slice(cluster)["spec"]["devices"]}


@pytest.fixture
def clean_dra(dra: Cluster) -> Any:
    """The DRA cluster, left with no pods and every device healthy."""
    yield dra
    for device in ("npu-0", "npu-1"):
        dra.dev.set_device_health(DRA_NODE, device, healthy=True)
    dra.kubectl("delete", "pods", "--all", "--wait=true", "--timeout=120s")
    wait_for("no taints left", lambda: not any(_taints(dra).values()), timeout=30)


def test_two_30_percent_claims_share_one_device(clean_dra: Cluster) -> None:
    dra = clean_dra
    _apply(dra, deviceclass.share_template("npu-30", DRIVER, compute=30, memory_gib=4))
    _apply(dra, deviceclass.claim_template("one-npu", DRIVER))
    for name in ("share-a", "share-b"):
        dra.api.create_namespaced_pod("default", _claim_pod(name, "npu-30", "--sleep", "25"))
    claims = {n: _claim_of(dra, n) for n in ("share-a", "share-b")}
    results = {n: _result(c) for n, c in claims.items()}
    # One device, two shares: each its own shareID and 30 of the device's 100 compute.
    assert results["share-a"]["device"] == results["share-b"]["device"]
    assert results["share-a"]["shareID"] != results["share-b"]["shareID"]
    for result in results.values():
        assert result["consumedCapacity"] == {"compute": "30", "memory": "4Gi"}
    shared = results["share-a"]["device"]
    index = shared.rsplit("-", 1)[1]
    # Both run at once, on the DRA node.
    for name in results:
        assert wait_phase(dra, name, "Running", timeout=120)["spec"]["nodeName"] == DRA_NODE
    # Per claim, per share: two CDI specs, no CDI device named twice.
    cdi_dir = dra.dev.node(DRA_NODE).cdi_dir
    cdi_names = []
    for claim in claims.values():
        spec = yaml.safe_load((cdi_dir / f"{DRIVER}-{claim['metadata']['uid']}.json").read_text())
        cdi_names += [d["name"] for d in spec["devices"]]
    assert len(set(cdi_names)) == 2
    # A whole-device claim cannot share: it gets the other device.
    dra.api.create_namespaced_pod("default", _claim_pod("whole", "one-npu"))
    whole = _result(_claim_of(dra, "whole"))
    assert whole["device"] != shared
    assert whole["consumedCapacity"]["compute"] == "100"
    for name in ("share-a", "share-b", "whole"):
        done = wait_phase(dra, name, "Succeeded", "Failed", timeout=120)
        log = dra.kubectl("logs", name)
        print(f"{name}:\n{log}")
        assert done["status"]["phase"] == "Succeeded", log
    for name in ("share-a", "share-b"):
        facts = npu_check_facts(dra.kubectl("logs", name))
        assert f"NPU_VISIBLE_DEVICES={index}" in facts["env"]
        assert facts["device"] == [f"/dev/mock-npu{index} 241:{index}"]
        assert facts["share"] == ["NPU_CORE_LIMIT=30", "NPU_MEM_LIMIT_GIB=4"]
    assert "share" not in npu_check_facts(dra.kubectl("logs", "whole"))  # the whole device


def test_a_failed_device_is_tainted_and_new_claims_keep_off_it(clean_dra: Cluster) -> None:
    dra = clean_dra
    _apply(dra, deviceclass.claim_template("one-npu", DRIVER))
    dra.dev.set_device_health(DRA_NODE, "npu-0", healthy=False)
    wait_for("npu-0 tainted", lambda: _taints(dra)["npu-0"], timeout=30)
    (taint,) = _taints(dra)["npu-0"]
    assert (taint["key"], taint["effect"]) == (slices.taint_key(DRIVER), "NoSchedule")
    assert taint["timeAdded"] and not _taints(dra)["npu-1"]
    # The driver's resyncs (every 5 s) find the slice as they want it, taint and request
    # policies as the API server gives them back: no rewrite, the same timeAdded.
    version = _slice(dra)["metadata"]["resourceVersion"]
    time.sleep(6)
    assert _slice(dra)["metadata"]["resourceVersion"] == version
    # A new claim goes to the healthy device.
    dra.api.create_namespaced_pod("default", _claim_pod("after-fail", "one-npu"))
    assert _result(_claim_of(dra, "after-fail"))["device"] == "npu-1"
    assert wait_phase(dra, "after-fail", "Succeeded", "Failed")["status"]["phase"] == "Succeeded"
    dra.kubectl("delete", "pod", "after-fail", "--wait=true")
    # None left: the next claim waits, unschedulable.
    dra.dev.set_device_health(DRA_NODE, "npu-1", healthy=False)
    wait_for("npu-1 tainted", lambda: _taints(dra)["npu-1"], timeout=30)
    dra.api.create_namespaced_pod("default", _claim_pod("none-left", "one-npu"))

    def unschedulable() -> str | None:
        pod = dra.pod("none-left") or {}
        for cond in pod.get("status", {}).get("conditions") or []:
            if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                return str(cond.get("message", ""))
        return None

    message = wait_for("none-left unschedulable", unschedulable, timeout=60)
    print(f"none-left: {message}")
    time.sleep(3)
    assert (dra.pod("none-left") or {})["status"]["phase"] == "Pending"
    # npu-0 recovers: its taint goes, and the waiting claim gets it.
    dra.dev.set_device_health(DRA_NODE, "npu-0", healthy=True)
    wait_for("npu-0 untainted", lambda: not _taints(dra)["npu-0"], timeout=30)
    assert _result(_claim_of(dra, "none-left"))["device"] == "npu-0"
    assert wait_phase(dra, "none-left", "Succeeded", "Failed")["status"]["phase"] == "Succeeded"


def test_malformed_opaque_config_is_an_event_and_leaves_nothing(clean_dra: Cluster) -> None:
    dra = clean_dra
    template = deviceclass.claim_template("bad-config", DRIVER)
    parameters = {"apiVersion": f"{DRIVER}/v1", "kind": "NpuConfig", "colour": "red"}
    template["spec"]["spec"]["devices"]["config"] = [
        {"requests": ["npu"], "opaque": {"driver": DRIVER, "parameters": parameters}}
    ]
    _apply(dra, template)
    dra.api.create_namespaced_pod("default", _claim_pod("bad-config", "bad-config"))
    claim = _claim_of(dra, "bad-config")

    def driver_error() -> str | None:
        events = dra.get(
            dra.api.list_namespaced_event,
            "default",
            field_selector="involvedObject.name=bad-config",
        )["items"]
        for event in events:
            if "parameters.colour: unknown field" in event.get("message", ""):
                return str(event["message"])
        return None

    message = wait_for("the driver's error in a pod event", driver_error, timeout=90)
    print(f"bad-config event: {message}")
    assert "NpuConfig has apiVersion, kind, env" in message
    assert (dra.pod("bad-config") or {})["status"]["phase"] == "Pending"
    uid = claim["metadata"]["uid"]
    node = dra.dev.node(DRA_NODE)
    assert not [p.name for p in node.cdi_dir.iterdir() if uid in p.name]
    checkpoint = node.kubelet_dir / "plugins" / DRIVER / "checkpoint.json"
    assert uid not in checkpoint.read_text()
    log = Path(dra.dev.processes[f"dra-driver/{DRA_NODE}"].log).read_text()
    assert "parameters.colour: unknown field" in log
