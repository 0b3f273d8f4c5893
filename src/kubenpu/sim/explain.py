"""Where the unallocated NPU capacity sits at the end of a replay, and why.

Every milli of device compute not held by a pod is charged to exactly one cause, so the
causes add up to the unallocated total:

- ``unhealthy``: the device is unhealthy.
- ``no demand``: no pod was turned away, so nothing wanted it.
- ``model``: none of the turned-away pods allows the node's device model.
- ``cpu`` / ``memory``: the node's free CPU (memory) is too small for the turned-away
  pods that allow its model.
- ``fractional``: free compute on partly used devices that the turned-away pods, though
  their CPU, memory and model fit, cannot use (shares too big, or whole NPUs asked).
- ``whole devices``: fully free devices on such a node, too few for the turned-away
  multi-NPU pods.

Each node with free compute is charged to the reason most turned-away pods share there
(model, then CPU, then memory, then devices, on ties).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from kubenpu.engine.state import FULL, ClusterState
from kubenpu.model import Request

CAUSES = ("unhealthy", "no demand", "model", "cpu", "memory", "fractional", "whole devices")


_MODEL, _CPU, _MEMORY, _DEVICES = range(4)


def _first_reasons(state: ClusterState, pods: Sequence[Request]) -> np.ndarray:
    """[pods, nodes]: why each turned-away pod cannot use each node (model, CPU, memory,
    else its devices), checked in that order."""
    code = np.empty((len(pods), state.num_nodes), dtype=np.int64)
    for k, req in enumerate(pods):
        code[k] = np.select(
            [
                ~state.models_mask(req.models),
                state.cpu_free < req.cpu_milli,
                state.mem_free < req.memory_mib,
            ],
            [_MODEL, _CPU, _MEMORY],
            default=_DEVICES,
        )
    return code


def explain(state: ClusterState, turned_away: Sequence[Request]) -> dict[str, int]:
    """Unallocated device compute (milli) per cause; the values add up to the total free."""
    out = Counter({cause: 0 for cause in CAUSES})
    sick = state.dev_exists & ~state.dev_healthy
    out["unhealthy"] = int((FULL - state.dev_used)[sick & ~state.dev_whole].sum())
    free = state.dev_free
    npu_pods = [p for p in turned_away if p.wants_devices]
    if not npu_pods:
        out["no demand"] = int(free.sum())
        return dict(out)
    reasons = _first_reasons(state, npu_pods)
    by_cause = {_MODEL: "model", _CPU: "cpu", _MEMORY: "memory"}
    for i in np.flatnonzero(state.free_total > 0):
        # The reason most turned-away pods share; ties go to the earlier check.
        counts = np.bincount(reasons[:, i], minlength=4)
        top = int(np.argmax(counts))
        if top == _DEVICES:
            row = free[i]
            out["fractional"] += int(row[(row > 0) & (row < FULL)].sum())
            out["whole devices"] += int(row[row == FULL].sum())
        else:
            out[by_cause[top]] += int(state.free_total[i])
    return dict(out)
