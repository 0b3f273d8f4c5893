"""The running extender: cache + decisions + informers for Nodes, Pods, ResourceSlices and
ResourceClaims, and readiness."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from kubenpu.adapters.claims import claim_ref
from kubenpu.adapters.kube import pod_key
from kubenpu.errors import ObjectError
from kubenpu.extender.api import WatchableApi
from kubenpu.extender.cache import ClusterCache
from kubenpu.extender.core import Extender
from kubenpu.extender.gangs import GangPolicies
from kubenpu.extender.informer import Informer, InformerGroup
from kubenpu.extender.metrics import ExtenderMetrics
from kubenpu.extender.preempt import PodIndex, Preempter
from kubenpu.model import Request
from kubenpu.names import DRA_DRIVER

log = logging.getLogger(__name__)


class ExtenderService:
    """Everything ``kubenpu scheduler`` runs but the HTTP server."""

    def __init__(
        self,
        api: WatchableApi,
        *,
        policy: str = "",
        seed: int = 0,
        task_mix: Sequence[Request] = (),
        dra_driver: str = DRA_DRIVER,
    ) -> None:
        self.metrics = ExtenderMetrics()
        self.cache = ClusterCache(policy, seed=seed, task_mix=task_mix, dra_driver=dra_driver)
        #: What preempt needs of the pods beyond the cache, fed by the same informer and
        #: by the extender's own binds.
        self.pods = PodIndex()
        self.extender = Extender(
            self.cache,
            api,
            self.metrics,
            on_bound=self.pods.upsert,
            gang_policy=GangPolicies(api.get_pod_group).get,
        )
        self.preempter = Preempter(
            self.extender, self.pods, lambda: api.list_pod_disruption_budgets()
        )
        self.stop = threading.Event()
        self.informers = InformerGroup(
            [
                self._informer(api, "nodes", self._node_event, self.cache.replace_nodes),
                self._informer(api, "pods", self._pod_event, self._replace_pods),
                self._informer(api, "resourceslices", self._slice_event, self.cache.replace_slices),
                self._informer(api, "resourceclaims", self._claim_event, self.cache.replace_claims),
            ],
            self.stop,
        )

    def _informer(
        self,
        api: WatchableApi,
        kind: str,
        on_event: Callable[[str, dict[str, Any]], None],
        replace: Callable[[list[dict[str, Any]]], None],
    ) -> Informer:
        def on_replace(items: list[dict[str, Any]]) -> None:
            with self.extender.lock:
                replace(items)
                self._gauges()
            log.info("%s: synced %d objects", kind, len(items))

        return Informer(
            kind,
            lambda: api.list(kind),
            lambda version: api.watch(kind, version),
            on_replace=on_replace,
            on_event=on_event,
            on_relist=lambda: self.metrics.resyncs.labels(kind).inc(),
            stop=self.stop,
        )

    def _node_event(self, kind: str, obj: dict[str, Any]) -> None:
        with self.extender.lock:
            if kind == "DELETED":
                self.cache.delete_node(str((obj.get("metadata") or {}).get("name", "")))
            else:
                self.cache.upsert_node(obj)
            self._gauges()

    def _slice_event(self, kind: str, obj: dict[str, Any]) -> None:
        with self.extender.lock:
            if kind == "DELETED":
                self.cache.delete_slice(str((obj.get("metadata") or {}).get("name", "")))
            else:
                self.cache.upsert_slice(obj)
            self._gauges()

    def _claim_event(self, kind: str, obj: dict[str, Any]) -> None:
        with self.extender.lock:
            if kind == "DELETED":
                self.cache.delete_claim(claim_ref(obj))
            else:
                self.cache.upsert_claim(obj)
            self._gauges()

    def _replace_pods(self, objs: list[dict[str, Any]]) -> None:
        self.cache.replace_pods(objs)
        self.pods.replace(objs)
        self.extender.gangs.replace(objs)

    def _pod_event(self, kind: str, obj: dict[str, Any]) -> None:
        with self.extender.lock:
            if kind == "DELETED":
                try:
                    key = pod_key(obj)
                except ObjectError:
                    return
                self.cache.delete_pod(key)
                self.pods.delete(key)
                self.extender.gangs.delete_pod(key)
            else:
                self.cache.upsert_pod(obj)
                self.pods.upsert(obj)
                self.extender.gangs.upsert_pod(obj)
            self._gauges()

    def _gauges(self) -> None:
        gauge = self.metrics.cache_objects
        gauge.labels("nodes").set(self.cache.num_nodes)
        gauge.labels("pods").set(self.cache.num_pods)
        gauge.labels("placements").set(len(self.cache.state().holdings))
        problems = self.metrics.cache_problems
        for kind in ("node", "pod", "resourceslice", "resourceclaim"):
            problems.labels(kind).set(self.cache.rejected[kind])
        problems.labels("conflict").set(self.cache.conflicts)

    def ready(self) -> tuple[bool, str]:
        """Ready when every informer is synced (and has not lost the API since)."""
        ok, why = self.informers.ready()
        self.metrics.ready.set(1 if ok else 0)
        return ok, why

    def start(self) -> None:
        """Start the informers in daemon threads."""
        self.informers.start()

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every informer synced once; False on timeout."""
        return self.informers.wait_synced(timeout)

    def shutdown(self) -> None:
        """Stop the informers (their current watch ends with its timeout at the latest)."""
        self.informers.shutdown()
