"""The node agent itself: its state, its threads, and what it does with each pod.

Threads: the Lease (renewed every ``lease_renew_s``), the Node status (posted when the
devices change, and every ``status_report_s``), the pod feed (list and watch, see
:mod:`~kubenpu.devcluster.nodeagent.podfeed`), the pod worker (admits, reports, frees),
and the kubelet peer's ListAndWatch consumers, which report the plugins' devices.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from kubenpu.devcluster.kubelet import KubeletPeer, PeerDevice
from kubenpu.devcluster.nodeagent import status
from kubenpu.devcluster.nodeagent.admission import (
    AdmissionError,
    PodRecord,
    container_requests,
    free_devices,
    missing_plugins,
)
from kubenpu.devcluster.nodeagent.allocation import allocate_pod
from kubenpu.devcluster.nodeagent.checkpoint import (
    checkpoint_document,
    read_checkpoint,
    restore,
    write_checkpoint,
)
from kubenpu.devcluster.nodeagent.config import AgentConfig
from kubenpu.devcluster.nodeagent.kubeapi import NodeApi
from kubenpu.devcluster.nodeagent.podfeed import PodFeed
from kubenpu.deviceplugin.protocol import KUBELET_CHECKPOINT

log = logging.getLogger("kubenpu.devcluster.nodeagent")

_T = TypeVar("_T")


class NodeAgent:
    """One simulated node: Node object, Lease, device plugins, pod admission."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.dir = Path(config.device_plugin_dir)
        self.checkpoint_path = self.dir / KUBELET_CHECKPOINT
        self.api = NodeApi(config.node, config.kubeconfig)
        self.stop_event = threading.Event()
        self._lock = threading.RLock()
        self._status_dirty = threading.Event()
        # Pods waiting for a device plugin to register, since when (monotonic).
        self._waiting: dict[str, float] = {}
        self._pods: dict[str, PodRecord]
        self._devices: dict[str, tuple[PeerDevice, ...]]
        self._pods, self._devices = restore(read_checkpoint(self.checkpoint_path))
        if self._pods:
            log.info("restored %d pod(s) from %s", len(self._pods), self.checkpoint_path)
        self.feed = PodFeed(
            self.api, self.stop_event, self._retry, on_gone=self._forget, known=self._admitted
        )
        self.peer = KubeletPeer(self.dir, on_devices=self._on_devices)

    def _save_checkpoint(self) -> None:
        # Under the lock as a whole: the pod worker and the ListAndWatch threads both save,
        # and must not interleave on the temporary file.
        with self._lock:
            document = checkpoint_document(self.config.node, self._pods, self._devices)
            write_checkpoint(self.checkpoint_path, document)

    def _admitted(self) -> list[str]:
        with self._lock:
            return list(self._pods)

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> None:
        """Run until :attr:`stop_event` is set (SIGTERM/SIGINT in ``main``)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        # A starting kubelet removes everything in its device-plugins dir but its
        # checkpoint; plugins see their sockets vanish and register again.
        for entry in self.dir.iterdir():
            if entry.name != KUBELET_CHECKPOINT and not entry.is_dir():
                entry.unlink(missing_ok=True)
        self._retry("node registration", lambda: self.api.register_node(self.config.labels))
        self._retry("node status", self._post_status)
        self.peer.start()
        threads = [
            threading.Thread(target=self._lease_loop, name="lease", daemon=True),
            threading.Thread(target=self._status_loop, name="status", daemon=True),
            threading.Thread(target=self.feed.run, name="watch", daemon=True),
            threading.Thread(target=self._work_loop, name="pods", daemon=True),
        ]
        for thread in threads:
            thread.start()
        log.info("node agent for %s running", self.config.node)
        self.stop_event.wait()
        self.peer.stop()
        log.info("node agent for %s stopped", self.config.node)

    def _retry(self, what: str, action: Callable[[], _T]) -> _T | None:
        """Call ``action()`` until it succeeds or the agent stops (API server not up yet)."""
        delay = 0.2
        while not self.stop_event.is_set():
            try:
                return action()
            except Exception as err:  # API errors, or urllib3's while the API server starts
                log.info("%s failed, retrying: %s", what, getattr(err, "reason", None) or err)
            self.stop_event.wait(delay)
            delay = min(delay * 2, 2.0)
        return None

    # -- Node status and Lease ---------------------------------------------------------

    def _post_status(self) -> None:
        with self._lock:
            capacity, allocatable = status.extended_resources(self._devices)
        body = status.node_status(
            self.config, capacity, allocatable, self.api.node_conditions(), status.timestamp()
        )
        self.api.patch_node_status(body)
        log.info("node status posted: capacity %s, allocatable %s", capacity, allocatable)

    def _status_loop(self) -> None:
        while not self.stop_event.is_set():
            self._status_dirty.wait(self.config.status_report_s)
            if self.stop_event.is_set():
                return
            self._status_dirty.clear()
            self._retry("node status", self._post_status)

    def _lease_loop(self) -> None:
        while not self.stop_event.is_set():
            self._retry(
                "lease renewal",
                lambda: self.api.renew_lease(
                    status.lease_spec(self.config, status.micro_timestamp())
                ),
            )
            self.stop_event.wait(self.config.lease_renew_s)

    # -- devices ---------------------------------------------------------------------

    def _on_devices(self, resource: str, devices: Sequence[PeerDevice]) -> None:
        with self._lock:
            changed = self._devices.get(resource) != tuple(devices)
            self._devices[resource] = tuple(devices)
        if changed:
            healthy = sum(d.healthy for d in devices)
            log.info("%s: %d device(s), %d healthy", resource, len(devices), healthy)
            self._save_checkpoint()
            self._status_dirty.set()
        # Pods that were waiting for this plugin can be admitted now.
        with self._lock:
            waiting = list(self._waiting)
        for uid in waiting:
            self.feed.put(uid)

    # -- pods ------------------------------------------------------------------------

    def _forget(self, uid: str) -> None:
        """The pod is gone from the API: free its devices."""
        with self._lock:
            self._waiting.pop(uid, None)
            record = self._pods.pop(uid, None)
        if record is not None:
            log.info("pod %s/%s gone; freed its devices", record.namespace, record.name)
            self._save_checkpoint()

    def _work_loop(self) -> None:
        while not self.stop_event.is_set():
            uid = self.feed.get(timeout=1.0)
            if uid is None:
                # Retry pods waiting for a plugin, and fail those that waited too long.
                with self._lock:
                    waiting = list(self._waiting)
                for waiter in waiting:
                    self.feed.put(waiter)
                continue
            pod = self.feed.latest(uid)
            if pod is None:
                continue
            try:
                self._sync_pod(uid, pod)
            except Exception:
                log.exception("syncing pod %s failed; will retry", uid)
                self.stop_event.wait(1.0)
                self.feed.put(uid)

    def _sync_pod(self, uid: str, pod: dict[str, Any]) -> None:
        meta, pod_status = pod["metadata"], pod.get("status", {})
        namespace, name = meta["namespace"], meta["name"]
        phase = pod_status.get("phase", "Pending")
        if meta.get("deletionTimestamp"):
            self._release(uid)
            self.api.finish_deletion(namespace, name, uid)
        elif phase in ("Succeeded", "Failed"):
            self._release(uid)
        elif uid in self._pods:
            if phase != "Running":
                self._report_running(pod)
        else:
            self._admit(uid, pod)

    def _release(self, uid: str) -> None:
        with self._lock:
            record = self._pods.pop(uid, None)
            self._waiting.pop(uid, None)
        if record is not None:
            log.info("freed the devices of %s/%s", record.namespace, record.name)
            self._save_checkpoint()

    def _admit(self, uid: str, pod: dict[str, Any]) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        wanted = container_requests(pod)
        missing = missing_plugins(wanted, self.peer.resources())
        if missing:
            with self._lock:
                first = self._waiting.setdefault(uid, time.monotonic())
            if time.monotonic() - first < self.config.plugin_wait_s:
                return  # retried when a plugin registers, or every second
            with self._lock:
                self._waiting.pop(uid, None)
            self._report_failed(
                pod, f"no device plugin registered for {', '.join(missing)} on this node"
            )
            return
        with self._lock:
            self._waiting.pop(uid, None)
            free = free_devices(self._devices, self._pods.values())
        try:
            record = allocate_pod(self.peer, namespace, name, wanted, free)
        except AdmissionError as err:
            log.warning("pod %s/%s not admitted: %s", namespace, name, err)
            self._report_failed(pod, str(err))
            return
        with self._lock:
            self._pods[uid] = record
        # Record before reporting Running: after a crash in between, the pod still holds
        # its devices and the next sync only reports it Running.
        self._save_checkpoint()
        log.info(
            "pod %s/%s admitted: %s",
            namespace,
            name,
            {c: {r: v["devices"] for r, v in per.items()} for c, per in record.containers.items()},
        )
        self._report_running(pod)

    def _report_running(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        body = status.running_status(pod, status.timestamp())
        self.api.patch_pod_status(meta["namespace"], meta["name"], body)

    def _report_failed(self, pod: dict[str, Any], message: str) -> None:
        meta = pod["metadata"]
        body = status.failed_status(pod, message, status.timestamp())
        self.api.patch_pod_status(meta["namespace"], meta["name"], body)
