"""Nodes and Namespaces from the API server, cached, for the admission rules.

The rules call these on the request path, so each answer is kept for a few seconds: a
burst of pods costs one API call, and an API outage is bridged by the last answer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from kubenpu.adapters.kube import node_npu_counts
from kubenpu.errors import ObjectError
from kubenpu.webhook.admission import NamespaceLookup, NodeLookup, NpuNode

log = logging.getLogger(__name__)
T = TypeVar("T")


class Cached(Generic[T]):
    """A value fetched at most once per ``ttl`` seconds; a failed fetch keeps the last one.

    With no value yet, a failed fetch raises, which the rules treat as "unknown".
    """

    def __init__(
        self, fetch: Callable[[], T], ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._value: T | None = None
        self._at: float | None = None

    def get(self) -> T:
        """The cached value, fetched again when older than ``ttl``."""
        with self._lock:
            now = self._clock()
            if self._at is not None and now - self._at < self._ttl:
                return self._value  # type: ignore[return-value]
            try:
                self._value = self._fetch()
            except Exception as exc:
                if self._at is None:
                    raise
                log.warning(
                    "refresh failed, keeping the answer from %.0f s ago: %s", now - self._at, exc
                )
                return self._value  # type: ignore[return-value]
            self._at = now
            return self._value


def npu_nodes(listing: Mapping[str, Any]) -> list[NpuNode]:
    """The Nodes of a NodeList (JSON) that have NPUs, with their NPU capacity."""
    found = []
    for obj in listing.get("items") or []:
        try:
            total, _ = node_npu_counts(obj)
        except ObjectError as exc:  # one odd Node must not hide the others
            log.warning("node skipped: %s", exc)
            continue
        if total:
            found.append(NpuNode(obj["metadata"]["name"], total))
    return found


def kubernetes_lookups(
    kubeconfig: str = "", *, node_ttl: float = 30.0, namespace_ttl: float = 10.0
) -> tuple[NodeLookup, NamespaceLookup]:
    """Lookups reading the API with the official client: in-cluster credentials, or
    ``kubeconfig`` when given. Needs get/list on nodes and get on namespaces.
    """
    from kubenpu.kubeclient import core_api, raw  # only the running server needs the client

    api = core_api(kubeconfig)

    def fetch_nodes() -> list[NpuNode]:
        # Raw JSON: the rules need two fields, building V1Node models would cost more.
        response = raw(api.list_node(_preload_content=False, _request_timeout=3))
        return npu_nodes(json.loads(response.data))

    nodes = Cached(fetch_nodes, node_ttl)
    namespaces: dict[str, Cached[Mapping[str, str]]] = {}
    lock = threading.Lock()

    def namespace_annotations(name: str) -> Mapping[str, str]:
        def fetch() -> Mapping[str, str]:
            response = raw(api.read_namespace(name, _preload_content=False, _request_timeout=3))
            meta = json.loads(response.data).get("metadata") or {}
            return {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}

        with lock:
            cached = namespaces.setdefault(name, Cached(fetch, namespace_ttl))
        return cached.get()

    def node_lookup() -> Sequence[NpuNode]:
        return nodes.get()

    return node_lookup, namespace_annotations
