"""The node agent's Kubernetes API calls, as a kubelet makes them (and no others).

:class:`NodeApi` registers the Node, posts its status, renews its Lease, lists and
watches the pods bound to it, finishes their deletion and reports their status. The
bodies come from :mod:`kubenpu.devcluster.nodeagent.status`; what to send when is the
agent's business.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Generator, Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from kubenpu.kubeclient import raw, watch_chunks

log = logging.getLogger("kubenpu.devcluster.nodeagent")

NODE_LEASE_NAMESPACE = "kube-node-lease"
_SMP = "application/strategic-merge-patch+json"


class NodeApi:
    """The API as one node sees it, with the node's own credentials (``kubeconfig``)."""

    def __init__(self, node: str, kubeconfig: str) -> None:
        self.node = node
        api_client = k8s_config.new_client_from_config(config_file=kubeconfig)
        self.core = k8s.CoreV1Api(api_client)
        self.coordination = k8s.CoordinationV1Api(api_client)

    # -- the Node ---------------------------------------------------------------------

    def register_node(self, labels: Mapping[str, str]) -> None:
        """Create the Node with ``labels``; if it exists, refresh its labels."""
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node, "labels": dict(labels)},
        }
        try:
            # A manifest dict where the client annotates V1Node: validate_call builds it.
            self.core.create_node(body)  # type: ignore[arg-type]
            log.info("registered node %s", self.node)
        except ApiException as err:
            if err.status != 409:
                raise
            self.core.patch_node(
                self.node, {"metadata": {"labels": dict(labels)}}, _content_type=_SMP
            )
            log.info("node %s was registered before; labels refreshed", self.node)

    def node_conditions(self) -> list[dict[str, Any]]:
        """The Node's current status conditions."""
        node = raw(self.core.read_node(self.node, _preload_content=False))
        conditions: list[dict[str, Any]] = (
            json.loads(node.data).get("status", {}).get("conditions", [])
        )
        return conditions

    def patch_node_status(self, status: Mapping[str, Any]) -> None:
        """Strategic-merge ``status`` into the Node's (conditions are merged by type)."""
        self.core.patch_node_status(self.node, {"status": dict(status)}, _content_type=_SMP)

    def renew_lease(self, spec: Mapping[str, Any]) -> None:
        """Write the node's Lease ``spec``, creating the Lease when there is none."""
        try:
            self.coordination.patch_namespaced_lease(
                self.node, NODE_LEASE_NAMESPACE, {"spec": dict(spec)}, _content_type=_SMP
            )
        except ApiException as err:
            if err.status != 404:
                raise
            # A manifest dict where the client annotates V1Lease: validate_call builds it.
            self.coordination.create_namespaced_lease(
                NODE_LEASE_NAMESPACE,
                {  # type: ignore[arg-type]
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.node, "namespace": NODE_LEASE_NAMESPACE},
                    "spec": dict(spec),
                },
            )

    # -- pods -------------------------------------------------------------------------

    @property
    def pod_selector(self) -> str:
        """The field selector of the pods bound to this node."""
        return f"spec.nodeName={self.node}"

    def list_pods(self) -> dict[str, Any]:
        """The PodList of the pods bound to this node, as the API's JSON."""
        listing: dict[str, Any] = json.loads(
            raw(
                self.core.list_pod_for_all_namespaces(
                    field_selector=self.pod_selector, _preload_content=False
                )
            ).data
        )
        return listing

    def watch_pods(self, version: str) -> Generator[list[dict[str, Any]], None, None]:
        """Pod events from ``version`` on, in the chunks they arrive in, until the server
        ends the watch (or the caller stops iterating)."""
        response = raw(
            self.core.list_pod_for_all_namespaces(
                field_selector=self.pod_selector,
                resource_version=version,
                watch=True,
                timeout_seconds=300,
                _preload_content=False,
            )
        )
        with contextlib.closing(watch_chunks(response)) as chunks:
            yield from chunks

    def finish_deletion(self, namespace: str, name: str, uid: str) -> None:
        """Delete the pod now (its containers do not exist: no grace period to wait out)."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            # A dict where the client annotates V1DeleteOptions: validate_call builds it.
            self.core.delete_namespaced_pod(name, namespace, body=body)  # type: ignore[arg-type]
            log.info("pod %s/%s deleted", namespace, name)
        except ApiException as err:
            if err.status not in (404, 409):
                raise

    def patch_pod_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Report a pod's status; a pod deleted meanwhile is nothing to report."""
        try:
            self.core.patch_namespaced_pod_status(
                name, namespace, {"status": dict(status)}, _content_type=_SMP
            )
        except ApiException as err:
            if err.status != 404:
                raise
