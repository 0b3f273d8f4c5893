"""Filter and prioritize from the engine's own steps; bind is :mod:`binder`'s.

Members of a gang (a Workload API PodGroup with a gang policy) are decided by
:class:`gangs.GangBook`: all at once at the first member's filter, the plan then held; every
other decision sees the planned devices taken.

Nodes whose NPUs the DRA driver serves (label ``kubenpu.io/npu-driver=dra``,
:meth:`ClusterCache.dra_rows`) are not kubenpu's to filter: kube-scheduler's own
DynamicResources plugin allocates their devices, so filter passes them. Prioritize rates
them with the engine like every node, from the NPUs of their ResourceSlices and what the
allocated claims hold (the cache keeps both); a DRA node whose slice kubenpu has not seen
gets :data:`DRA_SCORE`. Pure: the cache is all they read, under :attr:`Extender.lock`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from itertools import compress, repeat
from typing import Any

import numpy as np

from kubenpu.adapters.kube import pod_key, request_from_pod
from kubenpu.adapters.podgroup import GangPolicy, pod_group_of
from kubenpu.engine.fit import REASONS
from kubenpu.engine.framework import Scored
from kubenpu.engine.state import ClusterState
from kubenpu.errors import ApiError, ObjectError
from kubenpu.extender.api import KubeApi
from kubenpu.extender.binder import Binder, now
from kubenpu.extender.cache import ClusterCache
from kubenpu.extender.gangs import GangBook, Verdict
from kubenpu.extender.metrics import ExtenderMetrics
from kubenpu.extender.wire import (
    MAX_EXTENDER_PRIORITY,
    ExtenderArgs,
    ExtenderBindingArgs,
    ExtenderFilterResult,
    HostPriorityList,
)

UNKNOWN_NODE = "node not known to kubenpu yet"
#: Codes beside the engine's reason codes (>= 0): an unknown name, a node that fits.
_UNKNOWN, _FITS = -2, -3
#: Node name lists whose rows are remembered (kube-scheduler sends the same ones again).
_RECENT_LISTS = 4
#: Prioritize score of a DRA-served node whose NPUs kubenpu does not know (no slice seen
#: yet): 5, mid-scale. Below the engine's pick (10), so its choice keeps winning (weight
#: 50: by 250 points or more); above the candidates it rates poorly and the non-candidates
#: (0), so such a node is not buried behind every other node either.
DRA_SCORE = MAX_EXTENDER_PRIORITY // 2


class Extender:
    """Answers kube-scheduler's filter, prioritize and bind from a :class:`ClusterCache`."""

    def __init__(
        self,
        cache: ClusterCache,
        api: KubeApi | None = None,
        metrics: ExtenderMetrics | None = None,
        *,
        clock: Callable[[], str] = now,
        on_bound: Callable[[Mapping[str, Any]], None] | None = None,
        gang_policy: Callable[[str], GangPolicy | None] | None = None,
    ) -> None:
        self.cache = cache
        self.metrics = metrics or ExtenderMetrics()
        self.lock = threading.RLock()
        #: Gang members and plans (fed by the pod informer); gangs are only recognised
        #: with ``gang_policy``, the reader of a PodGroup's policy (``namespace/name``).
        self.gangs = GangBook()
        self._gang_policy = gang_policy
        self.binder = Binder(cache, self.lock, api, self.metrics, clock, on_bound, gangs=self.gangs)
        #: (state, names, their rows): the last few lists, most recent first.
        self._recent: list[tuple[ClusterState, list[str], np.ndarray]] = []

    # -- filter ----------------------------------------------------------------------

    def filter(self, args: ExtenderArgs, names: list[str]) -> ExtenderFilterResult:
        """The nodes among ``names`` that can take the pod, and a reason for each other."""
        started = time.perf_counter()
        pod = args["Pod"]
        result: ExtenderFilterResult = {
            "NodeNames": [],
            "FailedNodes": {},
            "FailedAndUnresolvableNodes": {},
            "Error": "",
        }
        try:
            key, req = pod_key(pod), request_from_pod(pod)
        except ObjectError as err:
            # The pod itself is wrong: no node will ever do.
            result["FailedAndUnresolvableNodes"] = dict.fromkeys(names, str(err))
            self.metrics.count("filter", "unschedulable", "invalid_pod")
            return result
        try:
            policy = self._policy_of(pod)
        except (ApiError, ObjectError) as err:
            result["FailedNodes"] = dict.fromkeys(names, str(err))
            self.metrics.count("filter", "unschedulable", "gang")
            return result
        with self.lock:
            self.cache.note_request(req)
            engine = self.cache.engine()  # the task mix may have changed
            rows = self._rows(engine.state, names)
            if policy is not None:
                among = np.zeros(engine.state.num_nodes, dtype=bool)
                among[rows[rows >= 0]] = True
                among &= ~self.cache.dra_rows()  # the engine plans device-plugin nodes
                verdict = self.gangs.verdict(engine, key, req, policy, among)
                if verdict.placement is not None or verdict.why:
                    dra = np.append(self.cache.dra_rows(), False)[rows]
                    return self._gang_filter(result, names, verdict, dra, started)
            with self.cache.released(key), self.gangs.held(engine.state, key):
                # Row -1 (an unknown name) reads the appended False / _UNKNOWN. DRA nodes
                # pass unjudged: kube-scheduler's DynamicResources plugin decides for them.
                fits = np.append(engine.filter(req) | self.cache.dra_rows(), False)[rows]
                everyone = bool(fits.all())
                # Reasons only when some node fails (often none does).
                codes = None if everyone else np.append(engine.reasons(req), _UNKNOWN)[rows]
            if everyone:
                passed = list(names)  # whose rows _rows just remembered
            else:
                passed = list(compress(names, fits.tolist()))
                # prioritize is called with these names next: their rows are known.
                self._remember(engine.state, passed, rows[fits])
        result["NodeNames"] = passed
        labels: Counter[str] = Counter()
        if codes is not None:
            failed, never = result["FailedNodes"], result["FailedAndUnresolvableNodes"]
            codes[fits] = _FITS
            # Per reason at once (C loops): thousands of failing nodes cost little.
            for code in np.unique(codes).tolist():
                if code == _FITS:
                    continue
                these = list(compress(names, (codes == code).tolist()))
                if code == _UNKNOWN:
                    why, label, unresolvable = UNKNOWN_NODE, "unknown_node", False
                elif code < 0:  # filter and reasons disagree: cannot happen
                    why, label, unresolvable = "does not fit", "other", False
                else:
                    reason = REASONS[code]
                    why, label, unresolvable = reason.text(req), reason.value, reason.unresolvable
                (never if unresolvable else failed).update(dict.fromkeys(these, why))
                labels[label] += len(these)
        if passed:
            self.metrics.count("filter", "ok")
        else:
            top = labels.most_common(1)[0][0] if labels else "other"
            self.metrics.count("filter", "unschedulable", top)
        self.metrics.latency.labels("filter").observe(time.perf_counter() - started)
        return result

    def _policy_of(self, pod: Mapping[str, Any]) -> GangPolicy | None:
        """The gang policy of the pod's PodGroup; None: not a gang member (or gangs are
        not recognised). Raises ``ApiError``/``ObjectError`` if it cannot be read."""
        group = pod_group_of(pod)
        if group is None or self._gang_policy is None:
            return None
        try:
            return self._gang_policy(group)
        except ApiError as err:
            raise ApiError(f"pod group {group} cannot be read: {err}", err.status) from None

    def _gang_filter(
        self,
        result: ExtenderFilterResult,
        names: list[str],
        verdict: Verdict,
        dra: np.ndarray,
        started: float,
    ) -> ExtenderFilterResult:
        """A gang member's filter: its planned node only; with no plan, no device-plugin
        node (saying why) and the DRA nodes (``dra``, per name), which are not kubenpu's
        to judge."""
        planned = verdict.placement
        if planned is None:
            result["NodeNames"] = list(compress(names, dra.tolist()))
            result["FailedNodes"] = {
                n: verdict.why for n, d in zip(names, dra.tolist(), strict=True) if not d
            }
            if result["NodeNames"]:
                self.metrics.count("filter", "ok")
            else:
                self.metrics.count("filter", "unschedulable", "gang")
        else:
            why = f"planned for its gang on {planned.node}"
            result["NodeNames"] = [n for n in names if n == planned.node]
            result["FailedNodes"] = {n: why for n in names if n != planned.node}
            if result["NodeNames"]:
                self.metrics.count("filter", "ok")
            else:
                self.metrics.count("filter", "unschedulable", "gang")
        self.metrics.latency.labels("filter").observe(time.perf_counter() - started)
        return result

    def _rows(self, state: ClusterState, names: list[str]) -> np.ndarray:
        """Row of each name in ``state`` (-1: unknown), remembered for the last few lists."""
        for i, (known_state, known_names, rows) in enumerate(self._recent):
            if known_state is state and known_names == names:
                if i:
                    self._recent.insert(0, self._recent.pop(i))
                return rows
        # map() with dict.get runs in C, several times faster than a generator.
        found = map(state.node_index.get, names, repeat(-1, len(names)))
        rows = np.fromiter(found, dtype=np.int64, count=len(names))
        self._remember(state, names, rows)
        return rows

    def _remember(self, state: ClusterState, names: list[str], rows: np.ndarray) -> None:
        """Note ``rows`` as the rows of ``names`` in ``state`` (a copy: callers own lists)."""
        self._recent = [(state, list(names), rows), *self._recent[: _RECENT_LISTS - 1]]

    # -- prioritize ------------------------------------------------------------------

    def prioritize(self, args: ExtenderArgs, names: list[str]) -> HostPriorityList:
        """Scores 0..10: the engine's choice 10, the others 0..9 by the policy's score,
        DRA nodes :data:`DRA_SCORE`."""
        scores = self.scores(args, names)
        return [{"Host": n, "Score": s} for n, s in zip(names, scores, strict=True)]

    def scores(self, args: ExtenderArgs, names: list[str]) -> list[int]:
        """The prioritize scores of ``names``, in order (the server encodes them itself)."""
        started = time.perf_counter()
        pod = args["Pod"]
        scores = np.zeros(len(names), dtype=np.int64)
        try:
            key, req = pod_key(pod), request_from_pod(pod)
        except ObjectError:
            key = ""
        with self.lock:
            planned = self.gangs.planned(key) if key else None
        if planned is not None:
            scores[[n == planned.node for n in names]] = MAX_EXTENDER_PRIORITY
        elif key:
            with self.lock:
                engine = self.cache.engine()
                rows = self._rows(engine.state, names)
                unknown = self.cache.dra_rows_unknown()
                among = np.zeros(engine.state.num_nodes, dtype=bool)
                among[rows[rows >= 0]] = True
                among &= ~unknown  # DRA nodes without a slice: the engine sees no NPUs
                with self.cache.released(key), self.gangs.held(engine.state, key):
                    scored = engine.score(req, among)
            if scored.pick >= 0:
                scores = _extender_scores(scored, rows)
            scores[np.append(unknown, False)[rows]] = DRA_SCORE
        self.metrics.count("prioritize", "ok")
        self.metrics.latency.labels("prioritize").observe(time.perf_counter() - started)
        return scores.tolist()

    # -- bind ------------------------------------------------------------------------

    def bind(self, args: ExtenderBindingArgs) -> None:
        """Bind the pod (:meth:`binder.Binder.bind`); raises ``BindError`` if it must not."""
        self.binder.bind(args)


def _extender_scores(scored: Scored, rows: np.ndarray) -> np.ndarray:
    """The engine's scores -> 0..10 per asked row: its pick 10, the other candidates
    scaled to 0..9 (with the extender's weight kube-scheduler follows the engine), the
    rest 0."""
    raw, candidates = scored.scores, scored.cycle.candidates
    lo, hi = float(raw.min()), float(raw.max())
    top = MAX_EXTENDER_PRIORITY - 1
    if hi > lo:
        scaled = np.floor(top * (raw - lo) / (hi - lo)).astype(np.int64)
    else:
        scaled = np.full(raw.size, top, dtype=np.int64)
    per_node = np.zeros(scored.cycle.state.num_nodes, dtype=np.int64)
    per_node[candidates] = scaled
    per_node[scored.pick] = MAX_EXTENDER_PRIORITY
    out: np.ndarray = np.where(rows >= 0, per_node[np.maximum(rows, 0)], 0)
    return out
