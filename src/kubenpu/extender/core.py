"""Filter, prioritize and bind: the extender's decisions, from the engine.

Pure apart from :class:`KubeApi`, the few API calls bind needs, which the server gives
it (tests pass an in-memory fake). All cache access is under :attr:`Extender.lock`.

Bind and races (docs/extender.md): binds are serialised in-process, and every bind
(1) reserves its devices in the cache, so filters see them taken at once, (2) records
the placement on the pod with a PATCH guarded by the pod's resourceVersion, then (3)
reads afresh every placement recorded for that node (label ``kubenpu.io/node``) and backs
off if any device would be over-committed, and only then (4) creates the Binding. Two
binders (replicas, or one before and one after a restart) that race for a device each
write before they read, so at least one of them sees the other's record and backs off:
never both win.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from itertools import compress, repeat
from typing import Any, Protocol

import numpy as np

from kubenpu.adapters.kube import (
    placement_from_pod,
    placement_patch,
    pod_key,
    request_from_pod,
)
from kubenpu.engine import fit
from kubenpu.errors import KubeNpuError, ObjectError, PlacementError
from kubenpu.extender.cache import ClusterCache
from kubenpu.extender.metrics import ExtenderMetrics, reason_label
from kubenpu.extender.wire import (
    MAX_EXTENDER_PRIORITY,
    ExtenderArgs,
    ExtenderBindingArgs,
    ExtenderBindingResult,
    ExtenderFilterResult,
    HostPriorityList,
)
from kubenpu.model import Placement
from kubenpu.names import LABEL_PLACED_NODE, MILLI_PER_DEVICE

log = logging.getLogger(__name__)

#: Reasons no waiting or preemption can cure (kube-scheduler is told they are unresolvable).
_UNRESOLVABLE = ("no NPU devices", "NPU model")
UNKNOWN_NODE = "node not known to kubenpu yet"


class ApiError(KubeNpuError):
    """An API call failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Conflict(ApiError):
    """409: the object changed since it was read (optimistic concurrency)."""


class KubeApi(Protocol):
    """The API calls bind makes; raise ``ApiError`` (``Conflict`` on 409)."""

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """The Pod, read from the API server (not a cache)."""

    def patch_pod(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a JSON merge patch; return the updated Pod."""

    def list_pods(self, label_selector: str) -> list[dict[str, Any]]:
        """Pods matching the selector, read afresh (a consistent read)."""

    def bind_pod(self, namespace: str, name: str, uid: str, node: str) -> None:
        """Create the pod's Binding to ``node``."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def overcommitted(placements: Iterable[Placement]) -> str | None:
    """The first device whose recorded shares add up to more than one device, if any.

    A whole device is recorded as 1000 milli, so "held whole and shared" is over too.
    """
    used: dict[str, int] = defaultdict(int)
    holders: dict[str, list[str]] = defaultdict(list)
    for p in placements:
        for dev, share in zip(p.device_ids, p.shares_milli, strict=True):
            used[dev] += share
            holders[dev].append(p.pod)
            if used[dev] > MILLI_PER_DEVICE:
                return f"{dev} is held by {', '.join(holders[dev])} ({used[dev]} milli)"
    return None


class Extender:
    """Answers kube-scheduler's filter, prioritize and bind from a :class:`ClusterCache`."""

    def __init__(
        self,
        cache: ClusterCache,
        api: KubeApi | None = None,
        metrics: ExtenderMetrics | None = None,
        *,
        clock: Callable[[], str] = _now,
    ) -> None:
        self.cache = cache
        self.api = api
        self.metrics = metrics or ExtenderMetrics()
        self.lock = threading.RLock()
        self._bind_lock = threading.Lock()
        self._clock = clock
        self._recent_names: list[tuple[Any, list[str], np.ndarray]] = []

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
            self._count("filter", "unschedulable", "invalid_pod")
            return result
        with self.lock:
            self.cache.note_request(req)
            self.cache.engine()  # the task mix may have changed
            state = self.cache.state()
            idx = self._indices(names)
            with self.cache.released(key):
                ok = fit.feasible(state, req, None)
                # Index -1 (an unknown name) reads the appended False / -2.
                fits = np.append(ok, False)[idx]
                everyone = bool(fits.all())
                # Reasons only when some node fails (often none does).
                codes, reasons = (None, []) if everyone else fit.unfit_codes(state, req)
        passed = result["NodeNames"] = (
            list(names) if everyone else list(compress(names, fits.tolist()))
        )
        with self.lock:
            # prioritize is called with these names next: their rows are known (a copy,
            # as the caller owns the answer; equal lists compare in microseconds).
            self._remember_indices(state, list(passed), idx if everyone else idx[fits])
        failed = result["FailedNodes"]
        never: dict[str, str] = {}
        reasons_seen: Counter[str] = Counter()
        # Per reason at once (C loops): thousands of failing nodes cost little.
        node_codes = np.full(idx.size, -3) if codes is None else np.append(codes, -2)[idx]
        node_codes[fits] = -3
        for code in np.unique(node_codes).tolist():
            if code == -3:
                continue
            why = UNKNOWN_NODE if code == -2 else reasons[code] if code >= 0 else "does not fit"
            these = list(compress(names, (node_codes == code).tolist()))
            (never if why.startswith(_UNRESOLVABLE) else failed).update(dict.fromkeys(these, why))
            reasons_seen[why] += len(these)
        result["FailedAndUnresolvableNodes"] = never
        if passed:
            self._count("filter", "ok")
        else:
            top = reasons_seen.most_common(1)[0][0] if reasons_seen else "no nodes"
            self._count("filter", "unschedulable", reason_label(top))
        self.metrics.latency.labels("filter").observe(time.perf_counter() - started)
        return result

    def _indices(self, names: list[str]) -> np.ndarray:
        """Row of each name in the state (-1: unknown), remembered for the last few lists:
        kube-scheduler sends the same node names call after call."""
        state = self.cache.state()
        for i, (known_state, known_names, idx) in enumerate(self._recent_names):
            if known_state is state and (known_names is names or known_names == names):
                if i:
                    self._recent_names.insert(0, self._recent_names.pop(i))
                return idx
        index = state.node_index
        # map() with dict.get runs in C, several times faster than a generator.
        found = map(index.get, names, repeat(-1, len(names)))
        idx = np.fromiter(found, dtype=np.int64, count=len(names))
        self._remember_indices(state, names, idx)
        return idx

    def _remember_indices(self, state: Any, names: list[str], idx: np.ndarray) -> None:
        """Note ``idx`` as the rows of ``names`` in ``state`` (the last four lists)."""
        self._recent_names = [(state, names, idx), *self._recent_names[:3]]

    # -- prioritize ------------------------------------------------------------------

    def prioritize(self, args: ExtenderArgs, names: list[str]) -> HostPriorityList:
        """Scores 0..10: the engine's choice 10, the others 0..9 by the policy's score."""
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
        if key:
            with self.lock:
                engine = self.cache.engine()
                idx = self._indices(names)
                mask = np.zeros(engine.state.num_nodes, dtype=bool)
                mask[idx[idx >= 0]] = True
                with self.cache.released(key):
                    cycle = engine.cycle(req, mask)
                    raw = engine.profile.score(cycle) if cycle.candidates.size else None
                    rank = engine.rank
            if raw is not None:
                scores = _extender_scores(cycle.candidates, raw, rank, idx)
        self._count("prioritize", "ok")
        self.metrics.latency.labels("prioritize").observe(time.perf_counter() - started)
        return scores.tolist()

    # -- bind ------------------------------------------------------------------------

    def bind(self, args: ExtenderBindingArgs) -> ExtenderBindingResult:
        """Choose devices on the node, record them on the pod, then create the Binding."""
        started = time.perf_counter()
        try:
            with self._bind_lock:
                self._bind(args)
        except BindError as err:
            log.warning(
                "bind %s/%s to %s refused: %s",
                args["PodNamespace"],
                args["PodName"],
                args["Node"],
                err,
            )
            self._count("bind", "error", err.reason)
            return {"Error": str(err)}
        finally:
            self.metrics.latency.labels("bind").observe(time.perf_counter() - started)
        self._count("bind", "ok")
        return {"Error": ""}

    def _bind(self, args: ExtenderBindingArgs) -> None:
        if self.api is None:
            raise BindError("api_error", "this extender has no API access to bind with")
        ns, name, uid, node = args["PodNamespace"], args["PodName"], args["PodUID"], args["Node"]
        pod = self._call("get", lambda: self.api.get_pod(ns, name))  # type: ignore[union-attr]
        meta = pod.get("metadata") or {}
        if meta.get("uid") != uid:
            raise BindError("gone", f"pod {ns}/{name} is not the one scheduled (uid {uid})")
        bound_to = (pod.get("spec") or {}).get("nodeName")
        if bound_to:
            if bound_to == node:
                return  # a retried bind that already happened
            raise BindError("conflict", f"pod {ns}/{name} is already bound to {bound_to}")
        try:
            key, req = pod_key(pod), request_from_pod(pod)
            recorded = placement_from_pod(pod)
        except ObjectError as err:
            raise BindError("invalid_pod", str(err)) from None
        placement = self._reserve(key, uid, req, node, recorded, pod)
        try:
            body = placement_patch(
                placement,
                policy=self.cache.policy,
                assumed_at=self._clock(),
                resource_version=str(meta.get("resourceVersion", "")),
            )
            patched = self._call("patch", lambda: self.api.patch_pod(ns, name, body))  # type: ignore[union-attr]
            try:
                self._check_node(node, key, placement)
                self._call("binding", lambda: self.api.bind_pod(ns, name, uid, node))  # type: ignore[union-attr]
            except BindError:
                self._withdraw(ns, name, patched)
                raise
        except BindError as err:
            with self.lock:
                self.cache.delete_pod(key)
                self.cache.upsert_pod(pod)  # back to what the API had before this bind
                for other in err.learned:
                    if pod_key(other) != key:
                        self.cache.upsert_pod(other)
            raise
        log.info("bound %s to %s: devices %s", key, node, ",".join(placement.device_ids) or "-")

    def _reserve(
        self,
        key: str,
        uid: str,
        req: Any,
        node: str,
        recorded: Placement | None,
        pod: Mapping[str, Any],
    ) -> Placement:
        """Choose devices on ``node`` and hold them in the cache."""
        with self.lock:
            self.cache.upsert_pod(pod)
            engine = self.cache.engine()
            state = engine.state
            i = state.node_index.get(node)
            if i is None:
                raise BindError("unknown_node", f"node {node} is not known to kubenpu")
            with self.cache.released(key):
                if recorded is not None and recorded.node == node:
                    # Kept from an interrupted bind: the device plugin may already follow it.
                    placement = recorded
                    try:
                        self.cache.assume(key, uid, req, placement)
                        return placement
                    except PlacementError:
                        log.info("%s: its recorded placement no longer fits; choosing again", key)
                mask = np.zeros(state.num_nodes, dtype=bool)
                mask[i] = True
                cycle = engine.cycle(req, mask)
                if cycle.candidates.size == 0:
                    why = fit.explain_unfit(state, req, mask)
                    raise BindError("no_fit", f"pod {key} no longer fits on {node}: {why}")
                engine.profile.score(cycle)  # device policies keep their choice per node
                placement = engine.placement_on(cycle, i)
                self.cache.assume(key, uid, req, placement)
        return placement

    def _check_node(self, node: str, key: str, placement: Placement) -> None:
        """Fresh read of every placement recorded for ``node``; back off on over-commit."""
        selector = f"{LABEL_PLACED_NODE}={node}"
        pods = self._call("list", lambda: self.api.list_pods(selector))  # type: ignore[union-attr]
        others = []
        for pod in pods:
            try:
                if pod_key(pod) == key or (pod.get("status") or {}).get("phase") in (
                    "Succeeded",
                    "Failed",
                ):
                    continue
                other = placement_from_pod(pod)
            except ObjectError:
                continue
            if other is not None and other.node == node:
                others.append(other)
        problem = overcommitted([*others, placement])
        if problem is not None:
            err = BindError("race", f"another binder took a device on {node}: {problem}")
            err.learned = pods  # what the other binder recorded, for the cache
            raise err

    def _withdraw(self, ns: str, name: str, patched: Mapping[str, Any]) -> None:
        """Remove a record this bind wrote (guarded: only if nobody changed the pod since)."""
        version = str((patched.get("metadata") or {}).get("resourceVersion", ""))
        try:
            self.api.patch_pod(ns, name, placement_patch(None, resource_version=version))  # type: ignore[union-attr]
        except ApiError as err:
            # Left in place it only holds devices until the pod is bound or deleted.
            log.warning("could not remove the placement record of %s/%s: %s", ns, name, err)

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Conflict as err:
            raise BindError("conflict", f"{what}: the pod changed meanwhile ({err})") from None
        except ApiError as err:
            reason = "gone" if err.status == 404 else "api_error"
            raise BindError(reason, f"{what}: {err}") from None
        except Exception as err:  # no answer at all (connection refused, timeout)
            raise BindError("api_error", f"{what}: {err}") from None

    def _count(self, verb: str, result: str, reason: str = "") -> None:
        self.metrics.decisions.labels(verb, result).inc()
        if reason:
            self.metrics.failures.labels(verb, reason).inc()


class BindError(KubeNpuError):
    """A bind that must not (or could not) happen; ``reason`` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        #: Pods read from the API during the bind that the cache should take in.
        self.learned: list[dict[str, Any]] = []


def _extender_scores(
    candidates: np.ndarray, raw: np.ndarray, rank: np.ndarray, idx: np.ndarray
) -> np.ndarray:
    """Engine scores of the candidates -> 0..10 per asked name (the engine's pick gets 10).

    The engine's pick is the best score, ties broken by its fixed node rank, exactly as
    ``Engine.decide``; the others are scaled to 0..9 so that with the extender's weight
    kube-scheduler follows the engine.
    """
    best = np.flatnonzero(raw == raw.max())
    pick = int(candidates[best[np.argmin(rank[candidates[best]])]])
    lo, hi = float(raw.min()), float(raw.max())
    top = MAX_EXTENDER_PRIORITY - 1
    if hi > lo:
        scaled = np.floor(top * (raw - lo) / (hi - lo)).astype(np.int64)
    else:
        scaled = np.full(raw.size, top, dtype=np.int64)
    per_node = np.full(rank.size, -1, dtype=np.int64)
    per_node[candidates] = scaled
    per_node[pick] = MAX_EXTENDER_PRIORITY
    out = np.where(idx >= 0, per_node[np.maximum(idx, 0)], 0)
    return np.maximum(out, 0)
