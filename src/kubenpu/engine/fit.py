"""Filter: which nodes can take a request, and why the others cannot.

The arithmetic is vectorised over all nodes; reasons are only worked out when asked for
(the fast path of a simulator needs the mask alone).
"""

from __future__ import annotations

import enum
from collections import Counter

import numpy as np

from kubenpu.engine.state import FULL, ClusterState
from kubenpu.model import Request
from kubenpu.names import RESOURCE_NPU, RESOURCE_NPU_CORE, RESOURCE_NPU_MEM


class Reason(enum.Enum):
    """Why a node cannot take a request, in the order a user would fix them.

    The value is a short label (for metrics); :meth:`text` is the human text.
    """

    NO_NPU = "no_npu"
    MODEL = "model"
    UNHEALTHY = "unhealthy"
    NPU = "npu"
    NPU_CORE = "npu_core"
    NPU_MEM = "npu_mem"
    CPU = "cpu"
    MEMORY = "memory"

    @property
    def unresolvable(self) -> bool:
        """No waiting or preemption can cure it (the node has no NPU, or another model)."""
        return self is Reason.NO_NPU or self is Reason.MODEL

    def text(self, req: Request) -> str:
        """The reason for ``req`` in kube-scheduler's words, e.g. ``Insufficient cpu``."""
        # "percent", not "%": kube-scheduler formats reasons as printf formats (extender/wire.py).
        pct = -(-req.share_milli // 10)
        with_free_core = f"NPU with {pct} percent free core"
        texts = {
            Reason.NO_NPU: "no NPU devices",
            Reason.MODEL: f"NPU model not {'|'.join(sorted(req.models))}",
            Reason.UNHEALTHY: f"fewer than {req.npus} healthy {RESOURCE_NPU}",
            Reason.NPU: f"Insufficient {RESOURCE_NPU}",
            Reason.NPU_CORE: f"Insufficient {RESOURCE_NPU_CORE}: no {with_free_core}",
            Reason.NPU_MEM: f"Insufficient {RESOURCE_NPU_MEM} on any {with_free_core}",
            Reason.CPU: "Insufficient cpu",
            Reason.MEMORY: "Insufficient memory",
        }
        return texts[self]


#: Every reason, by its code (the position :func:`unfit_codes` gives).
REASONS: tuple[Reason, ...] = tuple(Reason)


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


def unfit_codes(state: ClusterState, req: Request) -> np.ndarray:
    """Per node, the code (position in :data:`REASONS`) of the first reason that rules it
    out for ``req``, in :class:`Reason` order; -1 where it fits."""
    wants = req.wants_devices
    checks: list[tuple[np.ndarray | np.bool | bool, Reason]] = [
        (wants & (state.num_devices == 0), Reason.NO_NPU),
        (wants & ~state.models_mask(req.models), Reason.MODEL),
    ]
    if req.npus:
        checks += [
            (state.dev_healthy.sum(axis=1) < req.npus, Reason.UNHEALTHY),
            (state.full_free < req.npus, Reason.NPU),
        ]
    elif req.share_milli:
        checks.append((~(state.dev_free >= req.share_milli).any(axis=1), Reason.NPU_CORE))
        if req.share_memory_mib:  # else a device with the core free fits
            checks.append((~device_fit(state, req).any(axis=1), Reason.NPU_MEM))
    checks += [
        (state.cpu_free < req.cpu_milli, Reason.CPU),
        (state.mem_free < req.memory_mib, Reason.MEMORY),
    ]
    conds = [np.broadcast_to(c, (state.num_nodes,)) for c, _ in checks]
    codes: np.ndarray = np.select(conds, [REASONS.index(r) for _, r in checks], default=-1)
    return codes


def unfit_reasons(
    state: ClusterState, req: Request, among: np.ndarray | None = None
) -> Counter[str]:
    """Count, per reason's text, the nodes that cannot take ``req`` (see ``unfit_codes``)."""
    code = unfit_codes(state, req)
    if among is not None:
        code = code[among]
    counts = np.bincount(code[code >= 0], minlength=len(REASONS))
    return Counter({REASONS[i].text(req): int(n) for i, n in enumerate(counts) if n})


def explain_unfit(state: ClusterState, req: Request, among: np.ndarray | None = None) -> str:
    """One line in kube-scheduler's style: ``0/3 nodes are available: 2 ..., 1 ...``."""
    total = state.num_nodes if among is None else int(among.sum())
    reasons = unfit_reasons(state, req, among)
    parts = [f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
    fit = total - sum(reasons.values())
    return f"{fit}/{total} nodes are available: " + ", ".join(parts) + "."
