"""The API calls the extender makes, as protocols: ``kubeapi.KubernetesApi`` makes them
with the official client, the tests with an in-memory fake. Each raises ``ApiError``
(``Conflict`` on 409) from :mod:`kubenpu.errors`."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import Any, Protocol


class KubeApi(Protocol):
    """The API calls bind makes."""

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """The Pod, read from the API server (not a cache)."""

    def patch_pod(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a JSON merge patch; return the updated Pod."""

    def list_pods(self, label_selector: str) -> list[dict[str, Any]]:
        """Pods matching the selector, read afresh (a consistent read)."""

    def bind_pod(self, namespace: str, name: str, uid: str, node: str) -> None:
        """Create the pod's Binding to ``node``."""

    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any]:
        """The ResourceClaim (``resource.k8s.io/v1``), read from the API server: bind on a
        DRA node reads the pod's claims for the devices they were allocated."""


class WatchableApi(KubeApi, Protocol):
    """``KubeApi`` plus what the informers need."""

    def list(self, kind: str) -> tuple[list[dict[str, Any]], str]:
        """Every object of ``kind`` ("nodes", "pods", "resourceslices", "resourceclaims")
        and the resourceVersion."""

    def watch(self, kind: str, version: str) -> Iterator[dict[str, Any]]:
        """Watch events of ``kind`` from ``version``."""

    def get_pod_group(self, namespace: str, name: str) -> dict[str, Any]:
        """The PodGroup (``scheduling.k8s.io/v1beta1``): gang members' filter reads its
        policy."""

    def list_pod_disruption_budgets(self) -> builtins.list[dict[str, Any]]:
        """Every PodDisruptionBudget (policy/v1), read afresh (preempt's PDB flags)."""
