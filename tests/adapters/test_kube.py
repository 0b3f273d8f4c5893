"""Kubernetes Node and Pod objects to model nodes and requests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubenpu.adapters.kube import allowed_models, node_from_object, request_from_pod
from kubenpu.errors import ObjectError
from kubenpu.names import LABEL_NPU_MODEL, RESOURCE_NPU, RESOURCE_NPU_CORE, RESOURCE_NPU_MEM


def node(name="n1", capacity=None, allocatable=None, labels=None):
    status = {}
    if capacity is not None:
        status["capacity"] = capacity
    if allocatable is not None:
        status["allocatable"] = allocatable
    meta = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "status": status}


def container(name="c", requests=None, limits=None):
    res = {}
    if requests is not None:
        res["requests"] = requests
    if limits is not None:
        res["limits"] = limits
    return {"name": name, "resources": res}


def pod(*containers, init=(), name="p", namespace=None, **spec):
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    body = {"containers": list(containers), **spec}
    if init:
        body["initContainers"] = list(init)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body}


def required(*terms):
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
        }
    }


def term(*exprs):
    return {"matchExpressions": list(exprs)}


def model_in(*values, key=LABEL_NPU_MODEL, operator="In"):
    return {"key": key, "operator": operator, "values": list(values)}


# --- nodes ------------------------------------------------------------------------------


def test_node_capacity_devices_and_model():
    n = node(
        capacity={"cpu": "104", "memory": "384Gi", RESOURCE_NPU: "8", "pods": "110"},
        labels={LABEL_NPU_MODEL: "hanguang-800", "zone": "a"},
    )
    got = node_from_object(n)
    assert (got.name, got.cpu_milli, got.memory_mib) == ("n1", 104_000, 384 * 1024)
    assert [d.id for d in got.devices] == [f"n1-npu{i}" for i in range(8)]
    assert [d.index for d in got.devices] == list(range(8))
    assert {d.model for d in got.devices} == {"hanguang-800"}
    assert got.model == "hanguang-800"
    assert got.labels["zone"] == "a"


def test_node_allocatable_wins_over_capacity_key_by_key():
    n = node(
        capacity={"cpu": "8", "memory": "32Gi", RESOURCE_NPU: 4},
        allocatable={"cpu": "7500m", RESOURCE_NPU: 3},
    )
    got = node_from_object(n)
    assert got.cpu_milli == 7500
    assert got.memory_mib == 32 * 1024  # only in capacity
    assert len(got.devices) == 3


def test_node_npu_memory_is_split_over_devices():
    n = node(capacity={RESOURCE_NPU: 4, RESOURCE_NPU_MEM: "130"})
    assert [d.memory_mib for d in node_from_object(n).devices] == [130 * 1024 // 4] * 4
    bare = node_from_object(node(capacity={RESOURCE_NPU: 2}))
    assert [d.memory_mib for d in bare.devices] == [0, 0]


def test_node_without_npus_or_status():
    got = node_from_object({"kind": "Node", "metadata": {"name": "cpu-only"}})
    assert (got.cpu_milli, got.memory_mib, got.devices, got.model) == (0, 0, (), "")


def test_node_numeric_label_value_is_text():
    got = node_from_object(node(capacity={RESOURCE_NPU: 1}, labels={LABEL_NPU_MODEL: 800}))
    assert got.model == "800"


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({"kind": "Node", "metadata": {}}, "without metadata.name"),
        ({"kind": "Node"}, "without metadata.name"),
        ({"kind": "Node", "metadata": {"name": 5}}, "must be a string"),
        ({"kind": "Node", "metadata": ["x"]}, "must be a mapping"),
        (node(capacity=["cpu"]), "status.capacity must be a mapping"),
        (node(allocatable="8"), "status.allocatable must be a mapping"),
        ({"kind": "Node", "metadata": {"name": "n1"}, "status": 3}, "status must be a mapping"),
        ({"kind": "Node", "metadata": {"name": "n1", "labels": []}}, "labels must be a mapping"),
        (node(capacity={RESOURCE_NPU: "1.5"}), "whole, non-negative"),
        (node(capacity={RESOURCE_NPU: "-1"}), "whole, non-negative"),
        (node(capacity={RESOURCE_NPU: "lots"}), "not a quantity"),
        (node(capacity={"cpu": "-1"}), "negative"),
        (node(capacity={"memory": "-100Ki"}), "negative"),
        (node(capacity={"cpu": float("inf")}), "finite"),
        (node(capacity={RESOURCE_NPU: float("nan")}), "finite"),
        (node(capacity={"cpu": "9E"}), "too large"),
        (node(capacity={RESOURCE_NPU: "1e9"}), "at most 64"),
    ],
)
def test_node_errors(obj, match):
    with pytest.raises(ObjectError, match=match):
        node_from_object(obj)


# --- pods: resources ------------------------------------------------------------------


def test_whole_npus_from_requests():
    r = request_from_pod(pod(container(requests={"cpu": "4", "memory": "16Gi", RESOURCE_NPU: 2})))
    assert (r.name, r.cpu_milli, r.memory_mib, r.npus, r.share_milli) == ("p", 4000, 16384, 2, 0)
    assert r.device_milli == 2000
    assert r.models == frozenset()


def test_share_and_memory():
    r = request_from_pod(
        pod(container(requests={RESOURCE_NPU_CORE: 30, RESOURCE_NPU_MEM: 8, "cpu": "500m"}))
    )
    assert (r.npus, r.share_milli, r.share_memory_mib, r.cpu_milli) == (0, 300, 8 * 1024, 500)


def test_limits_only_extended_resources_count():
    r = request_from_pod(pod(container(limits={RESOURCE_NPU: "1", "cpu": "2", "memory": "1Gi"})))
    assert (r.npus, r.cpu_milli, r.memory_mib) == (1, 2000, 1024)


def test_requests_override_limits():
    r = request_from_pod(
        pod(
            container(
                requests={"cpu": "1", RESOURCE_NPU_CORE: 20},
                limits={"cpu": "4", RESOURCE_NPU_CORE: 20},
            )
        )
    )
    assert (r.cpu_milli, r.share_milli) == (1000, 200)


def test_containers_add_up():
    r = request_from_pod(
        pod(
            container("a", requests={"cpu": "1", "memory": "1Gi", RESOURCE_NPU: 1}),
            container("b", requests={"cpu": "1.5", "memory": "512Mi", RESOURCE_NPU: 2}),
            container("c"),
        )
    )
    assert (r.cpu_milli, r.memory_mib, r.npus) == (2500, 1536, 3)


def test_init_containers_take_the_max():
    main = [
        container("a", requests={"cpu": "1", "memory": "1Gi", RESOURCE_NPU: 1}),
        container("b", requests={"cpu": "1", "memory": "1Gi"}),
    ]
    init = [
        container("i1", requests={"cpu": "3", "memory": "512Mi"}),
        container("i2", requests={"cpu": "500m", RESOURCE_NPU: 4}),
    ]
    r = request_from_pod(pod(*main, init=init))
    # cpu max(2, 3, 0.5); memory max(2Gi, 512Mi); npu max(1, 0, 4)
    assert (r.cpu_milli, r.memory_mib, r.npus) == (3000, 2048, 4)


def test_namespace_in_name():
    r = request_from_pod(pod(container(), name="web", namespace="prod"))
    assert r.name == "prod/web"
    assert not r.wants_devices


def test_pod_without_containers_asks_nothing():
    r = request_from_pod({"kind": "Pod", "metadata": {"name": "empty"}})
    assert (r.cpu_milli, r.memory_mib, r.device_milli) == (0, 0, 0)


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (pod(container(requests={RESOURCE_NPU: 1, RESOURCE_NPU_CORE: 50})), "both"),
        (
            pod(
                container(requests={RESOURCE_NPU: 1}),
                container("b", limits={RESOURCE_NPU_CORE: 50}),
            ),
            "both",
        ),
        (pod(container(requests={RESOURCE_NPU_CORE: 101})), "must be 1 to 100"),
        (
            pod(
                container("a", requests={RESOURCE_NPU_CORE: 60}),
                container("b", requests={RESOURCE_NPU_CORE: 60}),
            ),
            "120 aliyun.com/npu-core in all .* at most 100",
        ),
        (pod(container(requests={RESOURCE_NPU_MEM: 4})), "without aliyun.com/npu-core"),
        (pod(container(requests={RESOURCE_NPU: "0.5"})), "not a whole number"),
        (pod(container(requests={RESOURCE_NPU_CORE: "-5"})), "is negative"),
        (pod(container(requests={"cpu": "-1"})), "negative"),
        (pod(container(requests={"memory": "lots"})), "not a quantity"),
        ({"kind": "Pod", "metadata": {}}, "without metadata.name"),
        ({"kind": "Pod", "metadata": {"name": "p"}, "spec": []}, "spec must be a mapping"),
        ({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": {}}}, "must be a list"),
        (
            {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": ["x"]}},
            "a container must be a mapping",
        ),
        (
            {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"resources": 1}]}},
            "resources must be a mapping",
        ),
        (
            {
                "kind": "Pod",
                "metadata": {"name": "p"},
                "spec": {"containers": [{"resources": {"limits": []}}]},
            },
            "limits must be a mapping",
        ),
    ],
)
def test_pod_errors(obj, match):
    with pytest.raises(ObjectError, match=match):
        request_from_pod(obj)


def test_pod_error_names_the_pod():
    with pytest.raises(ObjectError, match="pod ns/bad"):
        request_from_pod(
            pod(container(requests={RESOURCE_NPU_CORE: 150}), name="bad", namespace="ns")
        )


# --- pods: models -----------------------------------------------------------------------


def test_models_from_node_selector():
    assert allowed_models({"nodeSelector": {LABEL_NPU_MODEL: "a", "zone": "x"}}) == {"a"}


def test_node_selector_without_model_is_any():
    assert allowed_models({"nodeSelector": {"zone": "x"}}) == frozenset()
    assert allowed_models({}) == frozenset()


def test_models_from_required_affinity():
    spec = {"affinity": required(term(model_in("a", "b")))}
    assert allowed_models(spec) == {"a", "b"}


def test_affinity_terms_are_ored():
    spec = {"affinity": required(term(model_in("a")), term(model_in("b", "c")))}
    assert allowed_models(spec) == {"a", "b", "c"}


def test_expressions_in_one_term_are_anded():
    spec = {"affinity": required(term(model_in("a", "b"), model_in("b", "c")))}
    assert allowed_models(spec) == {"b"}


def test_a_term_without_model_lets_any_model_through():
    other = term({"key": "zone", "operator": "In", "values": ["x"]})
    assert allowed_models({"affinity": required(term(model_in("a")), other)}) == frozenset()


def test_other_operators_and_keys_are_ignored():
    spec = {"affinity": required(term(model_in("a", operator="NotIn")))}
    assert allowed_models(spec) == frozenset()
    spec = {"affinity": required(term(model_in("a", key="zone")))}
    assert allowed_models(spec) == frozenset()


def test_node_selector_and_affinity_intersect():
    spec = {"nodeSelector": {LABEL_NPU_MODEL: "a"}, "affinity": required(term(model_in("a", "b")))}
    assert allowed_models(spec) == {"a"}


@pytest.mark.parametrize(
    "spec",
    [
        {"nodeSelector": {LABEL_NPU_MODEL: "a"}, "affinity": required(term(model_in("b")))},
        {"affinity": required(term(model_in()))},
        {"affinity": required(term(model_in("a"), model_in("b")))},
    ],
)
def test_no_model_allowed_is_an_error_not_any(spec):
    # An empty model set means "any model" to the engine; it must not stand for "none".
    with pytest.raises(ObjectError, match="allow no model"):
        allowed_models(spec)


def test_pod_models_reach_the_request():
    p = pod(
        container(requests={RESOURCE_NPU: 1}),
        affinity=required(term(model_in("x", "y"))),
    )
    assert request_from_pod(p).models == {"x", "y"}


def test_malformed_affinity_is_an_object_error():
    p = pod(
        container(),
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": "x"}
            }
        },
    )
    with pytest.raises(ObjectError, match="pod p: nodeSelectorTerms must be a list"):
        request_from_pod(p)


# --- property: the effective request is max(sum of containers, max of init containers) --

amounts = st.fixed_dictionaries(
    {},
    optional={
        "cpu": st.integers(0, 64_000),
        "memory": st.integers(0, 1 << 20),
        # 0 is refused (ask for at least one, or leave it out), as the webhook refuses it.
        RESOURCE_NPU: st.integers(1, 8),
    },
)


@given(st.lists(amounts, max_size=4), st.lists(amounts, max_size=3), st.booleans())
def test_effective_request_rule(mains, inits, as_limits):
    def c(i, a):
        res = {"cpu": f"{a['cpu']}m"} if "cpu" in a else {}
        if "memory" in a:
            res["memory"] = f"{a['memory']}Mi"
        if RESOURCE_NPU in a:
            res[RESOURCE_NPU] = str(a[RESOURCE_NPU])
        return container(f"c{i}", limits=res) if as_limits else container(f"c{i}", requests=res)

    obj = pod(*[c(i, a) for i, a in enumerate(mains)], init=[c(i, a) for i, a in enumerate(inits)])
    r = request_from_pod(obj)
    for key, got in (("cpu", r.cpu_milli), ("memory", r.memory_mib), (RESOURCE_NPU, r.npus)):
        total = sum(a.get(key, 0) for a in mains)
        assert got == max([total] + [a.get(key, 0) for a in inits])
