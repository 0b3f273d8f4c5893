"""Gangs in the extender: all members planned at once, the plan held against everyone else,
bound to the planned devices; a gang that does not fit gets no node at all.

Nodes have 2 NPUs (npu-0, npu-1) and 104 CPUs unless a test says otherwise; members ask
1 CPU, 1 GiB and one whole NPU.
"""

from __future__ import annotations

from typing import Any

import pytest

from extender.fakeapi import FakeApi, node, pod
from kubenpu.adapters.kube import placement_from_pod
from kubenpu.adapters.podgroup import GangPolicy, gang_policy, pod_group_of
from kubenpu.errors import ApiError, ObjectError
from kubenpu.extender.binder import overcommitted
from kubenpu.extender.cache import ClusterCache
from kubenpu.extender.core import Extender
from kubenpu.extender.gangs import PLAN_TTL_S, GangPolicies
from kubenpu.names import (
    ANNOTATION_GANG_GROUP_LABEL,
    ANNOTATION_GANG_TOPOLOGY,
    LABEL_NPU_DRIVER,
    NPU_DRIVER_DRA,
)

NAMES = ["n1", "n2"]


def pod_group(name: str, min_count: int, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1beta1",
        "kind": "PodGroup",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"schedulingPolicy": {"gang": {"minCount": min_count}}},
    }


def member(name: str, group: str = "job", **kw: Any) -> dict[str, Any]:
    p = pod(name, npus=kw.pop("npus", 1), **kw)
    p["spec"]["schedulingGroup"] = {"podGroupName": group}
    return p


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cluster(
    *nodes: dict[str, Any], groups: list[dict[str, Any]], pods: list[dict[str, Any]] = ()
) -> tuple[FakeApi, Extender]:
    """An extender over ``nodes`` that knows ``groups`` and the pods (as its informer would)."""
    api = FakeApi(list(nodes))
    for g in groups:
        api.pod_groups[("default", g["metadata"]["name"])] = g
    ext = Extender(ClusterCache(), api, gang_policy=GangPolicies(api.get_pod_group).get)
    ext.cache.replace_nodes(api.list("nodes")[0])
    for p in pods:
        add(api, ext, p)
    return api, ext


def add(api: FakeApi, ext: Extender, p: dict[str, Any]) -> dict[str, Any]:
    stored = api.add_pod(p)
    with ext.lock:
        ext.cache.upsert_pod(stored)
        ext.gangs.upsert_pod(stored)
    return stored


def remove(api: FakeApi, ext: Extender, name: str) -> None:
    del api.pods[("default", name)]
    with ext.lock:
        ext.cache.delete_pod(f"default/{name}")
        ext.gangs.delete_pod(f"default/{name}")


def filter_(ext: Extender, p: dict[str, Any], names: list[str] = NAMES) -> dict[str, Any]:
    return dict(ext.filter({"Pod": p, "Nodes": None, "NodeNames": names}, list(names)))


def bind(api: FakeApi, ext: Extender, name: str, node_name: str) -> dict[str, Any]:
    p = api.pods[("default", name)]
    ext.bind(
        {
            "PodName": name,
            "PodNamespace": "default",
            "PodUID": p["metadata"]["uid"],
            "Node": node_name,
        }
    )
    bound = api.get_pod("default", name)
    with ext.lock:
        ext.cache.upsert_pod(bound)
        ext.gangs.upsert_pod(bound)
    return bound


def schedule(api: FakeApi, ext: Extender, name: str) -> str:
    """What kube-scheduler does for one pod: filter, take the passed node, bind."""
    result = filter_(ext, api.pods[("default", name)])
    assert len(result["NodeNames"]) == 1, result
    target = result["NodeNames"][0]
    bind(api, ext, name, target)
    return target


def test_a_gang_of_four_on_three_free_npus_gets_no_node_then_all_four_once_one_frees() -> None:
    # 2 nodes x 2 NPUs; "other" holds npu-0 of n1: 3 free, the gang needs 4.
    other = pod("other", npus=1, node_name="n1")
    gang = [member(f"m{i}") for i in range(4)]
    api, ext = cluster(node("n1", 2), node("n2", 2), groups=[pod_group("job", 4)])
    add(api, ext, other)
    for m in gang:
        add(api, ext, m)
    for m in gang:
        result = filter_(ext, m)
        assert result["NodeNames"] == []
        assert set(result["FailedNodes"]) == set(NAMES)
        why = result["FailedNodes"]["n1"]
        assert "gang default/job" in why and "4 whole NPUs" in why and "at once" in why
        assert result["FailedAndUnresolvableNodes"] == {}  # retried when the cluster changes
    assert ext.gangs.planned("default/m0") is None

    remove(api, ext, "other")
    targets = [schedule(api, ext, f"m{i}") for i in range(4)]
    assert sorted(targets) == ["n1", "n1", "n2", "n2"]
    records = [placement_from_pod(api.pods[("default", f"m{i}")]) for i in range(4)]
    assert all(r is not None for r in records)
    for n in NAMES:  # device ids are per node
        assert overcommitted([r for r in records if r is not None and r.node == n]) is None
    assert ext.gangs.planned("default/m3") is None  # all bound: the plan is gone


def test_the_plan_holds_its_devices_against_a_pod_outside_the_gang() -> None:
    # The gang of 2 is planned at m0's filter (best fit: both on one node); before either
    # binds, a plain 2-NPU pod can only have the other node.
    api, ext = cluster(
        node("n1", 2),
        node("n2", 2),
        groups=[pod_group("job", 2)],
        pods=[member("m0"), member("m1")],
    )
    first = filter_(ext, api.pods[("default", "m0")])["NodeNames"]
    planned = {ext.gangs.planned(f"default/m{i}").node for i in range(2)}  # type: ignore[union-attr]
    assert len(planned) == 1 and first == list(planned)
    outsider = add(api, ext, pod("big", npus=2))
    assert filter_(ext, outsider)["NodeNames"] == [n for n in NAMES if n not in planned]
    # And its prioritize rates the member's planned node alone.
    scores = ext.scores({"Pod": api.pods[("default", "m1")], "NodeNames": NAMES}, NAMES)
    assert scores == [10 if n in planned else 0 for n in NAMES]


def test_members_bind_to_the_devices_their_plan_holds() -> None:
    api, ext = cluster(
        node("n1", 2), groups=[pod_group("job", 2)], pods=[member("m0"), member("m1")]
    )
    filter_(ext, api.pods[("default", "m0")], ["n1"])
    plans = {k: ext.gangs.planned(f"default/{k}") for k in ("m0", "m1")}
    for k in ("m1", "m0"):  # binds come in any order
        bound = bind(api, ext, k, "n1")
        assert placement_from_pod(bound).device_ids == plans[k].device_ids  # type: ignore[union-attr]


def test_a_topology_preference_keeps_the_gang_on_one_node_group() -> None:
    # n1 (rack a) has 1 NPU, n2 and n3 (rack b) 1 each, n4 (rack c) 1: the gang of 2 with
    # "require" must land in rack b, the only group that takes both.
    racks = {"n1": "a", "n2": "b", "n3": "b", "n4": "c"}
    nodes = []
    for name, rack in racks.items():
        n = node(name, 1)
        n["metadata"]["labels"]["example.com/rack"] = rack
        nodes.append(n)
    group = pod_group(
        "job",
        2,
        **{ANNOTATION_GANG_TOPOLOGY: "require", ANNOTATION_GANG_GROUP_LABEL: "example.com/rack"},
    )
    names = list(racks)
    api, ext = cluster(*nodes, groups=[group], pods=[member("m0"), member("m1")])
    assert filter_(ext, api.pods[("default", "m0")], names)["NodeNames"] in (["n2"], ["n3"])
    planned = sorted(ext.gangs.planned(f"default/m{i}").node for i in range(2))  # type: ignore[union-attr]
    assert planned == ["n2", "n3"]


def test_an_unused_plan_expires_and_frees_its_devices() -> None:
    clock = Clock()
    api, ext = cluster(
        node("n1", 2), groups=[pod_group("job", 2)], pods=[member("m0"), member("m1")]
    )
    ext.gangs._clock = clock
    filter_(ext, api.pods[("default", "m0")], ["n1"])
    outsider = add(api, ext, pod("big", npus=2))
    assert filter_(ext, outsider, ["n1"])["NodeNames"] == []
    clock.now += PLAN_TTL_S + 1
    assert filter_(ext, outsider, ["n1"])["NodeNames"] == ["n1"]
    assert ext.gangs.planned("default/m0") is None


def test_a_deleted_member_drops_the_plan_and_the_rest_wait() -> None:
    api, ext = cluster(
        node("n1", 2), groups=[pod_group("job", 2)], pods=[member("m0"), member("m1")]
    )
    filter_(ext, api.pods[("default", "m0")], ["n1"])
    remove(api, ext, "m1")
    assert ext.gangs.planned("default/m0") is None
    why = filter_(ext, api.pods[("default", "m0")], ["n1"])["FailedNodes"]["n1"]
    assert why == "gang default/job: 1 of its 2 members exist; waiting for the rest"


def test_a_member_whose_planned_node_is_not_offered_gets_none_and_the_gang_is_planned_again() -> (
    None
):
    api, ext = cluster(
        node("n1", 2),
        node("n2", 2),
        groups=[pod_group("job", 2)],
        pods=[member("m0"), member("m1")],
    )
    target = filter_(ext, api.pods[("default", "m0")])["NodeNames"][0]
    other = next(n for n in NAMES if n != target)
    result = filter_(ext, api.pods[("default", "m1")], [other])
    assert result["NodeNames"] == [] and "was not offered" in result["FailedNodes"][other]
    assert ext.gangs.planned("default/m0") is None


def test_members_beyond_min_count_are_placed_like_any_pod() -> None:
    # minCount 2 of 3 members on one 2-NPU node: two are planned, the third decides alone
    # (and finds nothing free while the plan holds both NPUs).
    api, ext = cluster(
        node("n1", 2),
        groups=[pod_group("job", 2)],
        pods=[member("m0"), member("m1"), member("m2")],
    )
    assert filter_(ext, api.pods[("default", "m0")], ["n1"])["NodeNames"] == ["n1"]
    planned = [k for k in ("m0", "m1", "m2") if ext.gangs.planned(f"default/{k}")]
    assert len(planned) == 2
    (extra,) = {"m0", "m1", "m2"} - set(planned)
    assert filter_(ext, api.pods[("default", extra)], ["n1"])["NodeNames"] == []


def test_an_unreadable_or_malformed_pod_group_fails_the_nodes_with_why() -> None:
    bad = pod_group("job", 2)
    bad["spec"]["schedulingPolicy"]["gang"]["minCount"] = 0
    api, ext = cluster(node("n1", 2), groups=[bad], pods=[member("m0"), member("m1")])
    why = filter_(ext, api.pods[("default", "m0")], ["n1"])["FailedNodes"]["n1"]
    assert "spec.schedulingPolicy.gang.minCount must be a positive integer, got 0" in why
    lost = add(api, ext, member("x0", group="missing"))
    why = filter_(ext, lost, ["n1"])["FailedNodes"]["n1"]
    assert why.startswith("pod group default/missing cannot be read:") and "not found" in why


def test_pods_of_a_basic_pod_group_are_no_gang() -> None:
    basic = pod_group("job", 1)
    basic["spec"]["schedulingPolicy"] = {"basic": {}}
    api, ext = cluster(node("n1", 2), groups=[basic], pods=[member("m0")])
    assert filter_(ext, api.pods[("default", "m0")], ["n1"])["NodeNames"] == ["n1"]
    assert ext.gangs.planned("default/m0") is None


def test_a_gang_that_does_not_fit_on_device_plugin_nodes_is_passed_to_the_dra_nodes() -> None:
    # n1 (device plugin) has 1 NPU for a gang of 2; n2 is DRA-served: kube-scheduler's DRA
    # plugin judges it, so it passes and n1 fails with the gang's reason.
    dra = node("n2", 2)
    dra["metadata"]["labels"][LABEL_NPU_DRIVER] = NPU_DRIVER_DRA
    api, ext = cluster(node("n1", 1), dra, groups=[pod_group("job", 2)])
    for m in (member("m0"), member("m1")):
        add(api, ext, m)
    result = filter_(ext, api.pods[("default", "m0")])
    assert result["NodeNames"] == ["n2"]
    assert "do not fit at once" in result["FailedNodes"]["n1"]


# ---- the readers ----------------------------------------------------------------------


def test_pod_group_of_reads_the_scheduling_group() -> None:
    assert pod_group_of(member("m", group="g")) == "default/g"
    assert pod_group_of(pod("p")) is None
    p = pod("p")
    p["spec"]["schedulingGroup"] = {"podGroupName": ""}
    assert pod_group_of(p) is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, GangPolicy("default/g", 3)),
        (
            {"annotations": {ANNOTATION_GANG_TOPOLOGY: "prefer"}},
            GangPolicy("default/g", 3, "prefer"),
        ),
        (
            {"topology": [{"key": "example.com/rack"}]},
            GangPolicy("default/g", 3, "require", "example.com/rack"),
        ),
    ],
)
def test_gang_policy_reads_min_count_and_topology(change: dict, expected: GangPolicy) -> None:
    g = pod_group("g", 3, **change.get("annotations", {}))
    if "topology" in change:
        g["spec"]["schedulingConstraints"] = {"topology": change["topology"]}
    assert gang_policy(g) == expected


@pytest.mark.parametrize(
    ("spec", "annotations", "message"),
    [
        ({"schedulingPolicy": {"gang": {}}}, {}, "minCount must be a positive integer, got None"),
        ({"schedulingPolicy": {"gang": {"minCount": True}}}, {}, "got True"),
        (
            {"schedulingPolicy": {"gang": {"minCount": 2}}},
            {ANNOTATION_GANG_TOPOLOGY: "sideways"},
            "must be one of none, prefer, require, got 'sideways'",
        ),
    ],
)
def test_gang_policy_names_the_bad_field(spec: dict, annotations: dict, message: str) -> None:
    g = {"metadata": {"name": "g", "namespace": "ns", "annotations": annotations}, "spec": spec}
    with pytest.raises(ObjectError, match="podgroup ns/g: ") as err:
        gang_policy(g)
    assert message in str(err.value)


def test_policies_are_read_once_per_ttl() -> None:
    reads: list[str] = []
    clock = Clock()

    def fetch(ns: str, name: str) -> dict[str, Any]:
        reads.append(name)
        return pod_group(name, 2)

    policies = GangPolicies(fetch, clock)
    assert policies.get("default/g") == GangPolicy("default/g", 2)
    policies.get("default/g")
    assert reads == ["g"]
    clock.now += 11
    policies.get("default/g")
    assert reads == ["g", "g"]

    def broken(ns: str, name: str) -> dict[str, Any]:
        raise ApiError("boom", 500)

    with pytest.raises(ApiError):
        GangPolicies(broken).get("default/g")
