"""The console's picture of the cluster, fed by informers (no I/O here).

Nodes and Pods go into the extender's own ``ClusterCache`` (so devices are accounted
exactly as the extender decides with) and are kept as objects too (names, phases,
conditions, labels); Events about Nodes and Pods are kept per object, the newest
:data:`views.EVENTS_PER_OBJECT`. Every change bumps :attr:`ConsoleStore.version`, which the
live pages follow. Thread-safe: informer threads write, request handlers read under
:attr:`lock`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from kubenpu.adapters.kube import pod_key
from kubenpu.console.reasons import event_time
from kubenpu.console.views import EVENTS_PER_OBJECT, Inputs, RowCache
from kubenpu.errors import ObjectError
from kubenpu.extender.cache import ClusterCache

log = logging.getLogger(__name__)

#: Kinds of involved objects whose events are kept.
_EVENT_KINDS = ("Node", "Pod")


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without managedFields (large, never shown)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


def _event_target(event: Mapping[str, Any]) -> tuple[str, str] | None:
    obj = event.get("involvedObject") or event.get("regarding") or {}
    kind, name = obj.get("kind"), obj.get("name")
    if kind not in _EVENT_KINDS or not name:
        return None
    if kind == "Pod":
        ns = obj.get("namespace") or (event.get("metadata") or {}).get("namespace") or ""
        return kind, f"{ns}/{name}" if ns else str(name)
    return kind, str(name)


def _event_id(event: Mapping[str, Any]) -> str:
    meta = event.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")


class _EventsByObject(Mapping[tuple[str, str], Sequence[Mapping[str, Any]]]):
    """The kept events as lists, built only for the objects a page looks at."""

    def __init__(self, kept: Mapping[tuple[str, str], Mapping[str, dict[str, Any]]]) -> None:
        self._kept = kept

    def __getitem__(self, key: tuple[str, str]) -> Sequence[Mapping[str, Any]]:
        return list(self._kept[key].values())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._kept)

    def __len__(self) -> int:
        return len(self._kept)


class ConsoleStore:
    """Nodes, Pods (in a ``ClusterCache`` and as objects) and Events, with a version."""

    def __init__(self, policy: str = "", *, clock: Any = time.time) -> None:
        self.lock = threading.RLock()
        self.cache = ClusterCache(policy)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.events: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._clock = clock
        #: Bumped on every change.
        self.version = 0
        #: Set by the service: whether every informer is synced.
        self.synced = lambda: True
        #: The grid's rows, kept per node until the node changes (views.RowCache).
        self.rows = RowCache()

    def _bump(self) -> None:
        self.version += 1

    # -- nodes -----------------------------------------------------------------------

    def replace_nodes(self, items: list[dict[str, Any]]) -> None:
        """After a list."""
        with self.lock:
            self.nodes = {}
            for obj in items:
                name = (obj.get("metadata") or {}).get("name")
                if isinstance(name, str):
                    self.nodes[name] = _slim(obj)
            self.cache.replace_nodes(items)
            self._bump()

    def node_event(self, kind: str, obj: dict[str, Any]) -> None:
        """A watch event of a Node."""
        name = (obj.get("metadata") or {}).get("name")
        if not isinstance(name, str):
            return
        with self.lock:
            if kind == "DELETED":
                self.nodes.pop(name, None)
                self.events.pop(("Node", name), None)
                self.cache.delete_node(name)
            else:
                self.nodes[name] = _slim(obj)
                self.cache.upsert_node(obj)
            self._bump()

    # -- pods ------------------------------------------------------------------------

    def replace_pods(self, items: list[dict[str, Any]]) -> None:
        """After a list."""
        with self.lock:
            self.pods = {}
            for obj in items:
                try:
                    self.pods[pod_key(obj)] = _slim(obj)
                except ObjectError:
                    continue
            self.cache.replace_pods(items)
            self._bump()

    def pod_event(self, kind: str, obj: dict[str, Any]) -> None:
        """A watch event of a Pod."""
        try:
            key = pod_key(obj)
        except ObjectError:
            return
        with self.lock:
            if kind == "DELETED":
                self.pods.pop(key, None)
                self.events.pop(("Pod", key), None)
                self.cache.delete_pod(key)
            else:
                self.pods[key] = _slim(obj)
                self.cache.upsert_pod(obj)
            self._bump()

    # -- events ----------------------------------------------------------------------

    def _add_event(self, event: dict[str, Any]) -> bool:
        target = _event_target(event)
        if target is None:
            return False
        kept = self.events.setdefault(target, {})
        kept[_event_id(event)] = _slim(event)
        if len(kept) > EVENTS_PER_OBJECT:
            oldest = sorted(kept, key=lambda k: event_time(kept[k]))
            for k in oldest[: len(kept) - EVENTS_PER_OBJECT]:
                del kept[k]
        return True

    def replace_events(self, items: list[dict[str, Any]]) -> None:
        """After a list."""
        with self.lock:
            self.events = {}
            for event in items:
                self._add_event(event)
            self._bump()

    def event_event(self, kind: str, obj: dict[str, Any]) -> None:
        """A watch event of an Event."""
        with self.lock:
            if kind == "DELETED":
                target = _event_target(obj)
                kept = self.events.get(target) if target is not None else None
                if kept is not None and kept.pop(_event_id(obj), None) is not None:
                    self._bump()
                return
            if self._add_event(obj):
                self._bump()

    # -- reading ---------------------------------------------------------------------

    def inputs(self) -> Inputs:
        """What the views compute from; call with :attr:`lock` held, and finish with the
        result (the state is the live one) before releasing it."""
        return Inputs(
            state=self.cache.state(),
            policy=self.cache.policy,
            nodes=self.nodes,
            pods=self.pods,
            events=_EventsByObject(self.events),
            synced=self.synced(),
            now=self._clock(),
            rows=self.rows,
        )
