"""An in-memory API server for the extender's tests: pods with resourceVersions, merge
patches with the resourceVersion precondition, label selection, bindings, and the
ResourceClaims bind reads on DRA nodes."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from typing import Any

from kubenpu.errors import ApiError, Conflict
from kubenpu.names import ANNOTATION_DEVICE_INVENTORY, LABEL_NPU_MODEL, RESOURCE_NPU


def inventory(n: int, *, groups: int = 2, sick: tuple[int, ...] = ()) -> str:
    import json

    per = -(-n // groups)
    return json.dumps(
        [
            {
                "id": f"npu-{i}",
                "index": i,
                "model": "hanguang-800",
                "memory_mib": 16384,
                "group": i // per,
                "healthy": i not in sick,
            }
            for i in range(n)
        ]
    )


def node(name: str, npus: int = 4, *, model: str = "hanguang-800", sick=(), groups=2) -> dict:
    meta: dict[str, Any] = {"name": name, "labels": {LABEL_NPU_MODEL: model} if npus else {}}
    if npus:
        meta["annotations"] = {
            ANNOTATION_DEVICE_INVENTORY: inventory(npus, groups=groups, sick=sick)
        }
    alloc = {"cpu": "104", "memory": "384Gi", "pods": "110"}
    if npus:
        alloc[RESOURCE_NPU] = str(npus)
        alloc["aliyun.com/npu-core"] = str(100 * npus)
    return {"kind": "Node", "metadata": meta, "status": {"capacity": alloc, "allocatable": alloc}}


def pod(
    name: str,
    *,
    npus: int = 0,
    core: int = 0,
    mem: int = 0,
    uid: str = "",
    ns: str = "default",
    node_selector: dict | None = None,
    node_name: str = "",
    annotations: dict | None = None,
) -> dict:
    limits: dict[str, str] = {"cpu": "1", "memory": "1Gi"}
    if npus:
        limits[RESOURCE_NPU] = str(npus)
    if core:
        limits["aliyun.com/npu-core"] = str(core)
    if mem:
        limits["aliyun.com/npu-mem"] = str(mem)
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "x", "resources": {"limits": limits}}]
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid or f"uid-{name}",
            "annotations": dict(annotations or {}),
            "labels": {},
        },
        "spec": spec,
        "status": {"phase": "Pending"},
    }


def _merge(target: dict, patch: dict) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeApi:
    """Pods and nodes in memory; thread-safe; ``fail`` makes the next named call fail."""

    def __init__(self, nodes: list[dict] | None = None, pods: list[dict] | None = None) -> None:
        self.lock = threading.Lock()
        self.version = 0
        self.nodes = {n["metadata"]["name"]: copy.deepcopy(n) for n in nodes or []}
        self.pods: dict[tuple[str, str], dict] = {}
        #: ResourceClaims by (namespace, name), read by bind on DRA nodes.
        self.claims: dict[tuple[str, str], dict] = {}
        #: ResourceSlices, listed by the extender's informer.
        self.slices: list[dict] = []
        #: PodGroups by (namespace, name), read by gang members' filter.
        self.pod_groups: dict[tuple[str, str], dict] = {}
        self.calls: list[str] = []
        self.fail: dict[str, ApiError] = {}
        #: Called between the patch and the list of a bind (to interleave two binders).
        self.after_patch = lambda: None
        for p in pods or []:
            self.add_pod(p)

    def _bump(self, obj: dict) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def add_pod(self, obj: dict) -> dict:
        with self.lock:
            obj = copy.deepcopy(obj)
            self._bump(obj)
            self.pods[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
            return copy.deepcopy(obj)

    def _maybe_fail(self, call: str) -> None:
        self.calls.append(call)
        err = self.fail.pop(call, None)
        if err is not None:
            raise err

    def _pod(self, namespace: str, name: str) -> dict:
        found = self.pods.get((namespace, name))
        if found is None:
            raise ApiError(f"pods {name!r} not found", 404)
        return found

    # -- KubeApi ---------------------------------------------------------------------

    def get_pod(self, namespace: str, name: str) -> dict:
        with self.lock:
            self._maybe_fail("get")
            return copy.deepcopy(self._pod(namespace, name))

    def patch_pod(self, namespace: str, name: str, body: dict) -> dict:
        with self.lock:
            self._maybe_fail("patch")
            current = self._pod(namespace, name)
            want = body.get("metadata", {}).get("resourceVersion")
            if want and want != current["metadata"]["resourceVersion"]:
                raise Conflict("the object has been modified", 409)
            body = copy.deepcopy(body)
            body.get("metadata", {}).pop("resourceVersion", None)
            _merge(current, body)
            self._bump(current)
            result = copy.deepcopy(current)
        self.after_patch()
        return result

    def list_pods(self, label_selector: str) -> list[dict]:
        key, _, value = label_selector.partition("=")
        with self.lock:
            self._maybe_fail("list")
            return [
                copy.deepcopy(p)
                for p in self.pods.values()
                if p["metadata"].get("labels", {}).get(key) == value
            ]

    def bind_pod(self, namespace: str, name: str, uid: str, node: str) -> None:
        with self.lock:
            self._maybe_fail("bind")
            current = self._pod(namespace, name)
            if current["metadata"]["uid"] != uid:
                raise Conflict("uid precondition failed", 409)
            if current["spec"].get("nodeName"):
                raise Conflict(f"pod {name} is already assigned to a node", 409)
            current["spec"]["nodeName"] = node
            self._bump(current)

    def get_resource_claim(self, namespace: str, name: str) -> dict:
        with self.lock:
            self._maybe_fail("claim")
            found = self.claims.get((namespace, name))
            if found is None:
                raise ApiError(f'resourceclaims.resource.k8s.io "{name}" not found', 404)
            return copy.deepcopy(found)

    def get_pod_group(self, namespace: str, name: str) -> dict:
        with self.lock:
            self._maybe_fail("podgroup")
            found = self.pod_groups.get((namespace, name))
            if found is None:
                raise ApiError(f'podgroups.scheduling.k8s.io "{name}" not found', 404)
            return copy.deepcopy(found)

    # -- informers -------------------------------------------------------------------

    def list(self, kind: str) -> tuple[list[dict], str]:
        with self.lock:
            items = {
                "nodes": self.nodes.values(),
                "pods": self.pods.values(),
                "resourceslices": self.slices,
                "resourceclaims": self.claims.values(),
            }[kind]
            return [copy.deepcopy(o) for o in items], str(self.version)

    def watch(self, kind: str, version: str) -> Iterator[dict]:
        return iter(())


def resource_claim(
    namespace: str,
    name: str,
    devices: list[str],
    *,
    pool: str = "",
    driver: str = "npu.aliyun.com",
    pod_name: str = "",
    allocated: bool = True,
) -> dict:
    """A ResourceClaim (resource.k8s.io/v1) as kube-scheduler leaves it: ``devices`` of
    ``driver`` from ``pool`` allocated to request ``npu``, reserved for ``pod_name``."""
    status: dict[str, Any] = {}
    if allocated:
        status["allocation"] = {
            "devices": {
                "results": [
                    {"request": "npu", "driver": driver, "pool": pool, "device": d} for d in devices
                ]
            }
        }
    if pod_name:
        status["reservedFor"] = [{"resource": "pods", "name": pod_name, "uid": f"uid-{pod_name}"}]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {"devices": {"requests": [{"name": "npu"}]}},
        "status": status,
    }


def with_extended_claim(api: FakeApi, obj: dict, node: str, devices: list[str], **kw: Any) -> dict:
    """What kube-scheduler's DRA plugin does in PreBind for a plain ``aliyun.com/npu`` pod
    on a DRA node: it creates the special claim, allocated, and names it in the pod's
    ``status.extendedResourceClaimStatus``. Returns the pod as the API then has it."""
    meta = obj["metadata"]
    claim = f"{meta['name']}-extended-resources-x7k2p"
    api.claims[(meta["namespace"], claim)] = resource_claim(
        meta["namespace"], claim, devices, pool=node, pod_name=meta["name"], **kw
    )
    obj = copy.deepcopy(obj)
    obj["status"]["extendedResourceClaimStatus"] = {
        "requestMappings": [
            {"containerName": "main", "resourceName": RESOURCE_NPU, "requestName": "container-0"}
        ],
        "resourceClaimName": claim,
    }
    return api.add_pod(obj)
