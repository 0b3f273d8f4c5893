"""The extender's API access with the official Kubernetes client (the one module that
imports it): list and watch for the informers, and the calls bind makes.

Everything is read and written as raw JSON (``_preload_content=False``): the cache works
on plain dicts and building the client's models would cost milliseconds per object.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes.client import CustomObjectsApi, PolicyV1Api
from kubernetes.client.exceptions import ApiException

from kubenpu.errors import ApiError, Conflict
from kubenpu.kubeclient import core_api, raw, watch_chunks

_MERGE_PATCH = "application/merge-patch+json"
#: Timeout of one API request, seconds.
_TIMEOUT = 10
#: How long the server keeps a watch open before ending it (it is then resumed).
WATCH_TIMEOUT_S = 240


def _error(err: ApiException, what: str) -> ApiError:
    try:
        message = json.loads(err.body or "{}").get("message") or err.reason
    except ValueError:
        message = err.reason
    cls = Conflict if err.status == 409 else ApiError
    return cls(f"{what}: {err.status} {message}", err.status or 0)


class KubernetesApi:
    """``KubeApi`` plus list/watch, over one ``ApiClient`` of the official client."""

    def __init__(self, kubeconfig: str = "") -> None:
        self.core = core_api(kubeconfig)
        self.policy = PolicyV1Api(self.core.api_client)
        self.custom = CustomObjectsApi(self.core.api_client)

    # -- informers -------------------------------------------------------------------

    def _lister(self, kind: str) -> Callable[..., object]:
        listers: dict[str, Callable[..., object]] = {
            "nodes": self.core.list_node,
            "pods": self.core.list_pod_for_all_namespaces,
            # Only the console watches these (the extender's RBAC does not grant them).
            "events": self.core.list_event_for_all_namespaces,
            # DRA nodes' NPUs and what the allocated claims hold, for prioritize.
            "resourceslices": functools.partial(
                self.custom.list_cluster_custom_object, "resource.k8s.io", "v1", "resourceslices"
            ),
            "resourceclaims": functools.partial(
                self.custom.list_cluster_custom_object, "resource.k8s.io", "v1", "resourceclaims"
            ),
        }
        return listers[kind]

    def list(self, kind: str) -> tuple[list[dict[str, Any]], str]:
        """Every object of ``kind`` ("nodes", "pods", "events", "resourceslices" or
        "resourceclaims") and the list's resourceVersion."""
        try:
            response = raw(self._lister(kind)(_preload_content=False, _request_timeout=60))
        except ApiException as err:
            raise _error(err, f"list {kind}") from None
        data = json.loads(response.data)
        return data.get("items") or [], str(data["metadata"]["resourceVersion"])

    def watch(self, kind: str, version: str) -> Iterator[dict[str, Any]]:
        """Watch events of ``kind`` from ``version`` until the server ends the watch."""
        try:
            response = raw(
                self._lister(kind)(
                    watch=True,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_TIMEOUT_S,
                    _preload_content=False,
                    _request_timeout=(_TIMEOUT, WATCH_TIMEOUT_S + 30),
                )
            )
        except ApiException as err:
            if err.status == 410:
                yield {"type": "ERROR", "object": {"code": 410, "message": "Gone"}}
                return
            raise _error(err, f"watch {kind}") from None
        with contextlib.closing(watch_chunks(response)) as chunks:
            for events in chunks:
                yield from events

    # -- bind ------------------------------------------------------------------------

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """The Pod, read from the API server."""
        try:
            response = raw(
                self.core.read_namespaced_pod(
                    name, namespace, _preload_content=False, _request_timeout=_TIMEOUT
                )
            )
        except ApiException as err:
            raise _error(err, f"get pod {namespace}/{name}") from None
        pod: dict[str, Any] = json.loads(response.data)
        return pod

    def patch_pod(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a JSON merge patch (a resourceVersion in it is a precondition)."""
        try:
            response = raw(
                self.core.patch_namespaced_pod(
                    name,
                    namespace,
                    body,
                    _content_type=_MERGE_PATCH,
                    _preload_content=False,
                    _request_timeout=_TIMEOUT,
                )
            )
        except ApiException as err:
            raise _error(err, f"patch pod {namespace}/{name}") from None
        pod: dict[str, Any] = json.loads(response.data)
        return pod

    # builtins.list: in this class body, ``list`` is the method above.
    def list_pods(self, label_selector: str) -> builtins.list[dict[str, Any]]:
        """Pods matching ``label_selector``, a consistent read (no resourceVersion given)."""
        try:
            response = raw(
                self.core.list_pod_for_all_namespaces(
                    label_selector=label_selector, _preload_content=False, _request_timeout=_TIMEOUT
                )
            )
        except ApiException as err:
            raise _error(err, f"list pods {label_selector}") from None
        pods: builtins.list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return pods

    def _get_object(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any]:
        """One namespaced object of an API group the typed client does not model, read
        afresh as JSON."""
        try:
            response = raw(
                self.custom.get_namespaced_custom_object(
                    group,
                    version,
                    namespace,
                    plural,
                    name,
                    _preload_content=False,
                    _request_timeout=_TIMEOUT,
                )
            )
        except ApiException as err:
            raise _error(err, f"get {plural[:-1]} {namespace}/{name}") from None
        obj: dict[str, Any] = json.loads(response.data)
        return obj

    def get_pod_group(self, namespace: str, name: str) -> dict[str, Any]:
        """The PodGroup ``namespace/name`` (Workload API, scheduling.k8s.io/v1beta1)."""
        return self._get_object("scheduling.k8s.io", "v1beta1", "podgroups", namespace, name)

    def list_pod_disruption_budgets(self) -> builtins.list[dict[str, Any]]:
        """Every PodDisruptionBudget (policy/v1), a consistent read: preempt lists them
        once per call, as rare as preemptions are."""
        try:
            response = raw(
                self.policy.list_pod_disruption_budget_for_all_namespaces(
                    _preload_content=False, _request_timeout=_TIMEOUT
                )
            )
        except ApiException as err:
            raise _error(err, "list poddisruptionbudgets") from None
        pdbs: builtins.list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return pdbs

    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any]:
        """The ResourceClaim ``namespace/name`` (resource.k8s.io/v1), read afresh."""
        return self._get_object("resource.k8s.io", "v1", "resourceclaims", namespace, name)

    def bind_pod(self, namespace: str, name: str, uid: str, node: str) -> None:
        """POST the pod's ``binding`` subresource (with the pod's uid as a precondition)."""
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        try:
            self.core.create_namespaced_pod_binding(
                name,
                namespace,
                body,  # type: ignore[arg-type]  # a dict: validate_call makes it a V1Binding
                _preload_content=False,
                _request_timeout=_TIMEOUT,
            )
        except ApiException as err:
            raise _error(err, f"bind pod {namespace}/{name} to {node}") from None
