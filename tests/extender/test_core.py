"""Filter, prioritize and bind against an in-memory API (no HTTP)."""

from __future__ import annotations

import threading

import pytest

from extender.fakeapi import FakeApi, node, pod
from kubenpu.errors import ApiError, Conflict, PlacementError
from kubenpu.extender.binder import BindError, overcommitted
from kubenpu.extender.cache import ClusterCache
from kubenpu.extender.core import Extender
from kubenpu.model import Placement
from kubenpu.names import (
    ANNOTATION_ASSUMED_AT,
    ANNOTATION_DEVICES,
    ANNOTATION_NODE,
    ANNOTATION_POLICY,
    ANNOTATION_SHARES,
    LABEL_NPU_MODEL,
    LABEL_PLACED_NODE,
)


def extender(api: FakeApi, policy: str = "fgd") -> Extender:
    """An extender whose cache holds what the API has now (as after an informer list)."""
    ext = Extender(ClusterCache(policy), api)
    ext.cache.replace_nodes(api.list("nodes")[0])
    ext.cache.replace_pods(api.list("pods")[0])
    return ext


def args(p: dict, names: list[str]) -> dict:
    return {"Pod": p, "Nodes": None, "NodeNames": names}


def bind_args(p: dict, target: str) -> dict:
    meta = p["metadata"]
    return {
        "PodName": meta["name"],
        "PodNamespace": meta["namespace"],
        "PodUID": meta["uid"],
        "Node": target,
    }


def bind(ext: Extender, p: dict, target: str) -> str:
    """Bind ``p`` to ``target``: "" when bound, else why not (kube-scheduler's ``Error``)."""
    try:
        ext.bind(bind_args(p, target))
    except BindError as err:
        assert isinstance(err, PlacementError)
        return str(err)
    return ""


def sync(ext: Extender, api: FakeApi) -> None:
    """What the watch would deliver: every pod as the API has it now."""
    with ext.lock:
        ext.cache.replace_pods(api.list("pods")[0])


def test_filter_gives_a_reason_per_node_in_kube_scheduler_style() -> None:
    # n1: 4 NPUs, three taken whole (1 free, 100%); n2: no NPUs; n3: other model.
    api = FakeApi([node("n1"), node("n2", 0), node("n3", model="other")])
    ext = extender(api)
    for i in range(3):
        p = api.add_pod(pod(f"w{i}", npus=1))
        assert bind(ext, p, "n1") == ""
    sync(ext, api)
    shared = pod("s", core=40, node_selector={LABEL_NPU_MODEL: "hanguang-800"})
    result = ext.filter(args(shared, ["n1", "n2", "n3"]), ["n1", "n2", "n3"])
    assert result["NodeNames"] == ["n1"]
    assert result["FailedAndUnresolvableNodes"] == {
        "n2": "no NPU devices",
        "n3": "NPU model not hanguang-800",
    }
    big = pod("big", npus=2)
    result = ext.filter(args(big, ["n1", "n2"]), ["n1", "n2"])
    assert result["NodeNames"] == []
    assert result["FailedNodes"] == {"n1": "Insufficient aliyun.com/npu"}
    # Shares: fill the last device to 70%, then 40% fits nowhere.
    p = api.add_pod(pod("s70", core=70))
    assert bind(ext, p, "n1") == ""
    sync(ext, api)
    result = ext.filter(args(shared, ["n1"]), ["n1"])
    assert result["FailedNodes"] == {
        "n1": "Insufficient aliyun.com/npu-core: no NPU with 40 percent free core"
    }
    assert 'verb="filter"' in ext.metrics.render().decode()


def test_filter_unknown_nodes_and_invalid_pods() -> None:
    api = FakeApi([node("n1")])
    ext = extender(api)
    result = ext.filter(args(pod("a", npus=1), ["n1", "ghost"]), ["n1", "ghost"])
    assert result["NodeNames"] == ["n1"]
    assert result["FailedNodes"] == {"ghost": "node not known to kubenpu yet"}
    bad = pod("bad", npus=1, core=10)
    result = ext.filter(args(bad, ["n1"]), ["n1"])
    assert "the pod asks for both aliyun.com/npu" in result["FailedAndUnresolvableNodes"]["n1"]


def test_filter_excludes_unhealthy_devices() -> None:
    api = FakeApi([node("n1", 2, sick=(0, 1)), node("n2", 2, sick=(1,))])
    ext = extender(api)
    result = ext.filter(args(pod("a", npus=2), ["n1", "n2"]), ["n1", "n2"])
    assert result["NodeNames"] == []
    assert result["FailedNodes"] == {
        "n1": "fewer than 2 healthy aliyun.com/npu",
        "n2": "fewer than 2 healthy aliyun.com/npu",
    }
    p = api.add_pod(pod("one", npus=1))
    assert bind(ext, p, "n2") == ""
    assert api.get_pod("default", "one")["metadata"]["annotations"][ANNOTATION_DEVICES] == "npu-0"


def test_prioritize_gives_the_engines_choice_10() -> None:
    # bestfit prefers the fuller node: n2 has one device used, so a share goes there.
    api = FakeApi([node("n1"), node("n2"), node("n3", 0)])
    ext = extender(api, "bestfit")
    p = api.add_pod(pod("w", npus=1))
    assert bind(ext, p, "n2") == ""
    sync(ext, api)
    scores = ext.prioritize(args(pod("s", core=30), ["n1", "n2", "n3"]), ["n1", "n2", "n3"])
    assert scores == [
        {"Host": "n1", "Score": 0},
        {"Host": "n2", "Score": 10},
        {"Host": "n3", "Score": 0},  # not a candidate at all
    ]
    for s in scores:
        assert 0 <= s["Score"] <= 10


def test_bind_records_the_placement_then_binds() -> None:
    api = FakeApi([node("n1", 8, groups=2)])
    ext = extender(api, "fgd")
    p = api.add_pod(pod("quad", npus=4))
    assert bind(ext, p, "n1") == ""
    got = api.get_pod("default", "quad")
    ann = got["metadata"]["annotations"]
    assert got["spec"]["nodeName"] == "n1"
    assert ann[ANNOTATION_NODE] == "n1"
    # Topology-aware: four devices of one interconnect group (0-3 or 4-7).
    devices = ann[ANNOTATION_DEVICES].split(",")
    assert devices in (["npu-0", "npu-1", "npu-2", "npu-3"], ["npu-4", "npu-5", "npu-6", "npu-7"])
    assert ann[ANNOTATION_SHARES] == "1000,1000,1000,1000"
    assert ann[ANNOTATION_POLICY] == "fgd"
    assert ann[ANNOTATION_ASSUMED_AT].endswith("Z")
    assert got["metadata"]["labels"][LABEL_PLACED_NODE] == "n1"
    assert api.calls == ["get", "patch", "list", "bind", "get"]  # the last get is ours
    # A retried bind of a bound pod is a no-op success.
    assert bind(ext, p, "n1") == ""


def test_failed_binding_rolls_back_the_reservation_and_the_record() -> None:
    api = FakeApi([node("n1", 1)])
    ext = extender(api)
    p = api.add_pod(pod("a", npus=1))
    api.fail["bind"] = ApiError("apiserver down", 503)
    result = bind(ext, p, "n1")
    assert "apiserver down" in result
    got = api.get_pod("default", "a")
    assert ANNOTATION_NODE not in got["metadata"]["annotations"]
    assert not got["spec"].get("nodeName")
    # The device is free again in the cache: the next bind gets it.
    assert ext.filter(args(p, ["n1"]), ["n1"])["NodeNames"] == ["n1"]
    assert bind(ext, p, "n1") == ""


def test_bind_refuses_a_changed_pod_and_a_node_that_is_full() -> None:
    api = FakeApi([node("n1", 1)])
    ext = extender(api)
    p = api.add_pod(pod("a", npus=1))
    api.fail["patch"] = Conflict("modified", 409)
    assert "changed meanwhile" in bind(ext, p, "n1")
    assert bind(ext, p, "n1") == ""
    sync(ext, api)
    q = api.add_pod(pod("b", npus=1))
    assert "no longer fits on n1" in bind(ext, q, "n1")
    gone = dict(q, metadata=dict(q["metadata"], uid="other"))
    assert "not the one scheduled" in bind(ext, gone, "n1")


def test_interrupted_bind_is_kept_by_a_restarted_extender() -> None:
    # The record was written, then the extender died before the Binding.
    api = FakeApi([node("n1", 4)])
    recorded = {
        ANNOTATION_NODE: "n1",
        ANNOTATION_DEVICES: "npu-2",
        ANNOTATION_SHARES: "1000",
        ANNOTATION_ASSUMED_AT: "2025-01-01T00:00:00.000000Z",
    }
    p = api.add_pod(pod("a", npus=1, annotations=recorded))
    ext = extender(api)  # a fresh start: the record is the truth
    other = ext.filter(args(pod("b", npus=4), ["n1"]), ["n1"])
    assert other["FailedNodes"] == {"n1": "Insufficient aliyun.com/npu"}
    # The pod itself is decided as if it held nothing, and keeps its devices when bound.
    assert ext.filter(args(p, ["n1"]), ["n1"])["NodeNames"] == ["n1"]
    assert bind(ext, p, "n1") == ""
    assert api.get_pod("default", "a")["metadata"]["annotations"][ANNOTATION_DEVICES] == "npu-2"


def test_two_replicas_racing_for_the_last_device_never_both_win() -> None:
    """Two extenders with the same (stale) view bind two pods to the one free device.

    Replica B's whole bind runs between A's patch and A's fresh read: B's read sees A's
    record, so B backs off and withdraws its own; A then finds no conflict and binds.
    Whoever loses is retried by kube-scheduler and finds the device taken.
    """
    api = FakeApi([node("n1", 1)])
    a, b = extender(api), extender(api)
    pa, pb = api.add_pod(pod("pa", npus=1)), api.add_pod(pod("pb", npus=1))
    results: dict[str, str] = {}
    b_started = threading.Event()

    def interleave() -> None:
        # After A's patch, let B run its whole bind before A reads.
        if threading.current_thread().name == "A" and not b_started.is_set():
            b_started.set()
            tb = threading.Thread(
                target=lambda: results.setdefault("b", bind(b, pb, "n1")), name="B"
            )
            tb.start()
            tb.join()

    api.after_patch = interleave
    ta = threading.Thread(target=lambda: results.setdefault("a", bind(a, pa, "n1")), name="A")
    ta.start()
    ta.join()
    # Exactly one binder wins: A, whose record B saw and yielded to.
    winners = [k for k, r in results.items() if not r]
    assert winners == ["a"], results
    bound = [p["metadata"]["name"] for p in api.pods.values() if p["spec"].get("nodeName")]
    assert bound == ["pa"]
    # Whatever happened, the records left on the API never over-commit the device.
    placements = [
        Placement(f"default/{p['metadata']['name']}", "n1", ("npu-0",), (1000,))
        for p in api.pods.values()
        if p["metadata"]["annotations"].get(ANNOTATION_NODE)
    ]
    assert overcommitted(placements) is None
    # Retry the losers (as kube-scheduler does) from fresh caches: in the end exactly one
    # pod holds the device.
    api.after_patch = lambda: None
    a, b = extender(api), extender(api)
    for ext, p in ((a, pa), (b, pb)):
        if not api.get_pod("default", p["metadata"]["name"])["spec"].get("nodeName"):
            bind(ext, p, "n1")
    assert sum(bool(p["spec"].get("nodeName")) for p in api.pods.values()) == 1


def test_threads_in_one_extender_never_share_a_device() -> None:
    api = FakeApi([node("n1", 4), node("n2", 4)])
    ext = extender(api)
    pods = [api.add_pod(pod(f"p{i}", npus=1)) for i in range(12)]
    results = [""] * len(pods)

    def bind_one(i: int) -> None:
        results[i] = bind(ext, pods[i], "n1" if i % 2 else "n2")

    threads = [threading.Thread(target=bind_one, args=(i,)) for i in range(len(pods))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(not r for r in results) == 8  # 4 devices on each node
    held = [
        (p["spec"]["nodeName"], p["metadata"]["annotations"][ANNOTATION_DEVICES])
        for p in api.pods.values()
        if p["spec"].get("nodeName")
    ]
    assert len(held) == len(set(held)) == 8


@pytest.mark.parametrize(
    ("shares", "problem"),
    [
        ([("a", "d0", 1000), ("b", "d1", 1000)], None),
        ([("a", "d0", 600), ("b", "d0", 400)], None),
        ([("a", "d0", 600), ("b", "d0", 500)], "d0 is held by default/a, default/b (1100 milli)"),
        ([("a", "d0", 1000), ("b", "d0", 100)], "d0 is held by default/a, default/b (1100 milli)"),
    ],
)
def test_overcommitted(shares, problem) -> None:
    placements = [Placement(f"default/{p}", "n", (d,), (s,)) for p, d, s in shares]
    assert overcommitted(placements) == problem


def test_an_empty_cache_knows_no_node() -> None:
    ext = Extender(ClusterCache("fgd"), FakeApi())
    result = ext.filter(args(pod("a", npus=1), ["n1"]), ["n1"])
    assert result["FailedNodes"] == {"n1": "node not known to kubenpu yet"}
    assert ext.prioritize(args(pod("a", npus=1), ["n1"]), ["n1"]) == [{"Host": "n1", "Score": 0}]
