"""The preempt verb: device-aware victims per node kube-scheduler offers, PDB flags as
kube-scheduler computes them, and the wire format with kube-scheduler's JSON names.

Nodes are 2 NPUs (npu-0, npu-1, 104 CPU); every pod asks 1 CPU and 1 GiB, so CPU and
memory never decide here. Shares are in percent of one device; pods sit where their
placement records say (``running``), bound there.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from extender.fakeapi import FakeApi, node, pod
from kubenpu.adapters.kube import pod_priority
from kubenpu.errors import ObjectError, WireError
from kubenpu.extender.cache import ClusterCache
from kubenpu.extender.core import Extender
from kubenpu.extender.preempt import (
    PodFacts,
    PodIndex,
    Preempter,
    pdb_violations,
    selector_matches,
)
from kubenpu.extender.server import ExtenderHTTPServer
from kubenpu.extender.service import ExtenderService
from kubenpu.extender.wire import encode_preemption_result, parse_preemption_args
from kubenpu.names import ANNOTATION_DEVICES, ANNOTATION_NODE, ANNOTATION_SHARES

HIGH = 1000


def running(
    name: str,
    devices: str,
    shares: str,
    priority: int,
    *,
    node_name: str = "n1",
    whole: bool = False,
    labels: dict[str, str] | None = None,
    start: str = "2024-01-01T00:00:00Z",
) -> dict[str, Any]:
    """A pod bound to ``node_name`` holding ``devices`` (comma-separated) at ``shares``
    (milli per device), with its priority."""
    n = len(devices.split(","))
    core = 0 if whole else int(shares) // 10
    p = pod(
        name,
        npus=n if whole else 0,
        core=core,
        node_name=node_name,
        annotations={
            ANNOTATION_NODE: node_name,
            ANNOTATION_DEVICES: devices,
            ANNOTATION_SHARES: shares,
        },
    )
    p["spec"]["priority"] = priority
    p["metadata"]["labels"] = dict(labels or {})
    p["status"] = {"phase": "Running", "startTime": start}
    return p


def share(name: str, device: int, percent: int, priority: int, **kw: Any) -> dict[str, Any]:
    return running(name, f"npu-{device}", str(percent * 10), priority, **kw)


def preemptor(*, npus: int = 0, core: int = 0, priority: int = HIGH) -> dict[str, Any]:
    p = pod("high", npus=npus, core=core)
    p["spec"]["priority"] = priority
    return p


def make(
    pods: list[dict[str, Any]], pdbs: list[dict[str, Any]] | None = None, nodes: int = 1
) -> Preempter:
    api = FakeApi([node(f"n{i}", 2) for i in range(1, nodes + 1)], pods)
    ext = Extender(ClusterCache("fgd"), api)
    ext.cache.replace_nodes(api.list("nodes")[0])
    ext.cache.replace_pods(api.list("pods")[0])
    index = PodIndex()
    index.replace(api.list("pods")[0])
    return Preempter(ext, index, lambda: list(pdbs or []))


def offer(*nodes: str, uids: tuple[str, ...] = ("uid-x",), pdb: int = 0) -> dict[str, Any]:
    """kube-scheduler's NodeNameToMetaVictims: its own count-based victims per node."""
    return {n: {"Pods": [{"UID": u} for u in uids], "NumPDBViolations": pdb} for n in nodes}


def victims(p: Preempter, pre: dict[str, Any], *nodes: str) -> dict[str, list[str]]:
    """node -> victim names (from the UIDs answered), for the nodes kept."""
    result = p.preempt(pre, offer(*nodes))
    return {
        n: [u["UID"].removeprefix("uid-") for u in v["Pods"]]
        for n, v in result["NodeNameToMetaVictims"].items()
    }


def pdb(name: str, match: dict[str, str], allowed: int = 0, ns: str = "default") -> dict:
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"matchLabels": match}, "maxUnavailable": 0},
        "status": {"disruptionsAllowed": allowed},
    }


# ---- whole NPUs ---------------------------------------------------------------------------

WHOLE_CASES = [
    pytest.param(
        # npu-0: a 50 + b 50 (priority 10 each); npu-1: c 30 + d 30 + e 40 (10 each).
        # A whole NPU needs one device with nothing on it: clear npu-0 (2 pods, sum
        # 2 x (10 + 2^31)) or npu-1 (3 pods, larger sum): npu-0. kube-scheduler's count
        # would evict one share anywhere (its aliyun.com/npu count is free).
        [
            share("a", 0, 50, 10),
            share("b", 0, 50, 10),
            share("c", 1, 30, 10),
            share("d", 1, 30, 10),
            share("e", 1, 40, 10),
        ],
        {"n1": ["a", "b"]},
        id="fewest-shares-of-one-device",
    ),
    pytest.param(
        # npu-0: a 50 (priority 50) + b 50 (10); npu-1: c 30 + d 30 + e 40 (10 each).
        # Highest victim priority first: npu-0 costs 50, npu-1 only 10: npu-1's 3 pods.
        [
            share("a", 0, 50, 50),
            share("b", 0, 50, 10),
            share("c", 1, 30, 10),
            share("d", 1, 30, 10),
            share("e", 1, 40, 10),
        ],
        {"n1": ["c", "d", "e"]},
        id="lowest-priority-device-even-if-more-pods",
    ),
    pytest.param(
        # npu-0: a whole (priority 10); npu-1: b 50 + c 50 (5 each). Clearing npu-0 evicts
        # one pod of priority 10, npu-1 two of 5: priority 5 < 10 wins.
        [
            running("a", "npu-0", "1000", 10, whole=True),
            share("b", 1, 50, 5),
            share("c", 1, 50, 5),
        ],
        {"n1": ["b", "c"]},
        id="shares-over-a-whole-pod-of-higher-priority",
    ),
    pytest.param(
        # npu-0: a 50 (priority 1000 = the preemptor's) + b 50 (10); npu-1: c whole (2000).
        # Neither device can be cleared: equal and higher priority stay. Node left out.
        [
            share("a", 0, 50, HIGH),
            share("b", 0, 50, 10),
            running("c", "npu-1", "1000", 2000, whole=True),
        ],
        {},
        id="equal-or-higher-priority-never",
    ),
]


@pytest.mark.parametrize(("pods", "expected"), WHOLE_CASES)
def test_whole_npu_preemptor(pods: list[dict[str, Any]], expected: dict[str, list[str]]) -> None:
    assert victims(make(pods), preemptor(npus=1), "n1") == expected


# ---- shares -------------------------------------------------------------------------------

SHARE_CASES = [
    pytest.param(
        # npu-0: a 25 (10), b 50 (100), f 25 (200); npu-1: c 25 (10), d 50 (50), e 25 (200).
        # 50 percent on ONE device: npu-0 {b} (highest 100) or {a, f} (200); npu-1 {d}
        # (50) or {c, e} (200). kube-scheduler's count takes a + c (25 + 25 = 50 "free",
        # on no device). Best: {d}, the lowest-priority share that frees 50 on one device.
        [
            share("a", 0, 25, 10),
            share("b", 0, 50, 100),
            share("f", 0, 25, 200),
            share("c", 1, 25, 10),
            share("d", 1, 50, 50),
            share("e", 1, 25, 200),
        ],
        50,
        {"n1": ["d"]},
        id="lowest-single-share-that-frees-50",
    ),
    pytest.param(
        # npu-0: a 50 (10) + b 50 (30); npu-1: c 75 (5), 25 free. npu-1 needs 25 more:
        # c frees 75 (priority 5); npu-0 needs a or b (10 or 30). {c}.
        [share("a", 0, 50, 10), share("b", 0, 50, 30), share("c", 1, 75, 5)],
        50,
        {"n1": ["c"]},
        id="free-space-counts",
    ),
    pytest.param(
        # npu-0: a 25 + b 25 (10 each) + c 50 (20); npu-1: d 100 as a share (20). 40 percent:
        # {a, b} frees 50 on npu-0 with highest priority 10; any other set costs 20.
        [
            share("a", 0, 25, 10),
            share("b", 0, 25, 10),
            share("c", 0, 50, 20),
            share("d", 1, 100, 20),
        ],
        40,
        {"n1": ["a", "b"]},
        id="two-low-shares-beat-one-higher",
    ),
    pytest.param(
        # Everything at the preemptor's priority or above: nothing to evict.
        [share("a", 0, 50, HIGH), share("b", 0, 50, HIGH), share("c", 1, 100, 5000)],
        50,
        {},
        id="equal-priority-never",
    ),
]


@pytest.mark.parametrize(("pods", "percent", "expected"), SHARE_CASES)
def test_share_preemptor(
    pods: list[dict[str, Any]], percent: int, expected: dict[str, list[str]]
) -> None:
    assert victims(make(pods), preemptor(core=percent), "n1") == expected


# ---- PodDisruptionBudgets -----------------------------------------------------------------


def brief_layout(**labels: dict[str, str]) -> list[dict[str, Any]]:
    """SHARE_CASES' first layout, with labels per pod."""
    shape = [("a", 0, 25, 10), ("b", 0, 50, 100), ("f", 0, 25, 200)]
    shape += [("c", 1, 25, 10), ("d", 1, 50, 50), ("e", 1, 25, 200)]
    return [share(n, dev, pct, prio, labels=labels.get(n)) for n, dev, pct, prio in shape]


def test_a_pdb_that_forbids_the_best_eviction_is_honoured() -> None:
    # d is protected (disruptionsAllowed 0): the best set without a violation is {b}
    # (npu-0, highest priority 100) ahead of {a, f} and {c, e} (200).
    p = make(brief_layout(d={"app": "d"}), [pdb("keep-d", {"app": "d"})])
    result = p.preempt(preemptor(core=50), offer("n1"))
    assert result == {
        "NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": "uid-b"}], "NumPDBViolations": 0}}
    }


def test_a_violating_victim_only_when_nothing_else_works() -> None:
    # Every pod of npu-0 and npu-1 is protected: {d} is the best set and violates once.
    layout = brief_layout(**{n: {"app": "all"} for n in "abcdef"})
    p = make(layout, [pdb("keep-all", {"app": "all"})])
    result = p.preempt(preemptor(core=50), offer("n1"))
    assert result["NodeNameToMetaVictims"]["n1"] == {
        "Pods": [{"UID": "uid-d"}],
        "NumPDBViolations": 1,
    }


def test_pdb_budget_is_used_up_most_important_first() -> None:
    # One disruption allowed over x (priority 50) and y (10): x, more important, uses it;
    # y violates. A pod listed in disruptedPods does not count; no labels never violates.
    facts = [
        PodFacts("ux", "default", "x", "n1", 50, {"app": "j"}),
        PodFacts("uy", "default", "y", "n1", 10, {"app": "j"}),
        PodFacts("uz", "default", "z", "n1", 5, {}),
    ]
    budget = pdb("j", {"app": "j"}, allowed=1)
    assert pdb_violations(facts, [budget]) == {"uy"}
    budget["status"]["disruptedPods"] = {"x": "2024-01-01T00:00:00Z"}
    assert pdb_violations(facts, [budget]) == set()
    other_ns = pdb("j", {"app": "j"}, ns="other")
    assert pdb_violations(facts, [other_ns]) == set()


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({"matchLabels": {"app": "a"}}, {"app": "a", "x": "1"}, True),
        ({"matchLabels": {"app": "a"}}, {"app": "b"}, False),
        (
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]},
            {"app": "b"},
            True,
        ),
        (
            {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]},
            {"app": "a"},
            False,
        ),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, {"app": ""}, True),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, {"app": ""}, False),
        ({"matchExpressions": [{"key": "app", "operator": "Bogus"}]}, {"app": "a"}, False),
        ({}, {"app": "a"}, False),  # empty: kube-scheduler's preemption matches nothing
        (None, {"app": "a"}, False),
    ],
)
def test_selector(selector: object, labels: dict[str, str], matches: bool) -> None:
    assert selector_matches(selector, labels) is matches


# ---- which pods, which nodes ----------------------------------------------------------------


def test_only_bound_pods_of_that_node_are_named() -> None:
    # b holds npu-0 by its record but is not bound (a bind in flight): kube-scheduler does
    # not have it on n1, so it cannot be a victim; npu-1's c is the only way.
    b = share("b", 0, 100, 10)
    del b["spec"]["nodeName"]
    p = make([b, share("c", 1, 100, 20)])
    assert victims(p, preemptor(npus=1), "n1") == {"n1": ["c"]}


def test_nodes_are_answered_each_and_unknown_ones_left_out() -> None:
    pods = [share("a", 0, 100, 10), share("b", 1, 100, 10)]
    pods += [share("c", 0, 100, 20, node_name="n2"), share("d", 1, 100, 20, node_name="n2")]
    p = make(pods, nodes=2)
    got = victims(p, preemptor(npus=1), "n1", "n2", "ghost")
    assert got == {"n1": ["a"], "n2": ["c"]}
    # kube-scheduler picks among them itself (pickOneNodeForPreemption: n1, priority 10).


def test_fits_already_keeps_kube_schedulers_own_victims() -> None:
    # npu-1 is free: the engine needs no eviction, so kube-scheduler's victims (for a
    # reason kubenpu does not model) go back unchanged.
    p = make([share("a", 0, 100, 10)])
    result = p.preempt(preemptor(npus=1), offer("n1", uids=("uid-a",), pdb=1))
    assert result["NodeNameToMetaVictims"] == {
        "n1": {"Pods": [{"UID": "uid-a"}], "NumPDBViolations": 1}
    }


def test_victims_come_most_important_first() -> None:
    pods = [share("a", 0, 50, 5), share("b", 0, 50, 7), share("c", 1, 100, 2000)]
    assert victims(make(pods), preemptor(npus=1), "n1") == {"n1": ["b", "a"]}


def test_an_unreadable_preemptor_gets_no_node() -> None:
    bad = preemptor(npus=1)
    bad["spec"]["priority"] = "high"
    assert make([share("a", 0, 100, 1)]).preempt(bad, offer("n1")) == {"NodeNameToMetaVictims": {}}


def test_pod_priority_reader() -> None:
    p = pod("p")
    assert pod_priority(p) == 0
    p["spec"]["priority"] = -5
    assert pod_priority(p) == -5
    for bad in ("1", True, 2**31, 1.5):
        p["spec"]["priority"] = bad
        with pytest.raises(ObjectError, match=r"spec\.priority"):
            pod_priority(p)


def test_the_service_feeds_the_index_with_the_cache() -> None:
    api = FakeApi([node("n1", 2)])
    service = ExtenderService(api, policy="fgd")
    a = share("a", 0, 100, 10)
    service._replace_pods([a])
    assert service.pods.get("default/a") is not None
    service._pod_event("DELETED", a)
    assert service.pods.get("default/a") is None
    service._pod_event("ADDED", a)
    assert service.preempter.pods.get("default/a") == service.pods.get("default/a")


# ---- the wire -----------------------------------------------------------------------------

#: A preempt body as kube-scheduler 1.37 marshals it for a nodeCacheCapable extender
#: (ExtenderPreemptionArgs: Go field names, no JSON tags; the unused map is null).
META_BODY = {
    "Pod": {"metadata": {"name": "high", "namespace": "default"}, "spec": {}},
    "NodeNameToVictims": None,
    "NodeNameToMetaVictims": {
        "n1": {"Pods": [{"UID": "uid-a"}, {"UID": "uid-c"}], "NumPDBViolations": 1},
        "n2": {"Pods": None, "NumPDBViolations": 0},
    },
}


def test_wire_meta_victims() -> None:
    pod_obj, offered = parse_preemption_args(META_BODY)
    assert pod_obj["metadata"]["name"] == "high"
    assert offered == {
        "n1": {"Pods": [{"UID": "uid-a"}, {"UID": "uid-c"}], "NumPDBViolations": 1},
        "n2": {"Pods": [], "NumPDBViolations": 0},
    }


def test_wire_full_victims_of_an_extender_without_node_cache() -> None:
    body = {
        "Pod": META_BODY["Pod"],
        "NodeNameToVictims": {
            "n1": {"Pods": [{"metadata": {"name": "a", "uid": "uid-a"}}], "NumPDBViolations": 0}
        },
        "NodeNameToMetaVictims": None,
    }
    assert parse_preemption_args(body)[1] == {
        "n1": {"Pods": [{"UID": "uid-a"}], "NumPDBViolations": 0}
    }


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"Pod": None},
        {"Pod": {"metadata": {}}, "NodeNameToMetaVictims": []},
        {"Pod": {"metadata": {}}, "NodeNameToMetaVictims": {"n1": {"Pods": [{"uid": "x"}]}}},
        {"Pod": {"metadata": {}}, "NodeNameToMetaVictims": {"n1": {"NumPDBViolations": -1}}},
    ],
)
def test_wire_rejects(body: object) -> None:
    with pytest.raises(WireError):
        parse_preemption_args(body)


def test_wire_result_encoding() -> None:
    result = {"NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": "u"}], "NumPDBViolations": 0}}}
    raw = encode_preemption_result(result)  # type: ignore[arg-type]
    assert raw == b'{"NodeNameToMetaVictims":{"n1":{"Pods":[{"UID":"u"}],"NumPDBViolations":0}}}'


def test_http_round_trip() -> None:
    p = make(brief_layout())
    server = ExtenderHTTPServer(("127.0.0.1", 0), p.extender, preempter=p)
    server.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        body = {"Pod": preemptor(core=50), "NodeNameToVictims": None}
        body["NodeNameToMetaVictims"] = offer("n1", uids=("uid-a", "uid-c"))
        conn.request("POST", "/preempt", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read()) == {
            "NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": "uid-d"}], "NumPDBViolations": 0}}
        }
        conn.request("POST", "/preempt", b"[1]", {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 400
        assert b"bad preempt request" in response.read()
    finally:
        server.shutdown()
    plain = ExtenderHTTPServer(("127.0.0.1", 0), p.extender)
    plain.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", plain.port, timeout=5)
        conn.request("POST", "/preempt", b"{}", {"Content-Type": "application/json"})
        assert conn.getresponse().status == 404
    finally:
        plain.shutdown()


def test_each_decision_is_logged_with_its_victims_and_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="kubenpu.extender.preempt")
    p = make(brief_layout())
    p.preempt(preemptor(core=50), offer("n1", uids=("uid-a", "uid-c")))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        "preempt default/high (priority 1000) on n1: evict default/d (priority 50): "
        "frees 50 percent on npu-1 (kube-scheduler's count chose 2)"
    )


def test_a_pod_the_extender_binds_is_a_candidate_before_any_watch_reports_it() -> None:
    # preempt names only pods it knows bound on the node; one bound a moment ago, whose
    # watch event has not come yet, must be among them, as it is in kube-scheduler's cache.
    api = FakeApi([node("n1")])
    index = PodIndex()
    ext = Extender(ClusterCache(), api, on_bound=index.upsert)
    ext.cache.replace_nodes(api.list("nodes")[0])
    share = pod("s", core=50)
    share["spec"]["priority"] = 7
    p = api.add_pod(share)
    ext.bind(
        {"PodName": "s", "PodNamespace": "default", "PodUID": p["metadata"]["uid"], "Node": "n1"}
    )
    facts = index.get("default/s")
    assert facts is not None
    assert (facts.node, facts.uid, facts.priority) == ("n1", p["metadata"]["uid"], 7)
