"""Kubernetes Node and Pod objects (as plain dicts, the API's JSON shape) to model objects.

The only place that knows how NPU resources and model constraints are spelled on
Kubernetes objects; the simulator's YAML reader, the extender and the tools all use it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubenpu.adapters.npurequest import read_pod_npu
from kubenpu.adapters.quantity import cpu_milli, mebibytes, parse_quantity
from kubenpu.errors import InputError, ObjectError
from kubenpu.model import Device, Node, Placement, Request
from kubenpu.names import (
    ANNOTATION_ASSUMED_AT,
    ANNOTATION_DEVICE_INVENTORY,
    ANNOTATION_DEVICES,
    ANNOTATION_NODE,
    ANNOTATION_POLICY,
    ANNOTATION_SHARES,
    LABEL_NPU_MODEL,
    LABEL_PLACED_NODE,
    MAX_DEVICES_PER_NODE,
    MILLI_PER_CORE_UNIT,
    MILLI_PER_DEVICE,
    RESOURCE_NPU,
    RESOURCE_NPU_MEM,
)

#: Largest CPU (milli) or memory (MiB) amount taken: the engine keeps them in int64 arrays.
_MAX_AMOUNT = 2**53


def _whole(value: object, what: str) -> int:
    try:
        q = parse_quantity(value)
    except ValueError as exc:
        raise ObjectError(f"{what}: {exc}") from None
    if q < 0 or q != q.to_integral_value():
        raise ObjectError(f"{what}: {value!r} must be a whole, non-negative number")
    return int(q)


def _quantity(conv: Callable[[object], int], value: object, what: str) -> int:
    try:
        out = conv(value)
    except ValueError as exc:
        raise ObjectError(f"{what}: {exc}") from None
    if out < 0:
        raise ObjectError(f"{what}: {value!r} is negative")
    if out > _MAX_AMOUNT:
        raise ObjectError(f"{what}: {value!r} is too large")
    return out


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    """``value`` as a mapping (absent = empty); anything else is an ``ObjectError``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ObjectError(f"{what} must be a mapping, not {type(value).__name__}")
    return value


def _sequence(value: object, what: str) -> list[Any]:
    """``value`` as a list (absent = empty); anything else is an ``ObjectError``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ObjectError(f"{what} must be a list, not {type(value).__name__}")
    return value


def _name(meta: Mapping[str, Any], kind: str) -> str:
    name = meta.get("name")
    if not name:
        raise ObjectError(f"{kind} without metadata.name")
    if not isinstance(name, str):
        raise ObjectError(f"{kind} metadata.name must be a string, not {name!r}")
    return name


#: Longest device id a device plugin may advertise (the kubelet's limit).
_MAX_DEVICE_ID = 63


def device_inventory_annotation(devices: Iterable[Device]) -> str:
    """The value of a Node's ``kubenpu.io/device-inventory`` annotation for ``devices``.

    Compact JSON, one object per device in index order, so that an unchanged inventory
    gives the same text (the device plugin skips patches that would change nothing).
    """
    entries = [
        {
            "id": d.id,
            "index": d.index,
            "model": d.model,
            "memory_mib": d.memory_mib,
            "group": d.group,
            "healthy": d.healthy,
        }
        for d in sorted(devices, key=lambda d: d.index)
    ]
    return json.dumps(entries, separators=(",", ":"))


def _small_int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
        raise ObjectError(f"{what} must be an integer >= 0")
    return value


def devices_from_inventory(text: str, node: str) -> list[Device]:
    """Devices from a ``kubenpu.io/device-inventory`` annotation; ``ObjectError`` if malformed."""
    what = f"node {node}: annotation {ANNOTATION_DEVICE_INVENTORY}"
    try:
        entries = json.loads(text)
    except ValueError as exc:
        raise ObjectError(f"{what}: not JSON: {exc}") from None
    entries = _sequence(entries, what)
    if len(entries) > MAX_DEVICES_PER_NODE:
        raise ObjectError(f"{what}: {len(entries)} devices, at most {MAX_DEVICES_PER_NODE}")
    devices = []
    for n, raw in enumerate(entries):
        entry = _mapping(raw, f"{what}: entry {n}")
        dev_id = entry.get("id")
        if not isinstance(dev_id, str) or not 0 < len(dev_id) <= _MAX_DEVICE_ID:
            raise ObjectError(f"{what}: entry {n}: id must be a string of 1..63 characters")
        index, memory, group = (
            _small_int(entry.get(key, default), f"{what}: entry {n} ({dev_id}): {key}")
            for key, default in (("index", None), ("memory_mib", 0), ("group", 0))
        )
        healthy = entry.get("healthy", True)
        if not isinstance(healthy, bool):
            raise ObjectError(f"{what}: entry {n} ({dev_id}): healthy must be true or false")
        model = entry.get("model", "")
        devices.append(Device(dev_id, index, str(model), memory, healthy, group))
    if len({d.id for d in devices}) != len(devices):
        raise ObjectError(f"{what}: duplicate device ids")
    return sorted(devices, key=lambda d: d.index)


def node_from_object(obj: Mapping[str, Any]) -> Node:
    """A model Node from a Kubernetes Node: allocatable (else capacity) CPU, memory, NPUs.

    The devices come from the device plugin's ``kubenpu.io/device-inventory`` annotation
    (real ids, groups, health) when the Node has one. Without it they are synthesized:
    ``<node>-npu<i>`` for as many as ``aliyun.com/npu`` counts, all in group 0 and healthy;
    placements on such ids cannot be matched by the device plugin, so the extender only
    relies on them for counting. ``aliyun.com/npu-mem`` (GiB, for the whole node) is shared
    evenly by the synthesized devices; with an inventory each device has its own memory,
    counted only when the Node advertises ``aliyun.com/npu-mem`` at all.
    """
    meta = _mapping(obj.get("metadata"), "Node metadata")
    name = _name(meta, "Node")
    status = _mapping(obj.get("status"), f"node {name}: status")
    amounts = {
        **_mapping(status.get("capacity"), f"node {name}: status.capacity"),
        **_mapping(status.get("allocatable"), f"node {name}: status.allocatable"),
    }
    labels = {
        str(k): str(v)
        for k, v in _mapping(meta.get("labels"), f"node {name}: metadata.labels").items()
    }
    model = labels.get(LABEL_NPU_MODEL, "")
    npus = _whole(amounts.get(RESOURCE_NPU, 0), f"node {name}: {RESOURCE_NPU}")
    if npus > MAX_DEVICES_PER_NODE:
        raise ObjectError(f"node {name}: {RESOURCE_NPU} is {npus}, at most {MAX_DEVICES_PER_NODE}")
    # The device plugin advertises NPU memory as one unit per GiB for the whole node;
    # split it evenly over the devices (absent: no NPU memory, as the scheduler sees it).
    mem_gib = _whole(amounts.get(RESOURCE_NPU_MEM, 0), f"node {name}: {RESOURCE_NPU_MEM}")
    annotations = _mapping(meta.get("annotations"), f"node {name}: metadata.annotations")
    inventory = annotations.get(ANNOTATION_DEVICE_INVENTORY)
    if inventory:
        devices = tuple(
            Device(
                d.id,
                d.index,
                model or d.model,
                d.memory_mib if mem_gib else 0,
                d.healthy,
                d.group,
            )
            for d in devices_from_inventory(str(inventory), name)
        )
    else:
        per_device_mib = mem_gib * 1024 // npus if npus else 0
        devices = tuple(
            Device(id=f"{name}-npu{i}", index=i, model=model, memory_mib=per_device_mib)
            for i in range(npus)
        )
    return Node(
        name=name,
        cpu_milli=_quantity(cpu_milli, amounts.get("cpu", 0), f"node {name}: cpu"),
        memory_mib=_quantity(mebibytes, amounts.get("memory", 0), f"node {name}: memory"),
        devices=devices,
        labels=labels,
    )


def _container_amounts(container: Mapping[str, Any], pod: str) -> dict[str, object]:
    # Extended resources may be given as limits only; the API server then copies them to
    # requests, but a raw manifest may not have been through the API server yet.
    what = f"pod {pod}: container {container.get('name', '?')}: resources"
    res = _mapping(container.get("resources"), what)
    return {
        **_mapping(res.get("limits"), f"{what}.limits"),
        **_mapping(res.get("requests"), f"{what}.requests"),
    }


def _effective(
    pod: str, containers: Iterable[Mapping[str, Any]], init: Iterable[Mapping[str, Any]]
) -> dict[str, int]:
    """CPU and memory: max(sum over containers, max over init containers), as the scheduler
    does (the NPU resources are read by :func:`kubenpu.adapters.npurequest.read_pod_npu`)."""
    keys = ("cpu", "memory")
    conv = {
        "cpu": cpu_milli,
        "memory": mebibytes,
    }

    def amount(c: Mapping[str, Any], key: str) -> int:
        raw = _container_amounts(c, pod).get(key)
        if raw is None:
            return 0
        what = f"pod {pod}: container {c.get('name', '?')}: {key}"
        if key in conv:
            return _quantity(conv[key], raw, what)
        return _whole(raw, what)

    totals = {k: sum(amount(c, k) for c in containers) for k in keys}
    for c in init:
        for k in keys:
            totals[k] = max(totals[k], amount(c, k))
    return totals


def allowed_models(spec: Mapping[str, Any]) -> frozenset[str]:
    """Device models a pod allows through nodeSelector or required node affinity (empty: any)."""
    selected = _mapping(spec.get("nodeSelector"), "spec.nodeSelector").get(LABEL_NPU_MODEL)
    constrained = selected not in (None, "")
    models = {str(selected)} if constrained else set()
    affinity = _mapping(spec.get("affinity"), "spec.affinity")
    node_affinity = _mapping(affinity.get("nodeAffinity"), "spec.affinity.nodeAffinity")
    required = _mapping(
        node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution"),
        "requiredDuringSchedulingIgnoredDuringExecution",
    )
    terms = _sequence(required.get("nodeSelectorTerms"), "nodeSelectorTerms")
    per_term = []
    for term in terms:
        values: set[str] | None = None
        term = _mapping(term, "a nodeSelectorTerm")
        for expr in _sequence(term.get("matchExpressions"), "matchExpressions"):
            expr = _mapping(expr, "a matchExpression")
            if expr.get("key") == LABEL_NPU_MODEL and expr.get("operator") == "In":
                vals = {str(v) for v in _sequence(expr.get("values"), "values")}
                values = vals if values is None else values & vals
        per_term.append(values)
    # Terms are ORed: a term without a model constraint lets any model through.
    if per_term and all(v is not None for v in per_term):
        union = set().union(*per_term)  # type: ignore[arg-type]
        models = models & union if constrained else union
        constrained = True
    if constrained and not models:
        # Empty means "any model" to the engine; a pod that allows none must not get any.
        raise ObjectError(
            f"{LABEL_NPU_MODEL}: nodeSelector and required node affinity allow no model at all"
        )
    return frozenset(models)


def request_from_pod(obj: Mapping[str, Any]) -> Request:
    """A model Request from a Kubernetes Pod (whole NPUs, or a share with optional memory)."""
    meta = _mapping(obj.get("metadata"), "Pod metadata")
    name = _name(meta, "Pod")
    ns = meta.get("namespace")
    key = f"{ns}/{name}" if ns else name
    spec = _mapping(obj.get("spec"), f"pod {key}: spec")
    containers = [
        _mapping(c, f"pod {key}: a container")
        for field in ("containers", "initContainers")
        for c in _sequence(spec.get(field), f"pod {key}: spec.{field}")
    ]
    n_main = len(_sequence(spec.get("containers"), "containers"))
    t = _effective(key, containers[:n_main], containers[n_main:])
    npu = read_pod_npu(obj)
    if npu.problems:
        raise ObjectError(f"pod {key}: {'; '.join(npu.problems)}")
    try:
        return Request(
            name=key,
            cpu_milli=t["cpu"],
            memory_mib=t["memory"],
            npus=npu.npus,
            share_milli=npu.core * MILLI_PER_CORE_UNIT,
            share_memory_mib=npu.mem_gib * 1024,
            models=allowed_models(spec),
        )
    except ObjectError as exc:
        raise ObjectError(f"pod {key}: {exc}") from None
    except InputError as exc:
        raise ObjectError(str(exc)) from None


def pod_priority(obj: Mapping[str, Any]) -> int:
    """A Pod's priority (``spec.priority``, which admission resolves from its
    PriorityClass); 0 when unset, as kube-scheduler's ``PodPriority`` reads it."""
    spec = _mapping(obj.get("spec"), "Pod spec")
    value = spec.get("priority")
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**31) <= value < 2**31:
        raise ObjectError(f"pod {pod_key(obj)}: spec.priority must be an int32, got {value!r}")
    return value


def pod_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` of a Pod (the name ``request_from_pod`` gives its Request)."""
    meta = _mapping(obj.get("metadata"), "Pod metadata")
    name = _name(meta, "Pod")
    ns = meta.get("namespace")
    return f"{ns}/{name}" if ns else name


def placement_from_pod(obj: Mapping[str, Any]) -> Placement | None:
    """The placement recorded on a Pod's annotations, or None when it has none.

    The one reader of the record that :func:`placement_patch` writes (the extender's cache
    and binder, ``kubectl npu`` and the device plugin all call it). A record is there when
    ``kubenpu.io/node`` is; a placement without devices (a pod asking for none) has empty
    ``device_ids``. Device entries are kept as written (ids, or indices from older
    writers); the caller resolves them against the node's devices. A malformed record is
    an ``ObjectError`` naming the pod: each caller decides once what to do with such a pod.
    """
    key = pod_key(obj)
    annotations = _pod_annotations(obj, key)
    node = annotations.get(ANNOTATION_NODE)
    if not node:
        return None
    devices = str(annotations.get(ANNOTATION_DEVICES, ""))
    shares = str(annotations.get(ANNOTATION_SHARES, ""))
    ids = tuple(d.strip() for d in devices.split(",")) if devices else ()
    try:
        milli = tuple(int(s) for s in shares.split(",")) if shares else ()
    except ValueError:
        raise ObjectError(f"pod {key}: malformed {ANNOTATION_SHARES} {shares!r}") from None
    if len(ids) != len(milli) or any(not i for i in ids):
        raise ObjectError(
            f"pod {key}: {ANNOTATION_DEVICES} {devices!r} and {ANNOTATION_SHARES} {shares!r} "
            "do not line up"
        )
    if any(not 0 < m <= MILLI_PER_DEVICE for m in milli):
        raise ObjectError(f"pod {key}: {ANNOTATION_SHARES} {shares!r} out of 1..{MILLI_PER_DEVICE}")
    try:
        return Placement(key, str(node), ids, milli)
    except InputError as exc:
        raise ObjectError(str(exc)) from None


def placement_time(obj: Mapping[str, Any]) -> str:
    """When the placement on a Pod was recorded (``kubenpu.io/assumed-at``, RFC 3339, as
    :func:`placement_patch` wrote it); empty when the pod carries none."""
    return str(_pod_annotations(obj, pod_key(obj)).get(ANNOTATION_ASSUMED_AT) or "")


def _pod_annotations(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    meta = _mapping(obj.get("metadata"), "Pod metadata")
    return _mapping(meta.get("annotations"), f"pod {key}: metadata.annotations")


def placement_patch(
    placement: Placement | None, *, policy: str = "", assumed_at: str = "", resource_version: str
) -> dict[str, Any]:
    """A JSON merge patch recording ``placement`` on its pod (None: removing the record).

    ``resource_version`` makes the API server refuse the patch (409 Conflict) if the pod
    changed since it was read: the optimistic concurrency a binder relies on. The node is
    also written as the label ``kubenpu.io/node`` so binders can list a node's placements.
    """
    keys = (ANNOTATION_NODE, ANNOTATION_DEVICES, ANNOTATION_SHARES, ANNOTATION_ASSUMED_AT)
    annotations: dict[str, str | None]
    if placement is None:
        annotations = dict.fromkeys((*keys, ANNOTATION_POLICY))
        labels: dict[str, str | None] = {LABEL_PLACED_NODE: None}
    else:
        annotations = {
            ANNOTATION_NODE: placement.node,
            ANNOTATION_DEVICES: ",".join(placement.device_ids),
            ANNOTATION_SHARES: ",".join(str(s) for s in placement.shares_milli),
            ANNOTATION_ASSUMED_AT: assumed_at,
            ANNOTATION_POLICY: policy,
        }
        labels = {LABEL_PLACED_NODE: placement.node}
    return {
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": annotations,
            "labels": labels,
        }
    }


def node_npu_counts(obj: Mapping[str, Any]) -> tuple[int, int]:
    """A Node's whole NPUs: (capacity, allocatable); allocatable is capacity when absent.

    The device plugin advertises every device as capacity and only the healthy ones as
    allocatable, so the difference is the node's unhealthy devices.
    """
    meta = _mapping(obj.get("metadata"), "Node metadata")
    name = _name(meta, "Node")
    status = _mapping(obj.get("status"), f"node {name}: status")
    capacity = _mapping(status.get("capacity"), f"node {name}: status.capacity")
    allocatable = _mapping(status.get("allocatable"), f"node {name}: status.allocatable")
    total = _whole(capacity.get(RESOURCE_NPU, 0), f"node {name}: capacity {RESOURCE_NPU}")
    free = _whole(
        allocatable.get(RESOURCE_NPU, capacity.get(RESOURCE_NPU, 0)),
        f"node {name}: allocatable {RESOURCE_NPU}",
    )
    return total, free
