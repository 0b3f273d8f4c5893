"""Filter: which nodes can take a request, and why the others cannot.

The arithmetic is vectorised over all nodes; reasons are only counted when asked for
(the fast path of a simulator needs the mask alone).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from kubenpu.engine.state import FULL, ClusterState
from kubenpu.model import Request
from kubenpu.names import RESOURCE_NPU, RESOURCE_NPU_CORE, RESOURCE_NPU_MEM


def device_fit(state: ClusterState, req: Request, rows: np.ndarray | None = None) -> np.ndarray:
    """Per node (all, or only ``rows``) and device slot: can the slot serve its part of ``req``."""
    free = state.dev_free if rows is None else state.dev_free[rows]
    if req.npus:
        whole: np.ndarray = free == FULL  # ndarray.__eq__ is typed as returning Any
        return whole
    fits = free >= req.share_milli
    if req.share_memory_mib:
        mem = state.dev_mem_free if rows is None else state.dev_mem_free[rows]
        fits &= mem >= req.share_memory_mib
    return fits


def feasible(state: ClusterState, req: Request, among: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of nodes that can take ``req`` now (optionally only ``among`` these)."""
    ok = (state.cpu_free >= req.cpu_milli) & (state.mem_free >= req.memory_mib)
    if among is not None:
        ok &= among
    if req.wants_devices:
        ok &= state.models_mask(req.models)
        if req.npus:
            ok &= state.full_free >= req.npus
        else:
            ok &= device_fit(state, req).any(axis=1)
    return ok


def unfit_codes(state: ClusterState, req: Request) -> tuple[np.ndarray, list[str]]:
    """Per node, the index into the returned reasons of why it cannot take ``req`` (-1: fits).

    Each node is charged to the first reason that rules it out, in the order a user would
    fix them: no NPU at all, wrong model, too few devices, device capacity, CPU, memory.
    """
    # "percent", not "%": kube-scheduler formats reasons as printf formats (extender/wire.py).
    pct = -(-req.share_milli // 10)
    wants = req.wants_devices
    healthy = state.dev_healthy.sum(axis=1)
    checks: list[tuple[np.ndarray | np.bool | bool, str]] = [
        (wants & (state.num_devices == 0), "no NPU devices"),
        (wants & ~state.models_mask(req.models), f"NPU model not {'|'.join(sorted(req.models))}"),
    ]
    if req.npus:
        checks += [
            (healthy < req.npus, f"fewer than {req.npus} healthy {RESOURCE_NPU}"),
            (state.full_free < req.npus, f"Insufficient {RESOURCE_NPU}"),
        ]
    elif req.share_milli:
        core_fit = (state.dev_free >= req.share_milli).any(axis=1)
        checks += [
            (~core_fit, f"Insufficient {RESOURCE_NPU_CORE}: no NPU with {pct} percent free core"),
            (
                ~device_fit(state, req).any(axis=1),
                f"Insufficient {RESOURCE_NPU_MEM} on any NPU with {pct} percent free core",
            ),
        ]
    checks += [
        (state.cpu_free < req.cpu_milli, "Insufficient cpu"),
        (state.mem_free < req.memory_mib, "Insufficient memory"),
    ]
    conds = [np.broadcast_to(c, (state.num_nodes,)) for c, _ in checks]
    code = np.select(conds, list(range(len(checks))), default=-1)
    return code, [why for _, why in checks]


def unfit_reasons(
    state: ClusterState, req: Request, among: np.ndarray | None = None
) -> Counter[str]:
    """Count, per reason, the nodes that cannot take ``req`` (see ``unfit_codes``)."""
    code, reasons = unfit_codes(state, req)
    if among is not None:
        code = code[among]
    counts = np.bincount(code[code >= 0], minlength=len(reasons))
    return Counter({reasons[i]: int(n) for i, n in enumerate(counts) if n})


def explain_unfit(state: ClusterState, req: Request, among: np.ndarray | None = None) -> str:
    """One line in kube-scheduler's style: ``0/3 nodes are available: 2 ..., 1 ...``."""
    total = state.num_nodes if among is None else int(among.sum())
    reasons = unfit_reasons(state, req, among)
    parts = [f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
    fit = total - sum(reasons.values())
    return f"{fit}/{total} nodes are available: " + ", ".join(parts) + "."
