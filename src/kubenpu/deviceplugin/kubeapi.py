"""The device plugin's Kubernetes API calls: the pod lookup and the Node patcher.

The only device plugin module that talks to the API (with the official client, through
:mod:`kubenpu.kubeclient`); what it reads and writes is decided by the pure modules
``sharing`` (which pods hold which placement) and ``inventory`` (the Node annotation).
"""

from __future__ import annotations

import json
from typing import Any

from kubenpu.deviceplugin.inventory import NodePatcher
from kubenpu.deviceplugin.sharing import PendingPlacement, PendingReader, PodLookup
from kubenpu.kubeclient import core_api, raw


def kubernetes_pod_lookup(node_name: str, kubeconfig: str = "") -> PodLookup:
    """A :data:`~kubenpu.deviceplugin.sharing.PodLookup`: the placements of the pods bound
    to ``node_name`` that are still Pending, read from the API."""
    api = core_api(kubeconfig)
    selector = f"spec.nodeName={node_name},status.phase=Pending"
    reader = PendingReader(node_name)

    def lookup() -> list[PendingPlacement]:
        # Raw JSON: only metadata is needed, building full V1Pod models costs milliseconds.
        response = raw(
            api.list_pod_for_all_namespaces(
                field_selector=selector, _request_timeout=3, _preload_content=False
            )
        )
        return reader.read(json.loads(response.data).get("items") or [])

    return lookup


def kubernetes_node_patcher(node_name: str, kubeconfig: str = "") -> NodePatcher:
    """A :data:`~kubenpu.deviceplugin.inventory.NodePatcher` for ``node_name``."""
    api = core_api(kubeconfig)

    def patch(body: dict[str, Any]) -> None:
        api.patch_node(
            node_name,
            body,
            _content_type="application/merge-patch+json",
            _request_timeout=5,
            _preload_content=False,
        )

    return patch
