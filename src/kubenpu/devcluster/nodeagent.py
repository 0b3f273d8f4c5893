"""The node agent: a kubelet stand-in for one simulated node of a dev cluster.

It does the parts of a kubelet's job that scheduling NPUs depends on, and nothing else
(no containers run):

- registers its Node with the labels and capacity of the simulated machine, keeps it
  Ready by renewing its Lease in ``kube-node-lease`` and posting status heartbeats;
- serves the kubelet side of the device plugin API (:class:`KubeletPeer`) in the node's
  device-plugins directory, and publishes what the plugins report as the Node's extended
  resources: capacity = every device, allocatable = the healthy ones;
- admits the pods bound to the node: for each container that asks for a device-plugin
  resource it chooses free healthy devices (asking the plugin's GetPreferredAllocation
  when offered), calls the plugin's Allocate, records the answer in its checkpoint file,
  and then reports the pod Running with container statuses. A pod that cannot get its
  devices fails with reason ``UnexpectedAdmissionError``, as on a kubelet;
- finishes pod deletions (the grace period of a container that does not exist is over at
  once) and frees the devices of deleted and finished pods.

Simulated containers never exit, so pods stay Running (also with ``restartPolicy:
Never``) and keep their devices until they are deleted.

The checkpoint (``<device-plugins dir>/kubelet_internal_checkpoint``, the file a kubelet
keeps there across restarts) holds every admitted pod's devices and Allocate answers and
the latest device lists. A restarted agent reads it back, so pods keep their devices, and
wipes the rest of the directory as a kubelet does, which makes the plugins register again.

The agent authenticates as ``system:node:<name>`` in group ``system:nodes``, so the API
server's Node authorizer and NodeRestriction admission hold it to what a kubelet may do.

Run as ``python -m kubenpu.devcluster.nodeagent CONFIG.json``; ``kubenpu dev-cluster up``
starts one per node.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from kubenpu.adapters.npurequest import read_pod_npu
from kubenpu.deviceplugin.api import KUBELET_CHECKPOINT, pb
from kubenpu.deviceplugin.kubelet import KubeletPeer, PeerDevice
from kubenpu.kubeclient import raw, watch_chunks

log = logging.getLogger("kubenpu.devcluster.nodeagent")

_NODE_LEASE_NAMESPACE = "kube-node-lease"
_SMP = "application/strategic-merge-patch+json"
# The address every simulated node and pod reports: nothing is ever sent to it.
_LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """What one node agent needs to know; written as JSON by ``dev-cluster up``."""

    node: str
    kubeconfig: str
    #: The node's device-plugins directory (kubelet.sock, plugin sockets, checkpoint).
    device_plugin_dir: str
    labels: dict[str, str]
    #: Non-device capacity, e.g. {"cpu": "104", "memory": "384Gi", "pods": "110"}.
    capacity: dict[str, str]
    kubelet_version: str
    lease_duration_s: int = 40
    lease_renew_s: float = 10.0
    #: Status heartbeat period when nothing changed (a kubelet's nodeStatusReportFrequency).
    status_report_s: float = 60.0
    #: How long a pod that needs a device-plugin resource waits for the plugin to register
    #: (after an agent restart) before it is failed.
    plugin_wait_s: float = 30.0

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AgentConfig:
        """Read a config file written by :meth:`save`."""
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: Path) -> None:
        """Write this config as JSON."""
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


@dataclass(slots=True)
class PodRecord:
    """The devices one admitted pod holds, per container and resource."""

    namespace: str
    name: str
    #: container name -> resource -> {"devices": [...], "response": {...}}.
    containers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def device_ids(self, resource: str) -> set[str]:
        """Every device of ``resource`` this pod holds."""
        return {
            d for per in self.containers.values() for d in per.get(resource, {}).get("devices", [])
        }


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint as stored: ``{"node", "pods": {uid: {...}}, "devices": {...}}``."""
    try:
        checkpoint: dict[str, Any] = json.loads(Path(path).read_text())
        return checkpoint
    except FileNotFoundError:
        return {"pods": {}, "devices": {}}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _response_json(response: pb.ContainerAllocateResponse) -> dict[str, Any]:
    """What the container runtime would get, as plain JSON."""
    return {
        "envs": dict(response.envs),
        "mounts": [
            {"container_path": m.container_path, "host_path": m.host_path, "read_only": m.read_only}
            for m in response.mounts
        ],
        "devices": [
            {
                "container_path": d.container_path,
                "host_path": d.host_path,
                "permissions": d.permissions,
            }
            for d in response.devices
        ],
        "annotations": dict(response.annotations),
        "cdi_devices": [c.name for c in response.cdi_devices],
    }


def container_requests(pod: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """container name -> NPU resource -> count, for the app containers, as the one reader
    of a pod's NPU request reads them. Init containers are not given devices by this agent.
    """
    return {c.name: c.amounts for c in read_pod_npu(pod).containers if not c.init and c.amounts}


class AdmissionError(Exception):
    """A pod cannot get its devices; the message says what was asked and what was free."""


class NodeAgent:
    """One simulated node: Node object, Lease, device plugins, pod admission."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.dir = Path(config.device_plugin_dir)
        self.checkpoint_path = self.dir / KUBELET_CHECKPOINT
        api_client = k8s_config.new_client_from_config(config_file=config.kubeconfig)
        self.core = k8s.CoreV1Api(api_client)
        self.coordination = k8s.CoordinationV1Api(api_client)
        self.stop_event = threading.Event()
        self._lock = threading.RLock()
        self._pods: dict[str, PodRecord] = {}
        self._devices: dict[str, tuple[PeerDevice, ...]] = {}
        self._status_dirty = threading.Event()
        self._work: queue.Queue[str] = queue.Queue()
        # Latest object of every pod bound here, and pods waiting for a device plugin.
        self._seen: dict[str, dict[str, Any]] = {}
        self._waiting: dict[str, float] = {}
        self._load_checkpoint()
        self.peer = KubeletPeer(self.dir, on_devices=self._on_devices)

    # -- checkpoint ------------------------------------------------------------------

    def _load_checkpoint(self) -> None:
        data = read_checkpoint(self.checkpoint_path)
        for uid, entry in data.get("pods", {}).items():
            self._pods[uid] = PodRecord(entry["namespace"], entry["name"], entry["containers"])
        # Until its plugin registers again, a resource keeps its devices, all unhealthy:
        # capacity stays, allocatable is zero (what a kubelet reports after a restart).
        for resource, devices in data.get("devices", {}).items():
            self._devices[resource] = tuple(
                PeerDevice(d["id"], "Unhealthy", tuple(d.get("numa_nodes", ()))) for d in devices
            )
        if self._pods:
            log.info("restored %d pod(s) from %s", len(self._pods), self.checkpoint_path)

    def _save_checkpoint(self) -> None:
        # Under the lock as a whole: the pod worker and the ListAndWatch threads both save,
        # and must not interleave on the temporary file.
        with self._lock:
            data = {
                "node": self.config.node,
                "pods": {uid: asdict(record) for uid, record in sorted(self._pods.items())},
                "devices": {
                    resource: [
                        {"id": d.id, "health": d.health, "numa_nodes": list(d.numa_nodes)}
                        for d in devices
                    ]
                    for resource, devices in sorted(self._devices.items())
                },
            }
            tmp = self.checkpoint_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2) + "\n")
            os.replace(tmp, self.checkpoint_path)

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> None:
        """Run until :attr:`stop_event` is set (SIGTERM/SIGINT in :func:`main`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        # A starting kubelet removes everything in its device-plugins dir but its
        # checkpoint; plugins see their sockets vanish and register again.
        for entry in self.dir.iterdir():
            if entry.name != KUBELET_CHECKPOINT and not entry.is_dir():
                entry.unlink(missing_ok=True)
        self._register_node()
        self.peer.start()
        threads = [
            threading.Thread(target=self._lease_loop, name="lease", daemon=True),
            threading.Thread(target=self._status_loop, name="status", daemon=True),
            threading.Thread(target=self._watch_loop, name="watch", daemon=True),
            threading.Thread(target=self._work_loop, name="pods", daemon=True),
        ]
        for thread in threads:
            thread.start()
        log.info("node agent for %s running", self.config.node)
        self.stop_event.wait()
        self.peer.stop()
        log.info("node agent for %s stopped", self.config.node)

    def _retry(self, what: str, action: Any) -> Any:
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

    # -- Node, Lease, status ---------------------------------------------------------

    def _register_node(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.config.node, "labels": self.config.labels},
        }

        def register() -> None:
            try:
                # A manifest dict where the client annotates V1Node: validate_call builds it.
                self.core.create_node(body)  # type: ignore[arg-type]
                log.info("registered node %s", self.config.node)
            except ApiException as err:
                if err.status != 409:
                    raise
                self.core.patch_node(
                    self.config.node,
                    {"metadata": {"labels": self.config.labels}},
                    _content_type=_SMP,
                )
                log.info("node %s was registered before; labels refreshed", self.config.node)

        self._retry("node registration", register)
        self._retry("node status", self._post_status)

    def _extended(self) -> tuple[dict[str, str], dict[str, str]]:
        """(capacity, allocatable) of the device-plugin resources."""
        with self._lock:
            capacity = {r: str(len(devs)) for r, devs in self._devices.items()}
            allocatable = {
                r: str(sum(d.healthy for d in devs)) for r, devs in self._devices.items()
            }
        return capacity, allocatable

    def _post_status(self) -> None:
        now = _now()
        capacity, allocatable = self._extended()
        ready_message = "kubenpu node agent is posting ready status"
        conditions = [
            {"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": m}
            for t, r, m in (
                ("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory available"),
                ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"),
            )
        ]
        conditions.append(
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": ready_message}
        )
        for condition in conditions:
            condition["lastHeartbeatTime"] = now
            condition["lastTransitionTime"] = now
        machine = hashlib.sha256(self.config.node.encode()).hexdigest()[:32]
        status = {
            "capacity": {**self.config.capacity, **capacity},
            "allocatable": {**self.config.capacity, **allocatable},
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": _LOOPBACK},
                {"type": "Hostname", "address": self.config.node},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": machine,
                "systemUUID": machine,
                "bootID": machine,
                "kernelVersion": os.uname().release,
                "osImage": "kubenpu dev-cluster simulated node",
                "containerRuntimeVersion": "kubenpu-sim://0",
                "kubeletVersion": self.config.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        # lastTransitionTime must only move when a condition changes; keep the existing
        # ones (strategic merge replaces each condition by type).
        node = raw(self.core.read_node(self.config.node, _preload_content=False))
        existing = {
            c["type"]: c for c in json.loads(node.data).get("status", {}).get("conditions", [])
        }
        for condition in conditions:
            old = existing.get(condition["type"])
            if old is not None and old.get("status") == condition["status"]:
                condition["lastTransitionTime"] = old.get("lastTransitionTime", now)
        self.core.patch_node_status(self.config.node, {"status": status}, _content_type=_SMP)
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
            self._retry("lease renewal", self._renew_lease)
            self.stop_event.wait(self.config.lease_renew_s)

    def _renew_lease(self) -> None:
        name = self.config.node
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": self.config.lease_duration_s,
            "renewTime": _now_micro(),
        }
        try:
            self.coordination.patch_namespaced_lease(
                name, _NODE_LEASE_NAMESPACE, {"spec": spec}, _content_type=_SMP
            )
        except ApiException as err:
            if err.status != 404:
                raise
            # A manifest dict where the client annotates V1Lease: validate_call builds it.
            self.coordination.create_namespaced_lease(
                _NODE_LEASE_NAMESPACE,
                {  # type: ignore[arg-type]
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": name, "namespace": _NODE_LEASE_NAMESPACE},
                    "spec": spec,
                },
            )

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
            self._work.put(uid)

    # -- pods ------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        selector = f"spec.nodeName={self.config.node}"
        while not self.stop_event.is_set():
            listing = self._retry(
                "pod list",
                lambda: json.loads(
                    raw(
                        self.core.list_pod_for_all_namespaces(
                            field_selector=selector, _preload_content=False
                        )
                    ).data
                ),
            )
            if listing is None:
                return
            current = {p["metadata"]["uid"]: p for p in listing.get("items", [])}
            with self._lock:
                gone = [uid for uid in set(self._seen) | set(self._pods) if uid not in current]
                self._seen.update(current)
            for uid in gone:
                self._forget(uid)
            for uid in current:
                self._work.put(uid)
            version = listing["metadata"]["resourceVersion"]
            try:
                self._watch(selector, version)
            except Exception as err:  # expired watch, API server restart: list again
                log.info("pod watch ended (%s); listing again", err)
                self.stop_event.wait(0.5)

    def _watch(self, selector: str, version: str) -> None:
        """Follow pod events from ``version`` until the server ends the watch."""
        response = raw(
            self.core.list_pod_for_all_namespaces(
                field_selector=selector,
                resource_version=version,
                watch=True,
                timeout_seconds=300,
                _preload_content=False,
            )
        )
        with contextlib.closing(watch_chunks(response)) as chunks:
            for events in chunks:
                for event in events:
                    self._on_event(event)
                if self.stop_event.is_set():
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
        self._work.put(uid)

    def _forget(self, uid: str) -> None:
        """The pod is gone from the API: free its devices."""
        with self._lock:
            self._seen.pop(uid, None)
            self._waiting.pop(uid, None)
            record = self._pods.pop(uid, None)
        if record is not None:
            log.info("pod %s/%s gone; freed its devices", record.namespace, record.name)
            self._save_checkpoint()

    def _work_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                uid = self._work.get(timeout=1.0)
            except queue.Empty:
                # Retry pods waiting for a plugin, and fail those that waited too long.
                with self._lock:
                    waiting = list(self._waiting)
                for uid in waiting:
                    self._work.put(uid)
                continue
            with self._lock:
                pod = self._seen.get(uid)
            if pod is None:
                continue
            try:
                self._sync_pod(uid, pod)
            except Exception:
                log.exception("syncing pod %s failed; will retry", uid)
                self.stop_event.wait(1.0)
                self._work.put(uid)

    def _sync_pod(self, uid: str, pod: dict[str, Any]) -> None:
        meta, status = pod["metadata"], pod.get("status", {})
        namespace, name = meta["namespace"], meta["name"]
        phase = status.get("phase", "Pending")
        if meta.get("deletionTimestamp"):
            self._release(uid)
            self._finish_deletion(namespace, name, uid)
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

    def _finish_deletion(self, namespace: str, name: str, uid: str) -> None:
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            # A dict where the client annotates V1DeleteOptions: validate_call builds it.
            self.core.delete_namespaced_pod(name, namespace, body=body)  # type: ignore[arg-type]
            log.info("pod %s/%s deleted", namespace, name)
        except ApiException as err:
            if err.status not in (404, 409):
                raise

    def _admit(self, uid: str, pod: dict[str, Any]) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        wanted = container_requests(pod)
        resources = {r for per in wanted.values() for r in per}
        registered = set(self.peer.resources())
        missing = sorted(resources - registered)
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
        try:
            record = self._allocate(namespace, name, wanted)
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

    def _allocate(
        self, namespace: str, name: str, wanted: Mapping[str, Mapping[str, int]]
    ) -> PodRecord:
        """Choose free healthy devices for each container and call the plugin's Allocate."""
        record = PodRecord(namespace, name)
        with self._lock:
            held = {
                r: set().union(*(p.device_ids(r) for p in self._pods.values()))
                for r in self._devices
            }
            free = {
                r: sorted(d.id for d in devs if d.healthy and d.id not in held.get(r, set()))
                for r, devs in self._devices.items()
            }
        totals: dict[str, int] = {}
        for per in wanted.values():
            for resource, count in per.items():
                totals[resource] = totals.get(resource, 0) + count
        for resource, count in totals.items():
            available = len(free.get(resource, []))
            if count > available:
                raise AdmissionError(
                    f"Allocate failed due to requested number of devices unavailable for "
                    f"{resource}. Requested: {count}, Available: {available}, which is unexpected"
                )
        options = {r.resource_name: r for r in self.peer.registrations}
        for container, per in wanted.items():
            for resource, count in per.items():
                ids = free[resource][:count]
                registration = options.get(resource)
                try:
                    if registration is not None and registration.get_preferred_allocation_available:
                        preferred = self.peer.get_preferred_allocation(
                            resource, free[resource], count
                        )
                        # Advice only: take it if it is a valid choice.
                        if len(set(preferred)) == count and set(preferred) <= set(free[resource]):
                            ids = preferred
                    response = self.peer.allocate(resource, [ids])
                except (grpc.RpcError, LookupError) as err:
                    # As on a kubelet, a plugin that refuses (or is gone) fails the pod.
                    detail = err.details() if isinstance(err, grpc.RpcError) else str(err)
                    raise AdmissionError(
                        f"Allocate of {resource} {ids} for container {container} failed: {detail}"
                    ) from err
                record.containers.setdefault(container, {})[resource] = {
                    "devices": list(ids),
                    "response": _response_json(response.container_responses[0]),
                }
                free[resource] = [d for d in free[resource] if d not in ids]
        return record

    def _report_running(self, pod: dict[str, Any]) -> None:
        now = _now()
        meta = pod["metadata"]
        statuses = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "containerID": "kubenpu-sim://"
                + hashlib.sha256(f"{meta['uid']}/{c['name']}".encode()).hexdigest()[:32],
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in pod["spec"]["containers"]
        ]
        conditions = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")
        ]
        status = {
            "phase": "Running",
            "hostIP": _LOOPBACK,
            "hostIPs": [{"ip": _LOOPBACK}],
            "podIP": _LOOPBACK,
            "podIPs": [{"ip": _LOOPBACK}],
            "startTime": pod.get("status", {}).get("startTime", now),
            "conditions": conditions,
            "containerStatuses": statuses,
        }
        self._patch_pod_status(meta["namespace"], meta["name"], status)

    def _report_failed(self, pod: dict[str, Any], message: str) -> None:
        meta = pod["metadata"]
        status = {
            "phase": "Failed",
            "reason": "UnexpectedAdmissionError",
            "message": f"Pod was rejected: {message}",
            "startTime": pod.get("status", {}).get("startTime", _now()),
        }
        self._patch_pod_status(meta["namespace"], meta["name"], status)

    def _patch_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            self.core.patch_namespaced_pod_status(
                name, namespace, {"status": status}, _content_type=_SMP
            )
        except ApiException as err:
            if err.status != 404:  # deleted meanwhile: nothing to report
                raise


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m kubenpu.devcluster.nodeagent CONFIG.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m kubenpu.devcluster.nodeagent CONFIG.json", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(threadName)s %(message)s",
    )
    # The Kubernetes client logs every retry of its HTTP pool at WARNING; ours say enough.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    agent = NodeAgent(AgentConfig.load(args[0]))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop_event.set())
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
