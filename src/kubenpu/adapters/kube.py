"""Kubernetes Node and Pod objects (as plain dicts, the API's JSON shape) to model objects.

The only place that knows how NPU resources and model constraints are spelled on
Kubernetes objects; the simulator's YAML reader, the extender and the tools all use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubenpu.adapters.quantity import cpu_milli, mebibytes, parse_quantity
from kubenpu.errors import InputError
from kubenpu.model import Device, Node, Request
from kubenpu.names import (
    CORE_UNITS_PER_DEVICE,
    LABEL_NPU_MODEL,
    MAX_DEVICES_PER_NODE,
    MILLI_PER_DEVICE,
    RESOURCE_NPU,
    RESOURCE_NPU_CORE,
    RESOURCE_NPU_MEM,
)

_MILLI_PER_CORE_UNIT = MILLI_PER_DEVICE // CORE_UNITS_PER_DEVICE
#: Largest CPU (milli) or memory (MiB) amount taken: the engine keeps them in int64 arrays.
_MAX_AMOUNT = 2**53


class ObjectError(ValueError):
    """A Kubernetes object that cannot be translated; the message says which field."""


def _whole(value: object, what: str) -> int:
    try:
        q = parse_quantity(value)
    except ValueError as exc:
        raise ObjectError(f"{what}: {exc}") from None
    if q < 0 or q != q.to_integral_value():
        raise ObjectError(f"{what}: {value!r} must be a whole, non-negative number")
    return int(q)


def _quantity(conv, value: object, what: str) -> int:
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


def node_from_object(obj: Mapping[str, Any]) -> Node:
    """A model Node from a Kubernetes Node: allocatable (else capacity) CPU, memory, NPUs.

    ``aliyun.com/npu-mem`` (GiB, for the whole node) is shared evenly by its devices.
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
):
    """Per resource: max(sum over containers, max over init containers), as the scheduler does."""
    keys = ("cpu", "memory", RESOURCE_NPU, RESOURCE_NPU_CORE, RESOURCE_NPU_MEM)
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
    core = t[RESOURCE_NPU_CORE]
    if t[RESOURCE_NPU] and core:
        raise ObjectError(
            f"pod {key}: asks for both {RESOURCE_NPU} and {RESOURCE_NPU_CORE}; use one of them"
        )
    if core > CORE_UNITS_PER_DEVICE:
        raise ObjectError(
            f"pod {key}: {RESOURCE_NPU_CORE} is {core}, at most {CORE_UNITS_PER_DEVICE} "
            f"(one NPU); ask for whole NPUs with {RESOURCE_NPU}"
        )
    if t[RESOURCE_NPU_MEM] and not core:
        raise ObjectError(f"pod {key}: {RESOURCE_NPU_MEM} needs {RESOURCE_NPU_CORE}")
    try:
        return Request(
            name=key,
            cpu_milli=t["cpu"],
            memory_mib=t["memory"],
            npus=t[RESOURCE_NPU],
            share_milli=core * _MILLI_PER_CORE_UNIT,
            share_memory_mib=t[RESOURCE_NPU_MEM] * 1024,
            models=allowed_models(spec),
        )
    except ObjectError as exc:
        raise ObjectError(f"pod {key}: {exc}") from None
    except InputError as exc:
        raise ObjectError(str(exc)) from None
