"""DRA-served nodes (label ``kubenpu.io/npu-driver=dra``) beside device-plugin nodes.

kube-scheduler's DynamicResources plugin allocates a DRA node's NPUs (a plain
``aliyun.com/npu`` pod through the DeviceClass's ``extendedResourceName``), so the
extender passes such nodes unjudged, scores them neutrally and binds them without a
record, telling the pod the devices its claims were allocated (``kubenpu.io/devices``);
device-plugin nodes are decided exactly as before (docs/dra.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from extender.fakeapi import FakeApi, node, pod, resource_claim, with_extended_claim
from extender.test_core import args, bind, extender, sync
from kubenpu.extender.core import DRA_SCORE
from kubenpu.names import (
    ANNOTATION_ASSUMED_AT,
    ANNOTATION_DEVICES,
    ANNOTATION_NODE,
    ANNOTATION_SHARES,
    LABEL_NPU_DRIVER,
    LABEL_NPU_MODEL,
    LABEL_PLACED_NODE,
    NPU_DRIVER_DRA,
    RESOURCE_NPU,
)


def dra_node(name: str) -> dict:
    """A node whose NPUs the DRA driver publishes: no aliyun.com/npu, no inventory."""
    obj = node(name, 0)
    obj["metadata"]["labels"] = {LABEL_NPU_MODEL: "hanguang-800", LABEL_NPU_DRIVER: NPU_DRIVER_DRA}
    return obj


def mixed() -> FakeApi:
    """dp: device plugin, 2 NPUs; dra: DRA driver; cpu: no NPUs at all."""
    return FakeApi([node("dp", 2), dra_node("dra"), node("cpu", 0)])


def test_filter_passes_a_dra_node_and_still_refuses_a_node_without_npus() -> None:
    ext = extender(mixed())
    names = ["dp", "dra", "cpu", "ghost"]
    result = ext.filter(args(pod("seed", npus=1), names), names)
    assert result["NodeNames"] == ["dp", "dra"]
    assert result["FailedAndUnresolvableNodes"] == {"cpu": "no NPU devices"}
    assert result["FailedNodes"] == {"ghost": "node not known to kubenpu yet"}
    # All pass: the fast path (no reasons computed) keeps the DRA node too.
    result = ext.filter(args(pod("seed", npus=1), ["dra", "dp"]), ["dra", "dp"])
    assert result["NodeNames"] == ["dra", "dp"]
    assert result["FailedNodes"] == result["FailedAndUnresolvableNodes"] == {}


def test_device_plugin_nodes_are_judged_as_before_beside_dra_nodes() -> None:
    ext = extender(mixed())
    names = ["dp", "dra", "cpu"]
    # Too big for dp; on the DRA node kube-scheduler's DRA plugin decides.
    result = ext.filter(args(pod("big", npus=4), names), names)
    assert result["NodeNames"] == ["dra"]
    assert result["FailedNodes"] == {"dp": "fewer than 4 healthy aliyun.com/npu"}
    assert result["FailedAndUnresolvableNodes"] == {"cpu": "no NPU devices"}
    # The wrong model is unresolvable on dp; the DRA node is not kubenpu's to judge.
    other = pod("other", npus=1, node_selector={LABEL_NPU_MODEL: "other"})
    result = ext.filter(args(other, names), names)
    assert result["NodeNames"] == ["dra"]
    assert result["FailedAndUnresolvableNodes"] == {
        "dp": "NPU model not other",
        "cpu": "no NPU devices",
    }


def test_prioritize_scores_dra_nodes_neutrally_below_the_engines_pick() -> None:
    api = FakeApi([node("dp1", 2), node("dp2", 2), dra_node("dra1"), dra_node("dra2")])
    ext = extender(api, "bestfit")
    p = api.add_pod(pod("w", npus=1))
    assert bind(ext, p, "dp2") == ""
    sync(ext, api)
    names = ["dra1", "dp1", "dp2", "dra2"]
    scores = {s["Host"]: s["Score"] for s in ext.prioritize(args(pod("s", core=30), names), names)}
    # bestfit picks the fuller dp2; dp1 is its worst candidate.
    assert scores == {"dp2": 10, "dp1": 0, "dra1": DRA_SCORE, "dra2": DRA_SCORE}
    assert 0 < DRA_SCORE < 10
    # Only DRA nodes (or no device-plugin candidate): all equal.
    only = ["dra1", "dra2", "dp1"]
    big = pod("big", npus=4)
    assert [s["Score"] for s in ext.prioritize(args(big, only), only)] == [
        DRA_SCORE,
        DRA_SCORE,
        0,
    ]
    # An invalid pod gets nothing anywhere (filter refused it everywhere).
    bad = pod("bad", npus=1, core=10)
    assert {s["Score"] for s in ext.prioritize(args(bad, names), names)} == {0}


def test_bind_on_a_dra_node_creates_the_binding_without_a_record() -> None:
    api = mixed()
    ext = extender(api)
    p = with_extended_claim(api, pod("seed", npus=1), "dra", ["npu-2"])
    assert bind(ext, p, "dra") == ""
    got = api.get_pod("default", "seed")
    assert got["spec"]["nodeName"] == "dra"
    # The claim's device, for the downward API; no record (no node, shares, label).
    assert got["metadata"]["annotations"] == {ANNOTATION_DEVICES: "npu-2"}
    assert LABEL_PLACED_NODE not in got["metadata"]["labels"]
    # The pod, its claim, the annotation, the Binding; no list. The last get is ours.
    assert api.calls == ["get", "claim", "patch", "bind", "get"]
    assert 'result="ok",verb="bind"} 1.0' in ext.metrics.render().decode()
    # The cache takes the bound pod in: its CPU and memory, no devices and no conflict.
    sync(ext, api)
    with ext.lock:
        state = ext.cache.state()
        i = state.node_index["dra"]
        assert state.cpu_free[i] == state.cpu_cap[i] - 1000
        assert ext.cache.conflicts == 0
    # A retried bind of the bound pod is a no-op success.
    assert bind(ext, p, "dra") == ""


def test_bind_on_a_dra_node_withdraws_a_stale_record_from_elsewhere() -> None:
    # An interrupted bind left a record for dp; kube-scheduler now chose the DRA node.
    api = mixed()
    recorded = {
        ANNOTATION_NODE: "dp",
        ANNOTATION_DEVICES: "npu-0",
        ANNOTATION_SHARES: "1000",
        ANNOTATION_ASSUMED_AT: "2025-01-01T00:00:00.000000Z",
    }
    p = pod("seed", npus=1, annotations=recorded)
    p["metadata"]["labels"] = {LABEL_PLACED_NODE: "dp"}
    p = with_extended_claim(api, p, "dra", ["npu-1"])
    ext = extender(api)
    blocked = ext.filter(args(pod("pair", npus=2), ["dp"]), ["dp"])
    assert blocked["FailedNodes"] == {"dp": "Insufficient aliyun.com/npu"}
    assert bind(ext, p, "dra") == ""
    got = api.get_pod("default", "seed")
    assert got["spec"]["nodeName"] == "dra"
    assert got["metadata"]["annotations"] == {ANNOTATION_DEVICES: "npu-1"}
    assert LABEL_PLACED_NODE not in got["metadata"]["labels"]
    assert api.calls == ["get", "claim", "patch", "bind", "get"]  # one patch does both
    # dp's device is free again at once (before the watch says so).
    assert ext.filter(args(pod("pair", npus=2), ["dp"]), ["dp"])["NodeNames"] == ["dp"]


def test_bind_on_a_dra_node_fails_cleanly() -> None:
    from kubenpu.errors import ApiError

    api = mixed()
    ext = extender(api)
    p = with_extended_claim(api, pod("seed", npus=1), "dra", ["npu-0"])
    api.fail["bind"] = ApiError("apiserver down", 503)
    assert "apiserver down" in bind(ext, p, "dra")
    assert not api.get_pod("default", "seed")["spec"].get("nodeName")
    assert bind(ext, p, "dra") == ""


def test_mixed_binds_keep_records_on_device_plugin_nodes_only() -> None:
    api = mixed()
    ext = extender(api)
    targets = ["dp", "dra", "dp", "dra"]
    pods = [
        with_extended_claim(api, pod(f"p{i}", npus=1), t, [f"npu-{i}"])
        if t == "dra"
        else api.add_pod(pod(f"p{i}", npus=1))
        for i, t in enumerate(targets)
    ]
    assert [bind(ext, p, t) for p, t in zip(pods, targets, strict=True)] == [""] * 4
    sync(ext, api)
    records = {
        p["metadata"]["name"]: p["metadata"]["annotations"].get(ANNOTATION_DEVICES)
        for p in api.pods.values()
        if ANNOTATION_NODE in p["metadata"]["annotations"]
    }
    assert sorted(records) == ["p0", "p2"]
    assert sorted(records.values()) == ["npu-0", "npu-1"]
    # The DRA pods carry their claims' devices, outside the record.
    assert api.get_pod("default", "p1")["metadata"]["annotations"] == {ANNOTATION_DEVICES: "npu-1"}
    assert api.get_pod("default", "p3")["metadata"]["annotations"] == {ANNOTATION_DEVICES: "npu-3"}
    # dp is full now; the DRA node still passes (its claims are kube-scheduler's business).
    names = ["dp", "dra"]
    result = ext.filter(args(pod("more", npus=1), names), names)
    assert result["NodeNames"] == ["dra"]
    assert result["FailedNodes"] == {"dp": "Insufficient aliyun.com/npu"}
    p = api.add_pod(pod("late", npus=1))
    assert "no longer fits on dp" in bind(ext, p, "dp")
    assert ext.cache.conflicts == 0


def test_the_mask_follows_the_label() -> None:
    api = FakeApi([node("a", 2), dra_node("b"), node("c", 0)])
    ext = extender(api)
    cache = ext.cache
    assert cache.dra_rows().tolist() == [False, True, False]
    with pytest.raises(ValueError, match="read-only"):
        cache.dra_rows()[0] = True
    # Relabelling a node (here c) rebuilds the state and its mask.
    relabelled = node("c", 0)
    relabelled["metadata"]["labels"] = {LABEL_NPU_DRIVER: NPU_DRIVER_DRA}
    before = cache.state()
    cache.upsert_node(relabelled)
    assert cache.state() is not before
    assert cache.dra_rows().tolist() == [False, True, True]
    assert cache.served_by_dra("c") and not cache.served_by_dra("a")
    assert not cache.served_by_dra("ghost")
    result = ext.filter(args(pod("x", npus=1), ["c"]), ["c"])
    assert result["NodeNames"] == ["c"]
    # Another value of the label is not DRA.
    other = node("c", 0)
    other["metadata"]["labels"] = {LABEL_NPU_DRIVER: "device-plugin"}
    cache.upsert_node(other)
    assert cache.dra_rows().tolist() == [False, True, False]
    assert isinstance(cache.dra_rows(), np.ndarray)


def test_a_dra_node_that_also_advertises_npus_is_still_left_to_dra() -> None:
    # The label is the operator's word: what DRA serves is not kubenpu's to record.
    obj = node("both", 2)
    obj["metadata"]["labels"][LABEL_NPU_DRIVER] = NPU_DRIVER_DRA
    assert obj["status"]["allocatable"][RESOURCE_NPU] == "2"
    api = FakeApi([obj])
    ext = extender(api)
    result = ext.filter(args(pod("big", npus=8), ["both"]), ["both"])
    assert result["NodeNames"] == ["both"]
    p = with_extended_claim(api, pod("one", npus=1), "both", ["npu-0"])
    assert bind(ext, p, "both") == ""
    assert ANNOTATION_NODE not in api.get_pod("default", "one")["metadata"]["annotations"]


# -- the devices of the pod's claims, before the Binding ----------------------------------


def test_bind_writes_every_claims_devices_of_this_driver_only() -> None:
    # A user's claim (from a template, named in the status) and a direct one, beside the
    # extended-resource claim; another driver's device is that driver's business.
    api = mixed()
    api.claims[("default", "tpl-abc")] = resource_claim(
        "default", "tpl-abc", ["npu-3", "npu-1"], pool="dra"
    )
    other = resource_claim("default", "direct", ["npu-0"], pool="dra")
    other["status"]["allocation"]["devices"]["results"].append(
        {"request": "gpu", "driver": "gpu.example.com", "pool": "dra", "device": "gpu-0"}
    )
    api.claims[("default", "direct")] = other
    p = pod("multi", npus=1)
    p["spec"]["resourceClaims"] = [
        {"name": "more", "resourceClaimTemplateName": "tpl"},
        {"name": "mine", "resourceClaimName": "direct"},
    ]
    p["status"]["resourceClaimStatuses"] = [{"name": "more", "resourceClaimName": "tpl-abc"}]
    p = with_extended_claim(api, p, "dra", ["npu-2"])
    ext = extender(api)
    assert bind(ext, p, "dra") == ""
    got = api.get_pod("default", "multi")
    assert got["metadata"]["annotations"][ANNOTATION_DEVICES] == "npu-2,npu-3,npu-1,npu-0"
    assert api.calls.count("claim") == 3


def test_a_pod_without_npus_or_claims_is_bound_plainly() -> None:
    api = mixed()
    ext = extender(api)
    p = api.add_pod(pod("cpu-only"))
    assert bind(ext, p, "dra") == ""
    assert api.calls == ["get", "bind"]  # no claim to read, nothing to tell the pod
    assert api.get_pod("default", "cpu-only")["metadata"]["annotations"] == {}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        # kube-scheduler made no claim: the DeviceClass or the feature is missing.
        ("no-status", "made it no claim (status.extendedResourceClaimStatus is missing"),
        ("claim-gone", "ResourceClaim default/seed-extended-resources-x7k2p not found"),
        ("not-allocated", "is not allocated (status.allocation is missing)"),
        ("template-pending", "no ResourceClaim made yet for its claim 'more'"),
    ],
)
def test_a_pod_whose_claims_give_no_devices_is_not_bound(setup: str, message: str) -> None:
    api = mixed()
    ext = extender(api)
    if setup == "no-status":
        p = api.add_pod(pod("seed", npus=1))
    else:
        p = pod("seed", npus=1)
        if setup == "template-pending":
            p["spec"]["resourceClaims"] = [{"name": "more", "resourceClaimTemplateName": "t"}]
        p = with_extended_claim(api, p, "dra", ["npu-0"], allocated=setup != "not-allocated")
        if setup == "claim-gone":
            api.claims.clear()
    why = bind(ext, p, "dra")
    assert message in why
    assert why.startswith("pod default/seed")
    got = api.get_pod("default", "seed")
    assert not got["spec"].get("nodeName")
    assert ANNOTATION_DEVICES not in got["metadata"]["annotations"]
    assert "bind" not in api.calls and "patch" not in api.calls
    assert 'failures_total{reason="no_claim",verb="bind"} 1.0' in ext.metrics.render().decode()


def test_a_claim_read_that_fails_fails_the_bind_and_a_retry_binds() -> None:
    from kubenpu.errors import ApiError

    api = mixed()
    ext = extender(api)
    p = with_extended_claim(api, pod("seed", npus=1), "dra", ["npu-0"])
    api.fail["claim"] = ApiError("forbidden: resourceclaims", 403)
    assert "get claim: forbidden" in bind(ext, p, "dra")
    assert not api.get_pod("default", "seed")["spec"].get("nodeName")
    assert bind(ext, p, "dra") == ""
    assert api.get_pod("default", "seed")["metadata"]["annotations"][ANNOTATION_DEVICES] == "npu-0"


def test_a_retry_after_the_annotation_was_written_does_not_patch_again() -> None:
    from kubenpu.errors import ApiError

    api = mixed()
    ext = extender(api)
    p = with_extended_claim(api, pod("seed", npus=1), "dra", ["npu-0"])
    api.fail["bind"] = ApiError("apiserver down", 503)
    assert "apiserver down" in bind(ext, p, "dra")
    api.calls.clear()
    assert bind(ext, api.get_pod("default", "seed"), "dra") == ""
    assert api.calls == ["get", "get", "claim", "bind"]  # no second patch
