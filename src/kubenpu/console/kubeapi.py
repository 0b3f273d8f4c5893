"""The console's API access: list and watch Nodes, Pods and Events (core v1, every
namespace) exactly as the extender lists and watches (``extender.kubeapi.KubernetesApi``).

Read-only: list and watch, nothing else (the chart's ClusterRole grants get/list/watch on
nodes, pods and events).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kubenpu.extender.kubeapi import KubernetesApi

#: Every API call the console makes, as RBAC rules (the chart's ClusterRole; a test keeps
#: them equal): list and watch (the informers), get for the same objects (kubectl-style
#: reads), nothing that writes.
RBAC_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": [""], "resources": ["nodes", "pods", "events"], "verbs": ["get", "list", "watch"]}
]


class ConsoleApi:
    """``list(kind)`` and ``watch(kind, version)`` for "nodes", "pods" and "events", with
    the extender's own list and watch; nothing else of it (the console writes nothing)."""

    def __init__(self, kubeconfig: str = "") -> None:
        self._objects = KubernetesApi(kubeconfig)

    def list(self, kind: str) -> tuple[list[dict[str, Any]], str]:
        """Every object of ``kind`` and the list's resourceVersion."""
        return self._objects.list(kind)

    def watch(self, kind: str, version: str) -> Iterator[dict[str, Any]]:
        """Watch events of ``kind`` from ``version`` until the server ends the watch."""
        return self._objects.watch(kind, version)
