"""The admission rules for pods asking for NPUs: pure functions over the Pod's JSON.

Nothing here does I/O: the Nodes (for "larger than any node") and a Namespace's
annotations (for its default pull secret) come from lookups the caller injects, so the
rules are tested with plain functions and the server only translates the wire format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubenpu.adapters.npurequest import read_pod_npu
from kubenpu.errors import WireError
from kubenpu.names import (
    ANNOTATION_NPU_REGISTRY,
    ANNOTATION_NPU_REGISTRY_SECRET,
    RESOURCE_NPU,
    TAINT_NPU,
    TAINT_NPU_EFFECT,
)
from kubenpu.webhook.review import (
    AdmissionReviewRequest,
    AdmissionReviewResponse,
    PatchOperation,
    allow,
    deny,
)

log = logging.getLogger(__name__)

#: The toleration added to NPU pods: it matches the NPU taint whatever its value.
NPU_TOLERATION: Mapping[str, str] = {
    "key": TAINT_NPU,
    "operator": "Exists",
    "effect": TAINT_NPU_EFFECT,
}


@dataclass(frozen=True, slots=True)
class NpuNode:
    """What the size rule needs of a Node: its name and NPU capacity."""

    name: str
    npus: int


#: Returns the cluster's NPU nodes; may raise (the size rule is then skipped, not failed).
NodeLookup = Callable[[], Sequence[NpuNode]]
#: Returns a Namespace's annotations (empty if it has none); may raise.
NamespaceLookup = Callable[[str], Mapping[str, str]]


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def asks_for_npu(pod: Mapping[str, Any]) -> bool:
    """Whether any container of the pod names an NPU resource in its requests or limits."""
    return read_pod_npu(pod).asks


def validate_pod(pod: Mapping[str, Any], nodes: Sequence[NpuNode] | None) -> list[str]:
    """Every rule the pod breaks, one plain sentence each naming the container (empty: valid).

    The rules are the pod NPU request's own (:mod:`kubenpu.adapters.npurequest`, which the
    extender applies too), plus one only the webhook can check: no larger than the largest
    NPU node. ``nodes`` are the cluster's NPU nodes; None when unknown, which skips it.
    """
    request = read_pod_npu(pod)
    problems = list(request.problems)
    if nodes and request.npus:
        largest = max(nodes, key=lambda n: (n.npus, n.name))
        if request.npus > largest.npus:
            problems.append(
                f"the pod asks for {request.npus} {RESOURCE_NPU} "
                f"({request.holders(RESOURCE_NPU)}), but the largest NPU node, "
                f"{largest.name}, has {largest.npus}; it could never be scheduled"
            )
    return problems


def image_registry(image: str) -> str:
    """The registry host (``host[:port]``, lower case) an image reference pulls from."""
    first, slash, _ = image.partition("/")
    # As the container runtimes read a reference: a first component with a dot or a port,
    # or "localhost", is a registry; anything else is a Docker Hub repository.
    if slash and ("." in first or ":" in first or first == "localhost"):
        return _canonical_registry(first)
    return "docker.io"


def _canonical_registry(server: str) -> str:
    """``server`` as :func:`image_registry` spells it: no scheme, no path, lower case."""
    host = server.strip().lower()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    host = host.split("/", 1)[0]
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host


def _tolerates_npu_taint(tolerations: Iterable[Any]) -> bool:
    """Whether a toleration already matches the NPU taint whatever its value."""
    for t in tolerations:
        t = _mapping(t)
        # An "Equal" toleration matches one taint value only, and operators may choose any.
        if t.get("operator") != "Exists" or t.get("key") not in (None, "", TAINT_NPU):
            continue
        if t.get("effect") in (None, "", TAINT_NPU_EFFECT):
            return True
    return False


def mutate_pod(
    pod: Mapping[str, Any], namespace_annotations: Mapping[str, str]
) -> list[PatchOperation]:
    """JSONPatch operations for an NPU pod: the NPU toleration and the default pull secret.

    The pull secret named by the namespace's :data:`ANNOTATION_NPU_REGISTRY_SECRET` is added
    when an image comes from its :data:`ANNOTATION_NPU_REGISTRY` and the pod names no
    ``imagePullSecrets`` of its own. Pods asking for no NPU get no operations.
    """
    if not asks_for_npu(pod):
        return []
    spec = _mapping(pod.get("spec"))
    ops: list[PatchOperation] = []
    tolerations = spec.get("tolerations")
    if not isinstance(tolerations, list) or not tolerations:
        ops.append({"op": "add", "path": "/spec/tolerations", "value": [dict(NPU_TOLERATION)]})
    elif not _tolerates_npu_taint(tolerations):
        ops.append({"op": "add", "path": "/spec/tolerations/-", "value": dict(NPU_TOLERATION)})
    server = namespace_annotations.get(ANNOTATION_NPU_REGISTRY, "")
    secret = namespace_annotations.get(ANNOTATION_NPU_REGISTRY_SECRET, "")
    if server and secret and not spec.get("imagePullSecrets"):
        registry = _canonical_registry(server)
        images = [
            str(_mapping(c).get("image", ""))
            for field in ("initContainers", "containers")
            for c in _list(spec.get(field))
        ]
        if any(image_registry(image) == registry for image in images if image):
            ops.append({"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": secret}]})
    return ops


def _pod_under_review(review: AdmissionReviewRequest) -> Mapping[str, Any] | None:
    """The Pod being created, or None when the request is not a Pod CREATE."""
    request = review["request"]
    if (
        request["resource"].get("resource") != "pods"
        or request.get("subResource")
        or request["operation"] != "CREATE"
    ):
        return None
    pod = request.get("object")
    if pod is None:
        raise WireError("request.object is missing for a pod CREATE")
    return pod


def _describe(review: AdmissionReviewRequest) -> str:
    request = review["request"]
    pod = _mapping(request.get("object"))
    meta = _mapping(pod.get("metadata"))
    name = request.get("name") or meta.get("name") or f"{meta.get('generateName', '')}*"
    return f"{request.get('namespace', '')}/{name}"


class Admission:
    """Answers AdmissionReviews with the rules above and the injected lookups.

    A lookup that fails never blocks a pod: the size rule is skipped without Nodes, the
    pull secret without the Namespace, and both are logged.
    """

    def __init__(self, nodes: NodeLookup, namespace_annotations: NamespaceLookup) -> None:
        self._nodes = nodes
        self._namespace_annotations = namespace_annotations

    def validate(self, review: AdmissionReviewRequest) -> AdmissionReviewResponse:
        """The validating webhook's answer."""
        uid = review["request"]["uid"]
        pod = _pod_under_review(review)
        # Pods that ask for no NPU are allowed before any lookup: the webhook must never
        # slow down or block them.
        if pod is None or not asks_for_npu(pod):
            return allow(uid)
        try:
            nodes: Sequence[NpuNode] | None = self._nodes()
        except Exception as exc:  # an API outage must not turn into denials
            log.warning("node lookup failed, size rule skipped: %s", exc)
            nodes = None
        problems = validate_pod(pod, nodes)
        if problems:
            log.info("denied pod %s: %s", _describe(review), "; ".join(problems))
            return deny(uid, "; ".join(problems))
        return allow(uid)

    def mutate(self, review: AdmissionReviewRequest) -> AdmissionReviewResponse:
        """The mutating webhook's answer."""
        request = review["request"]
        uid = request["uid"]
        pod = _pod_under_review(review)
        if pod is None or not asks_for_npu(pod):
            return allow(uid)
        namespace = request.get("namespace") or ""
        try:
            annotations = self._namespace_annotations(namespace) if namespace else {}
        except Exception as exc:  # no pull secret is better than no pod
            log.warning("namespace %s lookup failed, no pull secret added: %s", namespace, exc)
            annotations = {}
        ops = mutate_pod(pod, annotations)
        if ops:
            log.info("mutated pod %s: %s", _describe(review), ", ".join(o["path"] for o in ops))
        return allow(uid, ops)
