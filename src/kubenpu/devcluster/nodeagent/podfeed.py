"""The pods bound to the node, kept current by list and watch, and the queue of pods to sync.

A kubelet's pod source: list the node's pods, then watch from the list's version; any
ended or failed watch lists again. Every pod listed or changed is queued (by uid) for the
agent's pod worker, which reads its latest object with :meth:`PodFeed.latest`. A pod gone
from the API (deleted, or missing from a new list) is reported once through ``on_gone``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

from kubenpu.devcluster.nodeagent.kubeapi import NodeApi

log = logging.getLogger("kubenpu.devcluster.nodeagent")

#: Calls ``action()`` until it succeeds or the agent stops (then None); see NodeAgent.
Retry = Callable[[str, Callable[[], Any]], Any]


class PodFeed:
    """Latest object of every pod bound here, and the work queue of pod uids."""

    def __init__(
        self,
        api: NodeApi,
        stop: threading.Event,
        retry: Retry,
        *,
        on_gone: Callable[[str], None],
        known: Callable[[], Iterable[str]],
    ) -> None:
        self._api = api
        self._stop = stop
        self._retry = retry
        self._on_gone = on_gone
        #: Uids the agent holds besides the listed ones (pods restored from a checkpoint).
        self._known = known
        self._lock = threading.Lock()
        self._seen: dict[str, dict[str, Any]] = {}
        self._queue: queue.Queue[str] = queue.Queue()

    # -- the queue --------------------------------------------------------------------

    def put(self, uid: str) -> None:
        """Queue ``uid`` for the pod worker (again)."""
        self._queue.put(uid)

    def get(self, timeout: float) -> str | None:
        """The next queued uid, or None after ``timeout`` seconds without one."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def latest(self, uid: str) -> dict[str, Any] | None:
        """The newest object of a pod still bound here, or None."""
        with self._lock:
            return self._seen.get(uid)

    # -- list and watch ---------------------------------------------------------------

    def run(self) -> None:
        """List and watch until the agent stops (a thread's target)."""
        while not self._stop.is_set():
            listing = self._retry("pod list", self._api.list_pods)
            if listing is None:
                return
            current = {p["metadata"]["uid"]: p for p in listing.get("items", [])}
            known = set(self._known())
            with self._lock:
                gone = [uid for uid in set(self._seen) | known if uid not in current]
                self._seen.update(current)
            for uid in gone:
                self._forget(uid)
            for uid in current:
                self.put(uid)
            version = listing["metadata"]["resourceVersion"]
            try:
                self._watch(version)
            except Exception as err:  # expired watch, API server restart: list again
                log.info("pod watch ended (%s); listing again", err)
                self._stop.wait(0.5)

    def _watch(self, version: str) -> None:
        """Follow pod events from ``version`` until the server ends the watch."""
        with contextlib.closing(self._api.watch_pods(version)) as chunks:
            for events in chunks:
                for event in events:
                    self._on_event(event)
                if self._stop.is_set():
                    return

    def _on_event(self, event: dict[str, Any]) -> None:
        pod = event["object"]
        if event["type"] == "ERROR":  # e.g. 410 Gone: the version is too old; list again
            raise RuntimeError(f"watch error: {pod.get('message', pod)}")
        if event["type"] == "BOOKMARK":
            return
        uid = pod["metadata"]["uid"]
        if event["type"] == "DELETED":
            self._forget(uid)
            return
        with self._lock:
            self._seen[uid] = pod
        self.put(uid)

    def _forget(self, uid: str) -> None:
        with self._lock:
            self._seen.pop(uid, None)
        self._on_gone(uid)
