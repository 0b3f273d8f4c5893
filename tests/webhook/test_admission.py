"""Every admission rule, as a table of pods and the exact sentences the user reads."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from kubenpu.errors import WireError
from kubenpu.names import (
    ANNOTATION_NPU_REGISTRY,
    ANNOTATION_NPU_REGISTRY_SECRET,
    RESOURCE_NPU,
    RESOURCE_NPU_CORE,
    RESOURCE_NPU_MEM,
)
from kubenpu.webhook.admission import (
    NPU_TOLERATION,
    Admission,
    NpuNode,
    asks_for_npu,
    image_registry,
    mutate_pod,
    validate_pod,
)
from kubenpu.webhook.review import parse_review

NODES = [NpuNode("npu-node-1", 4), NpuNode("npu-node-2", 8), NpuNode("npu-node-3", 8)]
IMAGE = "npu-registry.example.com/demo/npu-job:1.0"


def container(name: str = "main", limits=None, requests=None, image: str = IMAGE) -> dict:
    resources: dict[str, Any] = {}
    if limits is not None:
        resources["limits"] = limits
    if requests is not None:
        resources["requests"] = requests
    return {"name": name, "image": image, "resources": resources}


def pod(*containers: dict, init: list[dict] | None = None, **spec: Any) -> dict:
    body: dict[str, Any] = {"containers": list(containers), **spec}
    if init:
        body["initContainers"] = init
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": body}


VALID = [
    ("one whole NPU, limit only", pod(container(limits={RESOURCE_NPU: "1"}))),
    ("integer limit", pod(container(limits={RESOURCE_NPU: 2}))),
    (
        "request equal to limit",
        pod(container(limits={RESOURCE_NPU: 2}, requests={RESOURCE_NPU: "2"})),
    ),
    ("request only", pod(container(requests={RESOURCE_NPU: "1"}))),
    ("as many as the largest node", pod(container(limits={RESOURCE_NPU: "8"}))),
    # 4 + 4 = 8 in the containers, the init container's 8 overlaps them: 8 fits npu-node-2.
    (
        "init container overlaps",
        pod(
            container("a", limits={RESOURCE_NPU: "4"}),
            container("b", limits={RESOURCE_NPU: "4"}),
            init=[container("setup", limits={RESOURCE_NPU: "8"})],
        ),
    ),
    ("share of one NPU", pod(container(limits={RESOURCE_NPU_CORE: "30"}))),
    ("a whole NPU's compute as a share", pod(container(limits={RESOURCE_NPU_CORE: "100"}))),
    ("share with memory", pod(container(limits={RESOURCE_NPU_CORE: "50", RESOURCE_NPU_MEM: "8"}))),
    ("1e0 is a whole number", pod(container(limits={RESOURCE_NPU: "1e0"}))),
    (
        "two containers sharing one NPU, 40 + 60",
        pod(
            container("a", limits={RESOURCE_NPU_CORE: 40}),
            container("b", limits={RESOURCE_NPU_CORE: 60}),
        ),
    ),
]


@pytest.mark.parametrize(("pod_", "what"), [(p, w) for w, p in VALID], ids=[w for w, _ in VALID])
def test_valid_pods_pass(pod_: dict, what: str) -> None:
    assert validate_pod(pod_, NODES) == []


INVALID = [
    (
        "half an NPU",
        pod(container(limits={RESOURCE_NPU: "0.5"})),
        [
            "container \"main\": aliyun.com/npu limit '0.5' is not a whole number; "
            "aliyun.com/npu is counted in whole units"
        ],
    ),
    (
        "milli NPUs",
        pod(container(limits={RESOURCE_NPU: "500m"})),
        [
            "container \"main\": aliyun.com/npu limit '500m' is not a whole number; "
            "aliyun.com/npu is counted in whole units"
        ],
    ),
    (
        "not a quantity",
        pod(container(limits={RESOURCE_NPU: "one"})),
        ["container \"main\": aliyun.com/npu limit 'one' is not a valid quantity"],
    ),
    (
        "negative",
        pod(container(requests={RESOURCE_NPU: "-1"})),
        ["container \"main\": aliyun.com/npu request '-1' is negative"],
    ),
    (
        "zero NPUs",
        pod(container(limits={RESOURCE_NPU: "0"})),
        [
            'container "main": aliyun.com/npu is 0; ask for at least 1 whole NPU, '
            "or leave aliyun.com/npu out"
        ],
    ),
    (
        "request differs from limit",
        pod(container(limits={RESOURCE_NPU: "2"}, requests={RESOURCE_NPU: "1"})),
        [
            'container "main": aliyun.com/npu request 1 differs from its limit 2; '
            "NPU requests must equal limits (or give only the limit)"
        ],
    ),
    (
        "core above 100",
        pod(container(limits={RESOURCE_NPU_CORE: "150"})),
        [
            'container "main": aliyun.com/npu-core is 150, but must be 1 to 100 '
            "(percent of one NPU); ask for whole NPUs with aliyun.com/npu"
        ],
    ),
    (
        "core zero",
        pod(container(limits={RESOURCE_NPU_CORE: "0"})),
        [
            'container "main": aliyun.com/npu-core is 0, but must be 1 to 100 '
            "(percent of one NPU); ask for whole NPUs with aliyun.com/npu"
        ],
    ),
    (
        "core fraction",
        pod(container(limits={RESOURCE_NPU_CORE: "12.5"})),
        [
            "container \"main\": aliyun.com/npu-core limit '12.5' is not a whole number; "
            "aliyun.com/npu-core is counted in whole units"
        ],
    ),
    (
        "mixing whole and shared in one container",
        pod(container(limits={RESOURCE_NPU: "1", RESOURCE_NPU_CORE: "50"})),
        [
            'the pod asks for both aliyun.com/npu (whole NPUs: container "main": 1) and '
            'aliyun.com/npu-core (a share of one NPU: container "main": 50); use one of them'
        ],
    ),
    (
        # The extender places a pod, not a container: this one could never be placed.
        "two containers, one whole, one shared",
        pod(
            container("a", limits={RESOURCE_NPU: 1}), container("b", limits={RESOURCE_NPU_CORE: 20})
        ),
        [
            'the pod asks for both aliyun.com/npu (whole NPUs: container "a": 1) and '
            'aliyun.com/npu-core (a share of one NPU: container "b": 20); use one of them'
        ],
    ),
    (
        "two containers whose shares add up to more than one NPU",
        pod(
            container("a", limits={RESOURCE_NPU_CORE: 60}),
            container("b", limits={RESOURCE_NPU_CORE: 60}),
        ),
        [
            'the pod asks for 120 aliyun.com/npu-core in all (container "a": 60, '
            'container "b": 60), but a share lives on one NPU: at most 100; ask for whole '
            "NPUs with aliyun.com/npu"
        ],
    ),
    (
        "memory without a share",
        pod(container(limits={RESOURCE_NPU_MEM: "8"})),
        [
            'the pod asks for aliyun.com/npu-mem (container "main": 8) without '
            "aliyun.com/npu-core; NPU memory is only given with a share of one NPU"
        ],
    ),
    (
        "memory beside whole NPUs",
        pod(container(limits={RESOURCE_NPU: "1", RESOURCE_NPU_MEM: "8"})),
        [
            'the pod asks for aliyun.com/npu-mem (container "main": 8) without '
            "aliyun.com/npu-core; NPU memory is only given with a share of one NPU"
        ],
    ),
    (
        "memory fraction",
        pod(container(limits={RESOURCE_NPU_CORE: "10", RESOURCE_NPU_MEM: "1.5"})),
        [
            "container \"main\": aliyun.com/npu-mem limit '1.5' is not a whole number; "
            "aliyun.com/npu-mem is counted in whole units"
        ],
    ),
    (
        "memory with a byte suffix",
        pod(container(limits={RESOURCE_NPU_CORE: "10", RESOURCE_NPU_MEM: "8Gi"})),
        [
            "container \"main\": aliyun.com/npu-mem limit '8Gi' has a unit suffix, but "
            "aliyun.com/npu-mem counts GiB; write the plain number of GiB, e.g. "
            "aliyun.com/npu-mem: 8"
        ],
    ),
    (
        "larger than the largest node",
        pod(container(limits={RESOURCE_NPU: "9"})),
        [
            'the pod asks for 9 aliyun.com/npu (container "main": 9), but the largest NPU node, '
            "npu-node-3, has 8; it could never be scheduled"
        ],
    ),
    # 5 + 4 = 9 in the containers; each alone would fit.
    (
        "containers together larger than the largest node",
        pod(container("a", limits={RESOURCE_NPU: "5"}), container("b", limits={RESOURCE_NPU: "4"})),
        [
            'the pod asks for 9 aliyun.com/npu (container "a": 5, container "b": 4), but the '
            "largest NPU node, npu-node-3, has 8; it could never be scheduled"
        ],
    ),
    (
        "init container larger than the largest node",
        pod(
            container(limits={RESOURCE_NPU: "1"}),
            init=[container("setup", limits={RESOURCE_NPU: "10"})],
        ),
        [
            'the pod asks for 10 aliyun.com/npu (init container "setup": 10, container "main": 1), '
            "but the largest NPU node, npu-node-3, has 8; it could never be scheduled"
        ],
    ),
    (
        "every problem at once, each named",
        pod(
            container("a", limits={RESOURCE_NPU: "0.5"}),
            container("b", limits={RESOURCE_NPU_CORE: "101", RESOURCE_NPU_MEM: "4"}),
        ),
        [
            "container \"a\": aliyun.com/npu limit '0.5' is not a whole number; "
            "aliyun.com/npu is counted in whole units",
            'container "b": aliyun.com/npu-core is 101, but must be 1 to 100 (percent of one '
            "NPU); ask for whole NPUs with aliyun.com/npu",
        ],
    ),
]


@pytest.mark.parametrize(
    ("pod_", "expected"), [(p, e) for _, p, e in INVALID], ids=[w for w, _, _ in INVALID]
)
def test_invalid_pods_are_denied_with_plain_sentences(pod_: dict, expected: list[str]) -> None:
    assert validate_pod(pod_, NODES) == expected


def test_size_rule_skipped_without_node_knowledge() -> None:
    huge = pod(container(limits={RESOURCE_NPU: "64"}))
    assert validate_pod(huge, None) == []
    assert validate_pod(huge, []) == []


def test_asks_for_npu() -> None:
    assert not asks_for_npu(pod(container(limits={"cpu": "1"})))
    assert not asks_for_npu({"spec": {"containers": "garbage"}})
    assert asks_for_npu(pod(container(requests={RESOURCE_NPU_MEM: "1"})))
    assert asks_for_npu(pod(container(), init=[container(limits={RESOURCE_NPU: 1})]))


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("npu-registry.example.com/demo/job:1", "npu-registry.example.com"),
        ("NPU-Registry.example.com:5000/job", "npu-registry.example.com:5000"),
        ("localhost/job", "localhost"),
        ("library/busybox", "docker.io"),
        ("busybox", "docker.io"),
        ("docker.io/library/busybox@sha256:abc", "docker.io"),
    ],
)
def test_image_registry(image: str, registry: str) -> None:
    assert image_registry(image) == registry


NS = {
    ANNOTATION_NPU_REGISTRY: "https://npu-registry.example.com/",
    ANNOTATION_NPU_REGISTRY_SECRET: "regsecret",
}
TOLERATION_OP = {"op": "add", "path": "/spec/tolerations", "value": [dict(NPU_TOLERATION)]}
SECRET_OP = {"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "regsecret"}]}
NPU1 = {RESOURCE_NPU: "1"}

MUTATIONS = [
    ("no NPU, nothing", pod(container(limits={"cpu": "1"})), NS, []),
    ("NPU pod: toleration and secret", pod(container(limits=NPU1)), NS, [TOLERATION_OP, SECRET_OP]),
    (
        "shared NPU pod from an init container's image",
        pod(
            container(limits={RESOURCE_NPU_CORE: "10"}, image="busybox"),
            init=[container("fetch", image="npu-registry.example.com/tools:1")],
        ),
        NS,
        [TOLERATION_OP, SECRET_OP],
    ),
    ("namespace without a default", pod(container(limits=NPU1)), {}, [TOLERATION_OP]),
    (
        "namespace names a registry but no secret",
        pod(container(limits=NPU1)),
        {ANNOTATION_NPU_REGISTRY: "npu-registry.example.com"},
        [TOLERATION_OP],
    ),
    (
        "image from another registry",
        pod(container(limits=NPU1, image="busybox")),
        NS,
        [TOLERATION_OP],
    ),
    (
        "pod names its own pull secret",
        pod(container(limits=NPU1), imagePullSecrets=[{"name": "mine"}]),
        NS,
        [TOLERATION_OP],
    ),
    (
        "other tolerations: appended",
        pod(container(limits=NPU1), tolerations=[{"key": "x", "operator": "Exists"}]),
        {},
        [{"op": "add", "path": "/spec/tolerations/-", "value": dict(NPU_TOLERATION)}],
    ),
    (
        "already tolerates the NPU taint",
        pod(container(limits=NPU1), tolerations=[{"key": "aliyun.com/npu", "operator": "Exists"}]),
        {},
        [],
    ),
    (
        "tolerates every taint",
        pod(container(limits=NPU1), tolerations=[{"operator": "Exists"}]),
        {},
        [],
    ),
    (
        "an Equal toleration matches one value only: add ours",
        pod(
            container(limits=NPU1),
            tolerations=[{"key": "aliyun.com/npu", "operator": "Equal", "value": "x"}],
        ),
        {},
        [{"op": "add", "path": "/spec/tolerations/-", "value": dict(NPU_TOLERATION)}],
    ),
]


@pytest.mark.parametrize(
    ("pod_", "annotations", "ops"),
    [(p, a, o) for _, p, a, o in MUTATIONS],
    ids=[w for w, *_ in MUTATIONS],
)
def test_mutations(pod_: dict, annotations: dict, ops: list) -> None:
    assert mutate_pod(pod_, annotations) == ops


def review(obj: dict | None, *, resource: str = "pods", operation: str = "CREATE") -> dict:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "operation": operation,
            "namespace": "team-a",
            "object": obj,
        },
    }


def failing_lookup(*_: object) -> Any:
    raise AssertionError("a pod asking for no NPU must not cause a lookup")


def test_pods_without_npu_are_allowed_without_any_lookup() -> None:
    admission = Admission(failing_lookup, failing_lookup)
    plain = parse_review(json.dumps(review(pod(container(limits={"cpu": "1"})))).encode())
    assert admission.validate(plain)["response"] == {
        "uid": plain["request"]["uid"],
        "allowed": True,
    }
    assert admission.mutate(plain)["response"] == {"uid": plain["request"]["uid"], "allowed": True}


def test_failed_lookups_never_block() -> None:
    def broken(*_: object) -> Any:
        raise OSError("API server unreachable")

    admission = Admission(broken, broken)
    big = parse_review(json.dumps(review(pod(container(limits={RESOURCE_NPU: "64"})))).encode())
    assert admission.validate(big)["response"]["allowed"] is True
    patched = admission.mutate(big)["response"]
    assert json.loads(base64.b64decode(patched["patch"])) == [TOLERATION_OP]


def test_denial_and_patch_on_the_wire() -> None:
    admission = Admission(lambda: NODES, lambda ns: NS if ns == "team-a" else {})
    bad = parse_review(json.dumps(review(pod(container(limits={RESOURCE_NPU: "0"})))).encode())
    assert admission.validate(bad) == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "allowed": False,
            "status": {
                "code": 403,
                "message": 'container "main": aliyun.com/npu is 0; ask for at least 1 whole '
                "NPU, or leave aliyun.com/npu out",
            },
        },
    }
    good = parse_review(json.dumps(review(pod(container(limits=NPU1)))).encode())
    response = admission.mutate(good)["response"]
    assert response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == [TOLERATION_OP, SECRET_OP]


def test_other_requests_are_allowed() -> None:
    admission = Admission(failing_lookup, failing_lookup)
    npu_pod = pod(container(limits={RESOURCE_NPU: "0"}))
    for body in (review(npu_pod, operation="UPDATE"), review(npu_pod, resource="deployments")):
        assert admission.validate(parse_review(json.dumps(body).encode()))["response"]["allowed"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "body is not JSON"),
        (b"[]", "body must be a JSON object, not list"),
        (
            json.dumps({**review(None), "apiVersion": "admission.k8s.io/v1beta1"}).encode(),
            "expected apiVersion admission.k8s.io/v1 kind AdmissionReview, got apiVersion "
            "'admission.k8s.io/v1beta1' kind 'AdmissionReview'",
        ),
        (json.dumps({**review(None), "request": None}).encode(), "request is missing"),
        (
            json.dumps(
                {**review(None), "request": {**review(None)["request"], "uid": ""}}
            ).encode(),
            "request.uid is missing",
        ),
        (
            json.dumps(
                {**review(None), "request": {**review(None)["request"], "operation": "GET"}}
            ).encode(),
            "request.operation 'GET' is not one of",
        ),
        (
            json.dumps(
                {**review(None), "request": {**review(None)["request"], "object": []}}
            ).encode(),
            "request.object must be an object or null",
        ),
    ],
)
def test_malformed_reviews(body: bytes, message: str) -> None:
    with pytest.raises(WireError) as info:
        parse_review(body)
    assert message in str(info.value)


def test_pod_create_without_object_is_malformed() -> None:
    admission = Admission(failing_lookup, failing_lookup)
    with pytest.raises(WireError, match=r"request\.object is missing"):
        admission.validate(parse_review(json.dumps(review(None)).encode()))
