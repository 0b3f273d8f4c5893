"""What ``kubectl npu`` shows, computed from Nodes and Pods as the API returns them (JSON).

Who holds which device comes from the placement record on pods (``kubenpu.io/devices``,
``kubenpu.io/shares``); a pod without one (placed by a scheduler that records nothing)
counts by its requests: its whole NPUs are allocated on its node, devices unknown.

Nodes served by the DRA driver (label ``kubenpu.io/npu-driver=dra``) advertise no
``aliyun.com/npu``: their devices are the driver's ResourceSlice(s) for the node, and what
is allocated of them the ResourceClaims' allocations (``kubenpu.adapters.claims``, the one
reader); a pod served through DRA shows the devices of its claims (or, once its claim is
gone with it, the ``kubenpu.io/devices`` the extender wrote from it at bind).

For ``kubectl npu validate``: which nodes to validate, what a validation pod's state means
(still on its way, passed, or failed and why) and the table of results.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kubenpu.adapters.claims import AllocatedDevice, allocated_devices, is_allocated, pod_claims
from kubenpu.adapters.kube import (
    devices_from_inventory,
    node_npu_counts,
    placement_from_pod,
    request_from_pod,
)
from kubenpu.errors import ObjectError
from kubenpu.model import Device
from kubenpu.names import (
    ANNOTATION_DEVICE_INVENTORY,
    ANNOTATION_DEVICES,
    ANNOTATION_NODE,
    CORE_UNITS_PER_DEVICE,
    DRA_DRIVER,
    LABEL_NPU_DRIVER,
    LABEL_NPU_MODEL,
    MILLI_PER_CORE_UNIT,
    MILLI_PER_DEVICE,
    NPU_DRIVER_DRA,
    RESOURCE_NPU,
    RESOURCE_NPU_CORE,
)

_TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True, slots=True)
class PodNpus:
    """The NPUs one pod asks for or holds."""

    namespace: str
    name: str
    node: str
    phase: str
    #: Whole NPUs asked for (from the placement record, else the requests).
    npus: int
    #: Device ids held whole, when recorded.
    devices: tuple[str, ...] = ()
    #: (device id or "" when not recorded, percent of that NPU's compute) per share.
    shares: tuple[tuple[str, int], ...] = ()
    #: Why the pod's NPUs could not be read, if they could not.
    problem: str = ""
    #: The ResourceClaims its NPUs come from (DRA), by name.
    claims: tuple[str, ...] = ()
    #: Why a pod not bound yet waits: kube-scheduler's last word on it (the reasons of
    #: the extender's filter among them: a gang that does not fit, no device with room)
    #: and the node its preemption nominated, victims evicted there.
    waiting: str = ""

    @property
    def holds(self) -> bool:
        """Whether the pod counts against its node (bound and not finished)."""
        return bool(self.node) and self.phase not in _TERMINAL

    def as_dict(self) -> dict[str, Any]:
        """JSON/YAML form."""
        data = asdict(self)
        data["devices"] = list(self.devices)
        data["shares"] = [{"device": d, "core_percent": p} for d, p in self.shares]
        data["claims"] = list(self.claims)
        return data


@dataclass(frozen=True, slots=True)
class NodeNpus:
    """One NPU node: its devices and what pods hold of them."""

    name: str
    model: str
    total: int
    unhealthy: int
    allocated: int
    #: Devices shared by pods (recorded ones), and the compute percent given out on them.
    shared_devices: int
    shared_core_percent: int
    pods: list[str] = field(default_factory=list)
    #: What serves its NPUs: ``device-plugin`` or ``dra``.
    driver: str = "device-plugin"
    #: DRA nodes: every device of the node's ResourceSlice(s), and those claims hold.
    devices: list[str] = field(default_factory=list)
    allocated_devices: list[str] = field(default_factory=list)

    @property
    def free(self) -> int:
        """Healthy devices held by nobody (never negative)."""
        return max(0, self.total - self.unhealthy - self.allocated - self.shared_devices)

    def as_dict(self) -> dict[str, Any]:
        """JSON/YAML form."""
        return {**asdict(self), "free": self.free}


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def asks_for_npu(pod: Mapping[str, Any]) -> bool:
    """Whether any container names aliyun.com/npu or aliyun.com/npu-core."""
    spec = pod.get("spec") or {}
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            res = c.get("resources") or {}
            for amounts in (res.get("limits") or {}, res.get("requests") or {}):
                if RESOURCE_NPU in amounts or RESOURCE_NPU_CORE in amounts:
                    return True
    return False


#: A pod's claims by name (the claims of its namespace).
Claims = Mapping[str, Mapping[str, Any]]


def _split(
    devices: Sequence[AllocatedDevice],
) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    """Whole devices and (device, core percent) shares of claims' allocations. The driver's
    devices allow several allocations (consumable capacity), so every result may carry a
    ``shareID``: a share is a result that consumes less than a whole device's ``compute``
    (100, percent of one NPU); one consuming all of it, or none recorded, is whole."""
    whole: list[str] = []
    shares: list[tuple[str, int]] = []
    for d in devices:
        compute = _compute(d)
        if compute is not None and compute < CORE_UNITS_PER_DEVICE:
            shares.append((d.device, compute))
        else:
            whole.append(d.device)
    return tuple(dict.fromkeys(whole)), tuple(shares)


def _compute(device: AllocatedDevice) -> int | None:
    """The ``compute`` (percent of one NPU) a result consumes; None when not recorded."""
    amount = dict(device.consumed).get("compute")
    if amount is None:
        return None
    try:
        return int(str(amount))
    except ValueError:
        return None


def _claim_devices(
    pod: Mapping[str, Any], claims: Claims, driver: str
) -> tuple[tuple[str, ...], list[AllocatedDevice]] | None:
    """The names of ``pod``'s claims and ``driver``'s devices they were allocated; None
    when the pod uses no claim or one of them is not (or no longer) there to read."""
    used = [c.claim for c in pod_claims(pod)]
    if not used or not all(c in claims for c in used):
        return None
    found: list[AllocatedDevice] = []
    for name in dict.fromkeys(used):
        found += allocated_devices(claims[name], driver)
    return tuple(dict.fromkeys(used)), found


def pod_npus(
    pod: Mapping[str, Any], claims: Claims | None = None, *, driver: str = DRA_DRIVER
) -> PodNpus:
    """The NPUs of one pod: the placement record when present, else the devices of its
    claims (``claims``: its namespace's, by name), else the ``kubenpu.io/devices`` the
    extender wrote for a DRA pod, else its requests."""
    meta = _meta(pod)
    base = functools.partial(
        PodNpus,
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
        phase=str((pod.get("status") or {}).get("phase") or "Pending"),
        waiting=waiting_reason(pod),
    )
    try:
        placement = placement_from_pod(pod)
        request = request_from_pod(pod)
    except ObjectError as exc:
        return base(npus=0, problem=str(exc))
    if placement is not None and placement.device_ids:
        whole = tuple(
            d
            for d, m in zip(placement.device_ids, placement.shares_milli, strict=True)
            if m >= MILLI_PER_DEVICE
        )
        shares = tuple(
            (d, m // MILLI_PER_CORE_UNIT)
            for d, m in zip(placement.device_ids, placement.shares_milli, strict=True)
            if m < MILLI_PER_DEVICE
        )
        return base(npus=len(whole), devices=whole, shares=shares)
    try:
        claimed = _claim_devices(pod, claims or {}, driver)
    except ObjectError as exc:
        return base(npus=request.npus, problem=str(exc))
    if claimed is not None and claimed[1]:
        names, found = claimed
        whole, shares = _split(found)
        return base(npus=len(whole), devices=whole, shares=shares, claims=names)
    annotations = _meta(pod).get("annotations") or {}
    told = str(annotations.get(ANNOTATION_DEVICES) or "")
    if told and ANNOTATION_NODE not in annotations:  # a DRA pod: its claim's devices
        ids = tuple(d.strip() for d in told.split(",") if d.strip())
        return base(npus=len(ids), devices=ids)
    shares = (("", request.share_milli // MILLI_PER_CORE_UNIT),) if request.share_milli else ()
    return base(npus=request.npus, shares=shares)


def waiting_reason(pod: Mapping[str, Any]) -> str:
    """Why a pod that is not bound yet waits, from its status: the node its preemption
    nominated (victims were chosen there and are being evicted) and kube-scheduler's
    ``PodScheduled`` message; "" for a bound pod or one not tried yet."""
    if (pod.get("spec") or {}).get("nodeName"):
        return ""
    status = pod.get("status") or {}
    said = [
        str(c.get("message") or c.get("reason") or "")
        for c in status.get("conditions") or []
        if isinstance(c, Mapping) and c.get("type") == "PodScheduled" and c.get("status") == "False"
    ]
    nominated = status.get("nominatedNodeName")
    if nominated:
        said.insert(0, f"preempting on {nominated}: victims chosen, waiting for them to go")
    return "; ".join(s for s in said if s)


def uses_claims(pod: Mapping[str, Any]) -> bool:
    """Whether the pod names ResourceClaims (DRA), read or not."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    return bool(spec.get("resourceClaims") or status.get("extendedResourceClaimStatus"))


def claims_by_namespace(
    claims: Iterable[Mapping[str, Any]],
) -> dict[str, dict[str, Mapping[str, Any]]]:
    """ResourceClaims as the API lists them, by namespace and name."""
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for claim in claims:
        meta = _meta(claim)
        out.setdefault(str(meta.get("namespace", "")), {})[str(meta.get("name", ""))] = claim
    return out


def npu_pods(
    pods: Iterable[Mapping[str, Any]],
    claims: Iterable[Mapping[str, Any]] = (),
    *,
    driver: str = DRA_DRIVER,
) -> list[PodNpus]:
    """The pods asking for NPUs (through ``aliyun.com/npu*`` or claims of ``driver``),
    sorted by namespace and name; ``claims``: the ResourceClaims as listed."""
    index = claims_by_namespace(claims)
    found = []
    for p in pods:
        if not (asks_for_npu(p) or uses_claims(p)):
            continue
        row = pod_npus(p, index.get(str(_meta(p).get("namespace", "")), {}), driver=driver)
        if asks_for_npu(p) or row.claims:
            found.append(row)
    return sorted(found, key=lambda p: (p.namespace, p.name))


def _slice_devices(
    slices: Iterable[Mapping[str, Any]], node: str, driver: str
) -> tuple[list[str], set[str], set[str]]:
    """``driver``'s devices on ``node`` (its ResourceSlices), the unhealthy ones among them
    (attribute ``healthy`` false, or a NoSchedule/NoExecute device taint), and the pools."""
    devices: list[str] = []
    unhealthy: set[str] = set()
    pools: set[str] = set()
    for obj in slices:
        spec = obj.get("spec") or {}
        if spec.get("driver") != driver or spec.get("nodeName") != node:
            continue
        pools.add(str((spec.get("pool") or {}).get("name", "")))
        for device in spec.get("devices") or []:
            name = str(device.get("name", ""))
            devices.append(name)
            healthy = ((device.get("attributes") or {}).get("healthy") or {}).get("bool", True)
            taints = {t.get("effect") for t in device.get("taints") or [] if isinstance(t, Mapping)}
            if healthy is False or taints & {"NoSchedule", "NoExecute"}:
                unhealthy.add(name)
    return sorted(dict.fromkeys(devices), key=_natural), unhealthy, pools


def _natural(name: str) -> tuple[str, int]:
    head = name.rstrip("0123456789")
    tail = name[len(head) :]
    return head, int(tail) if tail else -1


def _dra_node(
    node: Mapping[str, Any],
    pods: Sequence[PodNpus],
    slices: Sequence[Mapping[str, Any]],
    claims: Sequence[Mapping[str, Any]],
    driver: str,
) -> NodeNpus:
    """One DRA node: its slice's devices, what the claims' allocations hold of them."""
    name = str(_meta(node).get("name", ""))
    devices, unhealthy, pools = _slice_devices(slices, name, driver)
    held: list[AllocatedDevice] = []
    for claim in claims:
        if not is_allocated(claim):
            continue
        try:
            found = allocated_devices(claim, driver)
        except ObjectError:
            continue
        held += [d for d in found if d.pool in pools and d.device in devices]
    whole, shares = _split(held)
    shared = {d for d, _ in shares} - set(whole)
    mine = [p for p in pods if p.node == name and p.holds]
    return NodeNpus(
        name=name,
        model=str((_meta(node).get("labels") or {}).get(LABEL_NPU_MODEL, "")),
        total=len(devices),
        unhealthy=len(unhealthy),
        allocated=len(whole),
        shared_devices=len(shared),
        shared_core_percent=sum(pct for d, pct in shares if d in shared),
        pods=[f"{p.namespace}/{p.name}" for p in mine],
        driver=NPU_DRIVER_DRA,
        devices=devices,
        allocated_devices=sorted({*whole, *shared}, key=_natural),
    )


def is_dra_node(node: Mapping[str, Any]) -> bool:
    """Whether the DRA driver serves the node's NPUs (its ``kubenpu.io/npu-driver`` label)."""
    return (_meta(node).get("labels") or {}).get(LABEL_NPU_DRIVER) == NPU_DRIVER_DRA


def npu_nodes(
    nodes: Iterable[Mapping[str, Any]],
    pods: Sequence[PodNpus],
    slices: Sequence[Mapping[str, Any]] = (),
    claims: Sequence[Mapping[str, Any]] = (),
    *,
    driver: str = DRA_DRIVER,
) -> list[NodeNpus]:
    """Every node with NPUs and what the pods bound to it hold, sorted by name; a DRA node
    (even one whose slice is not published yet) from ``slices`` and ``claims``."""
    rows = []
    for node in nodes:
        if is_dra_node(node):
            rows.append(_dra_node(node, pods, slices, claims, driver))
            continue
        try:
            total, allocatable = node_npu_counts(node)
        except ObjectError:
            continue
        if not total:
            continue
        name = str(_meta(node).get("name", ""))
        mine = [p for p in pods if p.node == name and p.holds]
        shared = {d for p in mine for d, _ in p.shares if d}
        rows.append(
            NodeNpus(
                name=name,
                model=str((_meta(node).get("labels") or {}).get(LABEL_NPU_MODEL, "")),
                total=total,
                # The device plugin advertises only healthy devices as allocatable.
                unhealthy=max(0, total - allocatable),
                allocated=sum(p.npus for p in mine),
                shared_devices=len(shared),
                shared_core_percent=sum(pct for p in mine for _, pct in p.shares),
                pods=[f"{p.namespace}/{p.name}" for p in mine],
                devices=_inventory_ids(node),
                allocated_devices=sorted(
                    {d for p in mine for d in p.devices} | shared, key=_natural
                ),
            )
        )
    return sorted(rows, key=lambda r: r.name)


def _inventory(node: Mapping[str, Any]) -> list[Device]:
    """The devices the device plugin published on the Node ([] when none or unreadable)."""
    text = (_meta(node).get("annotations") or {}).get(ANNOTATION_DEVICE_INVENTORY)
    if not text:
        return []
    try:
        return devices_from_inventory(str(text), str(_meta(node).get("name", "")))
    except ObjectError:
        return []


def _inventory_ids(node: Mapping[str, Any]) -> list[str]:
    """The device ids the device plugin published on the Node ([] when none or unreadable)."""
    return [d.id for d in _inventory(node)]


def node_table(rows: Sequence[NodeNpus]) -> list[list[str]]:
    """Header and rows of ``kubectl npu nodes``."""
    table = [["NODE", "MODEL", "TOTAL", "ALLOCATED", "SHARED", "SHARED-CORE", "UNHEALTHY", "FREE"]]
    for r in rows:
        table.append(
            [
                r.name,
                r.model or "<none>",
                str(r.total),
                str(r.allocated),
                str(r.shared_devices),
                f"{r.shared_core_percent}%",
                str(r.unhealthy),
                str(r.free),
            ]
        )
    return table


def pod_table(rows: Sequence[PodNpus], *, all_namespaces: bool) -> list[list[str]]:
    """Header and rows of ``kubectl npu pods`` (a NAMESPACE column with ``-A``, a WAITING
    column when a pod waits to be scheduled)."""
    header = ["NAME", "NODE", "PHASE", "NPUS", "DEVICES", "SHARES"]
    waits = any(p.waiting for p in rows)
    if waits:
        header.append("WAITING")
    table = [["NAMESPACE", *header] if all_namespaces else header]
    for p in rows:
        if p.problem:
            devices, shares = "?", p.problem
        else:
            devices = ",".join(p.devices) or ("<unrecorded>" if p.npus else "<none>")
            shares = ",".join(f"{d}:{pct}%" if d else f"{pct}%" for d, pct in p.shares) or "<none>"
        row = [p.name, p.node or "<none>", p.phase, str(p.npus), devices, shares]
        if waits:
            row.append(p.waiting or "-")
        table.append([p.namespace, *row] if all_namespaces else row)
    return table


def render(table: Sequence[Sequence[str]]) -> str:
    """Columns padded like kubectl's tables: left-aligned, three spaces apart."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    return "\n".join(lines) + "\n"


# ---- kubectl npu validate ----------------------------------------------------------------

#: The stages of one node's validation, in order (what the progress display shows).
STAGE_CREATING = "creating"
STAGE_SCHEDULING = "scheduling"
STAGE_STARTING = "pulling image"
STAGE_RUNNING = "running"
STAGE_DONE = "done"
#: Waiting reasons of a container whose image cannot be pulled.
_PULL_FAILURES = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
#: Waiting reasons of a container that cannot be created or started.
_START_FAILURES = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)


@dataclass(frozen=True, slots=True)
class ValidationTarget:
    """A node to validate: how many NPUs its Job asks for (all of them), or why it gets
    none."""

    node: str
    npus: int
    #: Set when the node cannot be validated at all (no NPU advertised).
    problem: str = ""


def validation_targets(
    nodes: Iterable[Mapping[str, Any]], wanted: Sequence[str] = ()
) -> tuple[list[ValidationTarget], list[str]]:
    """The NPU nodes to validate (every one when ``wanted`` is empty, else those named, in
    that order) and the names in ``wanted`` that are no NPU node.

    An NPU node has ``aliyun.com/npu`` capacity or the ``aliyun.com/npu-model`` label; one
    with the label but no capacity (its device plugin is gone long enough for the kubelet
    to drop the resource) is a target with a problem, so ``--all`` still reports it.
    """
    found: dict[str, ValidationTarget] = {}
    for node in nodes:
        name = str(_meta(node).get("name", ""))
        labels = _meta(node).get("labels") or {}
        try:
            total, _ = node_npu_counts(node)
        except ObjectError as exc:
            found[name] = ValidationTarget(name, 0, f"node status unreadable: {exc}")
            continue
        if total:
            found[name] = ValidationTarget(name, total)
        elif LABEL_NPU_MODEL in labels:
            found[name] = ValidationTarget(
                name,
                0,
                f"device plugin: {name} is labelled {LABEL_NPU_MODEL} but advertises no "
                f"{RESOURCE_NPU} (is the kubenpu device plugin running there?)",
            )
    if not wanted:
        return [found[n] for n in sorted(found)], []
    unknown = [n for n in wanted if n not in found]
    chosen = list(dict.fromkeys(n for n in wanted if n in found))
    return [found[n] for n in chosen], unknown


@dataclass(frozen=True, slots=True)
class ValidationStep:
    """Where one node's validation pod is, read from the pod (and its node) as the API
    returns them. ``done`` with ``passed`` False carries the reason."""

    stage: str
    detail: str = ""
    done: bool = False
    passed: bool = False
    reason: str = ""
    #: The container's summary (train.py's termination message), once it ended.
    summary: Mapping[str, Any] = field(default_factory=dict)


def parse_summary(message: str) -> dict[str, Any]:
    """train.py's termination message (one JSON object); ``{}`` when it is something else
    (e.g. the end of the log, which Kubernetes uses when the file is empty)."""
    try:
        data = json.loads(message)
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == kind:
            return cond
    return {}


def _first_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _unhealthy_ids(node: Mapping[str, Any]) -> list[str]:
    return [d.id for d in _inventory(node) if not d.healthy]


def short_of_npus(node: Mapping[str, Any] | None, npus: int) -> str:
    """Why ``node`` cannot take a pod asking for ``npus`` of its NPUs ("" when it can, as
    far as the Node says): fewer allocatable than asked, and the unhealthy devices the
    device plugin names in its inventory."""
    if node is None:
        return "the node is gone"
    try:
        total, allocatable = node_npu_counts(node)
    except ObjectError as exc:
        return str(exc)
    if allocatable >= npus:
        return ""
    name = str(_meta(node).get("name", ""))
    sick = _unhealthy_ids(node)
    if sick:
        why = f"unhealthy: {', '.join(sick)}"
    elif allocatable == 0:
        why = "none advertised: is its device plugin running?"
    else:
        why = f"{total - allocatable} not advertised as healthy"
    return f"{name} has {allocatable} of {total} NPUs allocatable ({why})"


def _summary_verdict(
    summary: Mapping[str, Any], pod: Mapping[str, Any], npus: int, min_top1: float
) -> str:
    """Why a container that exited 0 still fails validation ("" when it passes)."""
    record = str((_meta(pod).get("annotations") or {}).get(ANNOTATION_DEVICES, ""))
    seen = summary.get("devices") or []
    if not summary:
        return "result: the container left no summary (is the image kubenpu's resnet50?)"
    if summary.get("match") is not True:
        return "device mismatch: the container's devices do not match its placement record"
    if len(seen) != npus:
        return f"device missing: the container sees {len(seen)} NPU(s), asked for {npus}"
    if record and summary.get("record") not in (None, record):
        return (
            f"device mismatch: the pod's record is {record}, the container was told "
            f"{summary.get('record')}"
        )
    top1 = summary.get("top1")
    if not isinstance(top1, int | float):
        return "result: no top-1 accuracy in the container's summary"
    if top1 < min_top1:
        return f"accuracy: top-1 {top1:.1f}% is below {min_top1:g}%"
    return ""


def _failure_from_summary(summary: Mapping[str, Any], code: Any, message: str) -> str:
    error = str(summary.get("error") or "")
    if summary.get("stage") == "npu-check":
        kind = "device missing" if "no NPU device node" in error else "device mismatch"
        return f"{kind}: {error}"
    if error:
        return f"training: {error}"
    tail = [line for line in str(message).splitlines() if line.strip()]
    last = f": {_first_line(tail[-1])}" if tail else ""
    return f"container exited with code {code}{last}"


def validation_step(
    pod: Mapping[str, Any] | None,
    node: Mapping[str, Any] | None,
    npus: int,
    *,
    min_top1: float = 0.0,
    log_tail: str = "",
) -> ValidationStep:
    """Classify one validation pod: still on its way, passed, or failed and why.

    Failures that waiting cannot cure end at once: an image that cannot be pulled, a
    container that cannot start, a pod the kubelet refused (devices not allocatable), and a
    pod the scheduler cannot place while its node has fewer allocatable NPUs than asked
    (unhealthy devices, a stopped device plugin). A pod unschedulable for other reasons
    (NPUs held by other pods) keeps waiting: the caller's timeout ends it.
    """
    if pod is None:
        return ValidationStep(STAGE_CREATING, "waiting for the Job's pod")
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    containers = status.get("containerStatuses") or []
    state = (containers[0].get("state") or {}) if containers else {}
    terminated = state.get("terminated")
    if terminated:
        message = str(terminated.get("message") or "")
        summary = parse_summary(message)
        code = terminated.get("exitCode")
        if code == 0:
            reason = _summary_verdict(summary, pod, npus, min_top1)
            return ValidationStep(
                STAGE_DONE, "", done=True, passed=not reason, reason=reason, summary=summary
            )
        return ValidationStep(
            STAGE_DONE,
            "",
            done=True,
            reason=_failure_from_summary(summary, code, message),
            summary=summary,
        )
    if phase in _TERMINAL:
        why = str(status.get("reason") or "")
        text = _first_line(str(status.get("message") or ""))
        kind = "timeout" if why == "DeadlineExceeded" else "admission"
        return ValidationStep(
            STAGE_DONE, "", done=True, reason=f"{kind}: {why or phase}: {text}".rstrip(": ")
        )
    scheduled = _condition(pod, "PodScheduled")
    if not (pod.get("spec") or {}).get("nodeName"):
        message = _first_line(str(scheduled.get("message") or ""))
        if scheduled.get("status") == "False":
            short = short_of_npus(node, npus)
            if short:
                return ValidationStep(
                    STAGE_SCHEDULING,
                    message,
                    done=True,
                    reason=f"scheduling: {short}" + (f"; {message}" if message else ""),
                )
        return ValidationStep(STAGE_SCHEDULING, message or "waiting for the scheduler")
    waiting = state.get("waiting") or {}
    why = str(waiting.get("reason") or "")
    text = _first_line(str(waiting.get("message") or ""))
    if why in _PULL_FAILURES:
        return ValidationStep(
            STAGE_STARTING, text, done=True, reason=f"image pull: {why}: {text}".rstrip(": ")
        )
    if why in _START_FAILURES:
        return ValidationStep(
            STAGE_STARTING, text, done=True, reason=f"container start: {why}: {text}".rstrip(": ")
        )
    if "running" in state:
        lines = log_tail.strip().splitlines()
        return ValidationStep(STAGE_RUNNING, lines[-1][:120] if lines else "")
    return ValidationStep(STAGE_STARTING, why or phase)


@dataclass(frozen=True, slots=True)
class NodeValidation:
    """The outcome for one node: what ``kubectl npu validate`` prints."""

    node: str
    npus: int
    passed: bool
    #: The stage it ended in (``done`` when the container ran to the end).
    stage: str
    reason: str = ""
    #: Device nodes the container saw, and the placement record on its pod.
    devices: tuple[str, ...] = ()
    record: str = ""
    #: Whether the container's devices, env and record agreed (None: never checked).
    match: bool | None = None
    images_per_s: float | None = None
    top1: float | None = None
    top5: float | None = None
    #: Where the math ran (``CPU``, ``GPU:0 (...)``), as the container said.
    device: str = ""
    seconds: float = 0.0
    job: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        data = asdict(self)
        data["devices"] = list(self.devices)
        return data


def node_validation(
    target: ValidationTarget,
    step: ValidationStep,
    pod: Mapping[str, Any] | None,
    *,
    seconds: float,
    job: str = "",
) -> NodeValidation:
    """The row for a node from its last step."""
    summary = step.summary
    record = str(((_meta(pod).get("annotations") or {}) if pod else {}).get(ANNOTATION_DEVICES, ""))

    def number(key: str) -> float | None:
        value = summary.get(key)
        return float(value) if isinstance(value, int | float) else None

    match = summary.get("match")
    return NodeValidation(
        node=target.node,
        npus=target.npus,
        passed=step.done and step.passed,
        stage=step.stage,
        reason=step.reason,
        devices=tuple(str(d) for d in summary.get("devices") or ()),
        record=record,
        match=match if isinstance(match, bool) else None,
        images_per_s=number("images_per_s"),
        top1=number("top1"),
        top5=number("top5"),
        device=str(summary.get("device") or ""),
        seconds=round(seconds, 1),
        job=job,
    )


def _devices_cell(devices: Sequence[str]) -> str:
    return ",".join(d.rsplit("/", 1)[-1] for d in devices) or "<none>"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def validation_table(rows: Sequence[NodeValidation]) -> list[list[str]]:
    """Header and rows of ``kubectl npu validate``: one row per node."""
    table = [
        [
            "NODE",
            "NPUS",
            "DEVICES-SEEN",
            "RECORD",
            "MATCH",
            "IMAGES/S",
            "TOP-1",
            "TOP-5",
            "TIME",
            "RESULT",
            "REASON",
        ]
    ]
    for r in rows:
        table.append(
            [
                r.node,
                str(r.npus),
                _devices_cell(r.devices),
                r.record or "<none>",
                {True: "yes", False: "no", None: "-"}[r.match],
                "-" if r.images_per_s is None else f"{r.images_per_s:.1f}",
                _pct(r.top1),
                _pct(r.top5),
                f"{r.seconds:.0f}s",
                "PASS" if r.passed else "FAIL",
                r.reason,
            ]
        )
    return table


def validation_verdict(rows: Sequence[NodeValidation]) -> str:
    """The line under the table."""
    failed = [r.node for r in rows if not r.passed]
    if not failed:
        return f"{len(rows)} of {len(rows)} NPU node(s) passed"
    return f"{len(failed)} of {len(rows)} NPU node(s) failed: {', '.join(failed)}"
