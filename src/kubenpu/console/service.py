"""The running console's feeds: one informer each for Nodes, Pods and Events into a
``ConsoleStore`` (the extender's informer, list then watch, re-list on 410 and errors)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from kubenpu.console.store import ConsoleStore
from kubenpu.extender.informer import Informer, InformerGroup

log = logging.getLogger(__name__)

KINDS = ("nodes", "pods", "events")


class ListWatchApi(Protocol):
    """What the informers call (``kubeapi.ConsoleApi``, or a test's fake)."""

    def list(self, kind: str) -> tuple[list[dict[str, Any]], str]:
        """Every object of ``kind`` and the resourceVersion."""

    def watch(self, kind: str, version: str) -> Iterator[dict[str, Any]]:
        """Watch events of ``kind`` from ``version``."""


class ConsoleService:
    """Informers feeding the store, in daemon threads."""

    def __init__(self, api: ListWatchApi, store: ConsoleStore) -> None:
        self.store = store
        self.stop = threading.Event()
        handlers: dict[str, tuple[Callable[..., None], Callable[..., None]]] = {
            "nodes": (store.replace_nodes, store.node_event),
            "pods": (store.replace_pods, store.pod_event),
            "events": (store.replace_events, store.event_event),
        }
        self.informers = InformerGroup(
            [self._informer(api, kind, *handlers[kind]) for kind in KINDS], self.stop
        )
        store.synced = lambda: self.informers.ready()[0]

    def _informer(
        self,
        api: ListWatchApi,
        kind: str,
        replace: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
    ) -> Informer:
        def on_replace(items: list[dict[str, Any]]) -> None:
            replace(items)
            log.info("%s: synced %d objects", kind, len(items))

        return Informer(
            kind,
            lambda: api.list(kind),
            lambda version: api.watch(kind, version),
            on_replace=on_replace,
            on_event=on_event,
            stop=self.stop,
        )

    def ready(self) -> tuple[bool, str]:
        """Ready when every informer is synced."""
        return self.informers.ready()

    def start(self) -> None:
        """Start the informers."""
        self.informers.start(prefix="console-")

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every informer synced once; False on timeout."""
        return self.informers.wait_synced(timeout)

    def shutdown(self) -> None:
        """Stop the informers (a watch in progress ends with its timeout at the latest)."""
        self.informers.shutdown()
