"""The console's API access: list and watch Nodes and Pods exactly as the extender does
(``extender.kubeapi.KubernetesApi``), and Events (core v1, every namespace) the same way.

Read-only: list and watch, nothing else (the chart's ClusterRole grants get/list/watch on
nodes, pods and events).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubenpu.errors import ApiError
from kubenpu.extender.kubeapi import WATCH_TIMEOUT_S, KubernetesApi
from kubenpu.kubeclient import core_api, raw, watch_chunks

#: Every API call the console makes, as RBAC rules (the chart's ClusterRole; a test keeps
#: them equal): list and watch (the informers), get for the same objects (kubectl-style
#: reads), nothing that writes.
RBAC_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": [""], "resources": ["nodes", "pods", "events"], "verbs": ["get", "list", "watch"]}
]

#: Timeout of connecting / of one list, seconds.
_CONNECT_TIMEOUT = 10
_LIST_TIMEOUT = 60


class ConsoleApi:
    """``list(kind)`` and ``watch(kind, version)`` for "nodes", "pods" and "events"."""

    def __init__(self, kubeconfig: str = "") -> None:
        self._objects = KubernetesApi(kubeconfig)
        self._core = core_api(kubeconfig)

    def list(self, kind: str) -> tuple[list[dict[str, Any]], str]:
        """Every object of ``kind`` and the list's resourceVersion."""
        if kind != "events":
            return self._objects.list(kind)
        try:
            response = raw(
                self._core.list_event_for_all_namespaces(
                    _preload_content=False, _request_timeout=_LIST_TIMEOUT
                )
            )
        except ApiException as err:
            raise ApiError(f"list events: {err.status} {err.reason}", err.status or 0) from None
        data = json.loads(response.data)
        return data.get("items") or [], str(data["metadata"]["resourceVersion"])

    def watch(self, kind: str, version: str) -> Iterator[dict[str, Any]]:
        """Watch events of ``kind`` from ``version`` until the server ends the watch."""
        if kind != "events":
            yield from self._objects.watch(kind, version)
            return
        try:
            response = raw(
                self._core.list_event_for_all_namespaces(
                    watch=True,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_TIMEOUT_S,
                    _preload_content=False,
                    _request_timeout=(_CONNECT_TIMEOUT, WATCH_TIMEOUT_S + 30),
                )
            )
        except ApiException as err:
            if err.status == 410:
                yield {"type": "ERROR", "object": {"code": 410, "message": "Gone"}}
                return
            raise ApiError(f"watch events: {err.status} {err.reason}", err.status or 0) from None
        with contextlib.closing(watch_chunks(response)) as chunks:
            for events in chunks:
                yield from events
