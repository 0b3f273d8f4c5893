"""The informer pattern: list, then watch from the list's resourceVersion, forever.

A watch that the server ends normally is resumed from the last resourceVersion seen
(bookmarks keep it fresh). ``410 Gone`` (the version is too old) and any error (lost
connection, API server restart) lead to a fresh list with exponential backoff; while
that fails the informer is not synced, and the extender reports itself not ready but
keeps answering from its cache. The API is two plain functions, so tests pass their own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

#: A watch that ends sooner than this with no event counts as ending "at once".
_QUICK_WATCH_S = 1.0
#: Returns (items, resourceVersion) of a full list.
ListFn = Callable[[], tuple[list[dict[str, Any]], str]]
#: Yields watch events ({"type", "object"}) from a resourceVersion until the server ends.
WatchFn = Callable[[str], Iterator[dict[str, Any]]]


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class Informer:
    """Keeps one kind's objects flowing into ``on_replace`` / ``on_event``."""

    def __init__(
        self,
        kind: str,
        list_fn: ListFn,
        watch_fn: WatchFn,
        *,
        on_replace: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        on_relist: Callable[[], None] = lambda: None,
        stop: threading.Event | None = None,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.kind = kind
        self._list = list_fn
        self._watch = watch_fn
        self._on_replace = on_replace
        self._on_event = on_event
        self._on_relist = on_relist
        self.stop = stop or threading.Event()
        self._max_backoff = max_backoff_s
        #: Set while the last list succeeded and no error happened since.
        self.synced = threading.Event()

    def run(self) -> None:
        """List and watch until :attr:`stop` is set."""
        backoff = 0.2
        while not self.stop.is_set():
            try:
                items, version = self._list()
            except Exception as err:
                self.synced.clear()
                log.warning("%s: list failed (%s); retrying in %.1f s", self.kind, err, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            self._on_relist()
            self._on_replace(items)
            self.synced.set()
            backoff = 0.2
            try:
                self._follow(version)
            except Gone:
                log.info("%s: watch version expired (410); listing again", self.kind)
            except Exception as err:
                # Lost connection or API server restart: not synced until a list succeeds.
                self.synced.clear()
                log.warning("%s: watch failed (%s); listing again", self.kind, err)
                self.stop.wait(backoff)

    def _follow(self, version: str) -> None:
        """Watch from ``version``; resume after normal ends; raise on 410 or errors.

        A watch that ends at once with nothing in it (a proxy or server closing every watch
        straight away) is resumed after a growing pause, not in a busy loop."""
        idle_backoff = 0.0
        while not self.stop.is_set():
            started, events = time.monotonic(), 0
            for event in self._watch(version):
                events += 1
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise RuntimeError(f"watch error: {obj.get('message', obj)}")
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._on_event(kind, obj)
                if self.stop.is_set():
                    return
            if self.stop.is_set():
                return
            if events or time.monotonic() - started >= _QUICK_WATCH_S:
                idle_backoff = 0.0
                continue
            idle_backoff = min(max(idle_backoff * 2, 0.2), self._max_backoff)
            log.debug("%s: watch ended at once; resuming in %.1f s", self.kind, idle_backoff)
            self.stop.wait(idle_backoff)


class InformerGroup:
    """Informers that run together: one stop event, daemon threads, ready when all synced.

    The extender's service and the console's each run one.
    """

    def __init__(self, informers: list[Informer], stop: threading.Event) -> None:
        self.informers = informers
        self.stop = stop

    def ready(self) -> tuple[bool, str]:
        """(True, "") when every informer is synced, else (False, which are not)."""
        waiting = [i.kind for i in self.informers if not i.synced.is_set()]
        if waiting:
            return False, f"not synced with the API server: {', '.join(waiting)}"
        return True, ""

    def start(self, prefix: str = "") -> None:
        """Run each informer in a daemon thread named ``prefix + kind``."""
        for informer in self.informers:
            name = prefix + informer.kind
            threading.Thread(target=informer.run, name=name, daemon=True).start()

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every informer synced once; False on timeout."""
        return all(i.synced.wait(timeout) for i in self.informers)

    def shutdown(self) -> None:
        """Stop them all (a watch in progress ends with its timeout at the latest)."""
        self.stop.set()
