"""Reader for the openb trace's node and pod CSV files (the FGD paper's format)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from kubenpu.errors import InputError
from kubenpu.model import Device, Node, Request
from kubenpu.names import (
    LABEL_NPU_MODEL,
    MAX_DEVICES_PER_NODE,
    MILLI_PER_DEVICE,
    REFERENCE_NPU_MODEL,
)
from kubenpu.traces.csvtable import Row, read_rows

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
#: Pod columns a time-driven replay needs (seconds).
TIME_COLUMNS = ("creation_time", "deletion_time")
#: Optional: when the pod started in the trace (empty: it never did).
SCHEDULED_COLUMN = "scheduled_time"
#: Optional pod column: allowed models joined by ``|`` (absent or empty = any model).
POD_SPEC_COLUMN = "gpu_spec"
#: Optional pod column: the pod's quality of service (``LS``, ``BE``, ``Burstable``, ...).
QOS_COLUMN = "qos"
#: The largest node of any real NPU instance carries 8 devices; the trace never asks more.
MAX_DEVICES_PER_POD = 8
#: Device models a node or a pod's ``gpu_spec`` may name: the openb trace's, and kubenpu's
#: reference NPU. Any other value is an error (``P1`` is a cut ``P100``, not a new model).
KNOWN_MODELS = frozenset({"A10", "G2", "G3", "P100", "T4", "V100M16", "V100M32"}) | {
    REFERENCE_NPU_MODEL
}


@dataclass(frozen=True, slots=True)
class TimedPod:
    """A pod of a trace with its times (seconds): when it came, went, and how long it ran."""

    request: Request
    created_s: int
    deleted_s: int
    runtime_s: int


def _known_model(model: str, row: Row, column: str) -> str:
    if model not in KNOWN_MODELS:
        raise row.error(
            f"column {column!r}: unknown device model {model!r} "
            f"(known: {', '.join(sorted(KNOWN_MODELS))})"
        )
    return model


def _unique(seen: dict[str, int], name: str, row: Row, what: str) -> None:
    first = seen.setdefault(name, row.line)
    if first != row.line:
        raise row.error(f"{what} {name!r} appears twice (first at line {first})")


def read_nodes(path: Path) -> list[Node]:
    """Nodes of an openb node list; each device gets id ``<node>-npu<i>``."""
    nodes = []
    seen: dict[str, int] = {}
    for row in read_rows(path, NODE_COLUMNS):
        name = row.text("sn")
        if not name:
            raise row.error("column 'sn': empty node name")
        _unique(seen, name, row, "node")
        model = row.text("model")
        count = row.count("gpu")
        if count > MAX_DEVICES_PER_NODE:
            raise row.error(
                f"column 'gpu': {count} devices on one node (at most {MAX_DEVICES_PER_NODE})"
            )
        if model:
            _known_model(model, row, "model")
        elif count:
            raise row.error(f"column 'model': empty, but the node has {count} devices")
        devices = tuple(Device(id=f"{name}-npu{i}", index=i, model=model) for i in range(count))
        labels = {LABEL_NPU_MODEL: model} if model and count else {}
        nodes.append(Node(name, row.count("cpu_milli"), row.count("memory_mib"), devices, labels))
    if not nodes:
        raise InputError("no nodes in file", source=str(path))
    return nodes


def read_pods(path: Path) -> list[Request]:
    """Requests of an openb pod list.

    ``num_gpu`` whole devices when ``gpu_milli`` is 1000, a share of one device when
    ``num_gpu`` is 1 and ``gpu_milli`` is below 1000, no device when ``num_gpu`` is 0.
    """
    seen: dict[str, int] = {}
    return [_request(row, seen) for row in _pod_rows(path, POD_COLUMNS)]


def read_pod_timeline(path: Path) -> list[TimedPod]:
    """The pods of an openb pod list with their times, for a time-driven replay.

    Needs ``creation_time`` and ``deletion_time``; ``scheduled_time`` (empty for a pod that
    never ran) tells how long it ran in the trace.
    """
    seen: dict[str, int] = {}
    pods = []
    for row in _pod_rows(path, POD_COLUMNS + TIME_COLUMNS):
        request = _request(row, seen)
        created, deleted = row.count("creation_time"), row.count("deletion_time")
        started = row.count(SCHEDULED_COLUMN) if row.text(SCHEDULED_COLUMN) else created
        if deleted < created:
            raise row.error(f"column 'deletion_time': {deleted} is before creation ({created})")
        if not created <= started <= deleted:
            raise row.error(
                f"column {SCHEDULED_COLUMN!r}: {started} is outside creation..deletion "
                f"({created}..{deleted})"
            )
        pods.append(TimedPod(request, created, deleted, deleted - started))
    return pods


def read_pod_qos(path: Path, allowed: Collection[str] | None = None) -> dict[str, str] | None:
    """Pod name -> the ``qos`` column's value (``LS``, ``BE``, ...), each one of ``allowed``
    if given; None when the file has no such column or it is empty on every row. An empty
    value among others is an error, as is one not allowed (both name the line)."""
    rows = _pod_rows(path, ("name",))
    values = {row.text("name"): row.text(QOS_COLUMN) for row in rows}
    if not any(values.values()):
        return None
    for row in rows:
        value = row.text(QOS_COLUMN)
        if not value:
            raise row.error(f"column {QOS_COLUMN!r}: empty, but other pods have one")
        if allowed is not None and value not in allowed:
            raise row.error(
                f"column {QOS_COLUMN!r}: {value!r} is not one of {', '.join(sorted(allowed))}"
            )
    return values


def _pod_rows(path: Path, columns: tuple[str, ...]) -> list[Row]:
    rows = list(read_rows(path, columns))
    if not rows:
        raise InputError("no pods in file", source=str(path))
    return rows


def _request(row: Row, seen: dict[str, int]) -> Request:
    name = row.text("name")
    if not name:
        raise row.error("column 'name': empty pod name")
    _unique(seen, name, row, "pod")
    num, milli = row.count("num_gpu"), row.count("gpu_milli")
    if num > MAX_DEVICES_PER_POD:
        raise row.error(
            f"column 'num_gpu': {num} devices in one pod (at most {MAX_DEVICES_PER_POD})"
        )
    if milli > MILLI_PER_DEVICE:
        raise row.error(f"column 'gpu_milli': {milli} is more than one device ({MILLI_PER_DEVICE})")
    if num > 1 and milli != MILLI_PER_DEVICE:
        raise row.error(f"column 'gpu_milli': {num} devices must be whole (1000), got {milli}")
    if num == 0 and milli:
        raise row.error(f"column 'gpu_milli': {milli} milli asked with num_gpu 0")
    if num == 1 and milli == 0:
        raise row.error("column 'gpu_milli': num_gpu 1 with a share of 0")
    whole = milli == MILLI_PER_DEVICE
    spec = row.text(POD_SPEC_COLUMN)
    models = frozenset(
        _known_model(m.strip(), row, POD_SPEC_COLUMN) for m in spec.split("|") if m.strip()
    )
    return Request(
        name=name,
        cpu_milli=row.count("cpu_milli"),
        memory_mib=row.count("memory_mib"),
        npus=num if whole else 0,
        share_milli=0 if whole else milli,
        models=models,
    )
