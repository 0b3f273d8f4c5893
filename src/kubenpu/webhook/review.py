"""AdmissionReview ``admission.k8s.io/v1``, exactly as kube-apiserver sends and expects it.

Only the fields kubenpu reads or writes are typed; everything else the API server sends is
accepted and ignored. :func:`parse_review` checks what the rules rely on and raises
:class:`WireError` (answered with HTTP 400) for anything else.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal, NotRequired, TypedDict

from kubenpu.errors import WireError

API_VERSION: Literal["admission.k8s.io/v1"] = "admission.k8s.io/v1"
KIND: Literal["AdmissionReview"] = "AdmissionReview"


class GroupVersionKind(TypedDict):
    """``request.kind``: the kind of the object under review."""

    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    """``request.resource``: the resource the request is for."""

    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    """``request.userInfo``: who made the request (logged by name only)."""

    username: str
    uid: str
    groups: list[str]


class AdmissionRequest(TypedDict):
    """``request``: one admission request."""

    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    subResource: NotRequired[str]
    name: NotRequired[str]
    namespace: NotRequired[str]
    userInfo: NotRequired[UserInfo]
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]
    dryRun: NotRequired[bool]


class Status(TypedDict):
    """``response.status``: why a request was denied (shown to the user)."""

    code: int
    message: str


class AdmissionResponse(TypedDict):
    """``response``: the answer to one request."""

    uid: str
    allowed: bool
    status: NotRequired[Status]
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]
    warnings: NotRequired[list[str]]


class AdmissionReviewRequest(TypedDict):
    """The body kube-apiserver POSTs."""

    apiVersion: Literal["admission.k8s.io/v1"]
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


class AdmissionReviewResponse(TypedDict):
    """The body the webhook answers with."""

    apiVersion: Literal["admission.k8s.io/v1"]
    kind: Literal["AdmissionReview"]
    response: AdmissionResponse


class PatchOperation(TypedDict):
    """One JSONPatch (RFC 6902) ``add`` operation; the webhook writes no other kind."""

    op: Literal["add"]
    path: str
    value: Any


_OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


def parse_review(body: bytes) -> AdmissionReviewRequest:
    """Decode and check an AdmissionReview request body; :class:`WireError` if malformed."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"body is not JSON: {exc}") from None
    except RecursionError:  # e.g. 100,000 nested arrays: no AdmissionReview is that deep
        raise WireError("body is JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise WireError(f"body must be a JSON object, not {type(data).__name__}")
    if data.get("apiVersion") != API_VERSION or data.get("kind") != KIND:
        raise WireError(
            f"expected apiVersion {API_VERSION} kind {KIND}, got "
            f"apiVersion {data.get('apiVersion')!r} kind {data.get('kind')!r} "
            "(register the webhook with admissionReviewVersions: [v1])"
        )
    request = data.get("request")
    if not isinstance(request, dict):
        raise WireError("request is missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise WireError("request.uid is missing or not a string")
    if request.get("operation") not in _OPERATIONS:
        raise WireError(
            f"request.operation {request.get('operation')!r} is not one of {_OPERATIONS}"
        )
    for field in ("kind", "resource"):
        if not isinstance(request.get(field), dict):
            raise WireError(f"request.{field} is missing or not an object")
    obj = request.get("object")
    if obj is not None and not isinstance(obj, dict):
        raise WireError("request.object must be an object or null")
    return data  # type: ignore[return-value]  # checked above, field by field


def allow(uid: str, patch: list[PatchOperation] | None = None) -> AdmissionReviewResponse:
    """Allow the request, with a JSONPatch when ``patch`` holds operations."""
    response: AdmissionResponse = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def deny(uid: str, message: str, code: int = 403) -> AdmissionReviewResponse:
    """Deny the request; kube-apiserver shows ``message`` to the user."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "response": {"uid": uid, "allowed": False, "status": {"code": code, "message": message}},
    }
