"""An upper bound on the allocation any policy can reach in the arrival-only experiment.

Every policy ends with some subset of the arrived NPU pods placed. Whatever it is, that
subset packs into the cluster, so it also satisfies these relaxed constraints, written per
class of identical nodes (same CPU, memory, model, healthy devices and device memory) and
class of identical pods, with ``x[p, c]`` pods of class ``p`` on nodes of class ``c``:

* CPU and memory: what the pods ask is within the class's total;
* compute: shares plus 1000 per whole device are within 1000 per healthy device;
* devices: whole devices plus shares over 500 (each needs a device of its own) are within
  the healthy devices;
* NPU memory: shares' memory is within the devices' memory, less the smallest device's
  memory for each device taken whole;
* a pod only goes where one node alone could take it (model, CPU, memory, devices);
* no class places more pods than arrived.

The most device compute under them bounds every policy's allocation. Solved as an integer
program (HiGHS through scipy) with a time limit; when the limit stops it, the solver's
proven dual bound is used, which is still an upper bound; the LP relaxation backs it up.
Pods without NPUs are left out: dropping them never makes a packing infeasible.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import coo_array

from kubenpu.engine.state import FULL
from kubenpu.model import Node, Request

#: Shares over this (milli) cannot share a device with one another.
_HALF = FULL // 2


@dataclass(frozen=True)
class Bound:
    """The bound, as allocated device compute (milli) and percent of all device compute."""

    milli: int
    pct: float
    #: "milp" (proven optimum of the relaxation), "milp-dual" (time limit hit: the
    #: solver's dual bound) or "lp" (the continuous relaxation).
    method: str


@dataclass(frozen=True)
class _NodeClass:
    cpu: int
    mem: int
    model: str
    devices: int
    device_mem_total: int
    device_mem_min: int


def _node_class(node: Node) -> _NodeClass:
    healthy = [d for d in node.devices if d.healthy]
    mems = [d.memory_mib for d in healthy]
    return _NodeClass(
        cpu=node.cpu_milli,
        mem=node.memory_mib,
        model=node.model,
        devices=len(healthy),
        device_mem_total=sum(mems),
        device_mem_min=min(mems, default=0),
    )


def _fits_alone(pod: Request, c: _NodeClass) -> bool:
    if pod.cpu_milli > c.cpu or pod.memory_mib > c.mem or c.devices == 0:
        return False
    if pod.models and c.model not in pod.models:
        return False
    if pod.npus:
        return pod.npus <= c.devices
    return pod.share_memory_mib <= c.device_mem_total


def allocation_bound(
    nodes: Sequence[Node], pods: Sequence[Request], *, time_limit_s: float = 20.0
) -> Bound:
    """The most device compute of ``pods`` (arrived, in any order) the cluster can hold."""
    capacity = sum(len(n.devices) for n in nodes) * FULL
    node_classes = Counter(_node_class(n) for n in nodes if n.devices)
    pod_classes = Counter(
        (p.cpu_milli, p.memory_mib, p.npus, p.share_milli, p.share_memory_mib, p.models)
        for p in pods
        if p.wants_devices
    )
    classes = list(node_classes)
    shapes = list(pod_classes)
    pairs = [
        (s, c)
        for s, shape in enumerate(shapes)
        for c, cls in enumerate(classes)
        if _fits_alone(Request("bound", *shape), cls)
    ]
    if not pairs or capacity == 0:
        return Bound(0, 0.0, "milp")  # nothing can be placed: 0 is the exact optimum
    worth = np.array([shapes[s][2] * FULL + shapes[s][3] for s, _ in pairs], dtype=float)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    upper: list[float] = []

    def row(entries: list[tuple[int, float]], limit: float) -> None:
        r = len(upper)
        for col, val in entries:
            if val:
                rows.append(r)
                cols.append(col)
                vals.append(val)
        upper.append(limit)

    by_class: dict[int, list[int]] = {}
    by_shape: dict[int, list[int]] = {}
    for k, (s, c) in enumerate(pairs):
        by_class.setdefault(c, []).append(k)
        by_shape.setdefault(s, []).append(k)
    for c, ks in by_class.items():
        cls, count = classes[c], node_classes[classes[c]]
        take = [shapes[pairs[k][0]] for k in ks]
        row([(k, t[0]) for k, t in zip(ks, take, strict=True)], count * cls.cpu)
        row([(k, t[1]) for k, t in zip(ks, take, strict=True)], count * cls.mem)
        row(
            [(k, t[2] * FULL + t[3]) for k, t in zip(ks, take, strict=True)],
            count * cls.devices * FULL,
        )
        row(
            [(k, t[2] + (t[3] > _HALF)) for k, t in zip(ks, take, strict=True)],
            count * cls.devices,
        )
        row(
            [(k, t[4] + t[2] * cls.device_mem_min) for k, t in zip(ks, take, strict=True)],
            count * cls.device_mem_total,
        )
    for s, ks in by_shape.items():
        row([(k, 1.0) for k in ks], pod_classes[shapes[s]])
    a = coo_array((vals, (rows, cols)), shape=(len(upper), len(pairs))).tocsr()
    best = _solve(worth, a, np.array(upper, dtype=float), time_limit_s)
    milli, method = best
    return Bound(milli, round(100 * milli / capacity, 4), method)


def _solve(worth: np.ndarray, a: object, upper: np.ndarray, time_limit_s: float) -> tuple[int, str]:
    constraint = LinearConstraint(a, -np.inf, upper)
    result = milp(
        -worth,
        constraints=constraint,
        integrality=np.ones(len(worth)),
        bounds=Bounds(0, np.inf),
        options={"time_limit": time_limit_s, "disp": False},
    )
    if result.status == 0 and result.fun is not None:
        return round(-result.fun), "milp"
    dual = getattr(result, "mip_dual_bound", None)
    if dual is not None and np.isfinite(dual):
        # The dual bound of a maximisation posed as a minimisation: floor of its negation.
        return int(np.floor(-dual + 1e-6)), "milp-dual"
    lp = linprog(-worth, A_ub=a, b_ub=upper, bounds=(0, None), method="highs")
    if lp.status != 0:
        raise RuntimeError(f"the bound's LP did not solve: {lp.message}")
    return int(np.floor(-lp.fun + 1e-6)), "lp"
