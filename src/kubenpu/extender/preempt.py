"""The extender's ``preempt`` verb: device-aware victims for kube-scheduler's candidates.

kube-scheduler dry-runs the nodes that failed filter resolvably with its own counts, sends
the candidates (``NodeNameToMetaVictims``) and replaces them with the answer, then picks
one node and deletes its victims. Per node offered, :class:`Preempter` answers
``engine.preemption.select_victims`` over the pods the cache holds there; the candidates
are the pods bound there of strictly lower priority, each with kube-scheduler's own PDB
flag (computed here: kube-scheduler takes the answered ``NumPDBViolations`` as given).
Nodes where no eviction frees the devices are left out; where the pod already fits, the
scheduler's own victims stand. :class:`PodIndex` keeps what the cache does not (priority,
UID, labels, start time). The details, with the Go source's rules: docs/preemption.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubenpu.adapters.kube import pod_key, pod_priority, request_from_pod
from kubenpu.engine.preemption import Candidate, RunningPod, Victims, select_victims
from kubenpu.errors import ObjectError
from kubenpu.extender.core import Extender
from kubenpu.extender.wire import ExtenderPreemptionResult, MetaVictims
from kubenpu.model import Request

log = logging.getLogger(__name__)

#: Lists the cluster's PodDisruptionBudgets (policy/v1, as the API's JSON).
PdbLister = Callable[[], list[dict[str, Any]]]


# ---- what the cache does not keep --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodFacts:
    """What preemption needs to know of a pod beyond what the cache accounts."""

    uid: str
    namespace: str
    name: str
    #: ``spec.nodeName`` ("" while not bound).
    node: str
    priority: int
    labels: Mapping[str, str] = field(default_factory=dict)
    #: ``status.startTime`` in seconds since the epoch; inf when not started (kube-scheduler
    #: reads a missing start time as "now": later than any started pod).
    start_time: float = math.inf


def _start_time(value: object) -> float:
    if not isinstance(value, str) or not value:
        return math.inf
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return math.inf


def pod_facts(obj: Mapping[str, Any]) -> PodFacts:
    """A Pod object's :class:`PodFacts`; ``ObjectError`` if its priority is malformed."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    labels = meta.get("labels") or {}
    return PodFacts(
        uid=str(meta.get("uid") or ""),
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        node=str(spec.get("nodeName") or ""),
        priority=pod_priority(obj),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        start_time=_start_time((obj.get("status") or {}).get("startTime")),
    )


class PodIndex:
    """Pod key -> :class:`PodFacts`, fed by the pod informer beside the cache (callers
    hold the extender's lock, as for the cache)."""

    def __init__(self) -> None:
        self._pods: dict[str, PodFacts] = {}

    def __len__(self) -> int:
        return len(self._pods)

    def get(self, key: str) -> PodFacts | None:
        """The facts of the pod ``namespace/name``, if known."""
        return self._pods.get(key)

    def upsert(self, obj: Mapping[str, Any]) -> None:
        """Add or update a Pod (one that cannot be read is forgotten: never a victim)."""
        try:
            key = pod_key(obj)
        except ObjectError:
            return
        try:
            self._pods[key] = pod_facts(obj)
        except ObjectError as err:
            log.warning("pod %s is never a preemption victim: %s", key, err)
            self._pods.pop(key, None)

    def delete(self, key: str) -> None:
        """Forget a Pod."""
        self._pods.pop(key, None)

    def replace(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Make the pods exactly ``objs`` (after a fresh list)."""
        self._pods.clear()
        for obj in objs:
            self.upsert(obj)


# ---- PodDisruptionBudgets, as kube-scheduler reads them -----------------------------------


def _expression_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool | None:
    """One matchExpressions entry; None when it is invalid."""
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if not isinstance(key, str) or not isinstance(values, list):
        return None
    if op == "In":
        return labels.get(key) in values if values else None
    if op == "NotIn":
        return labels.get(key) not in values if values else None
    if op == "Exists":
        return key in labels if not values else None
    if op == "DoesNotExist":
        return key not in labels if not values else None
    return None


def selector_matches(selector: object, labels: Mapping[str, str]) -> bool:
    """A LabelSelector against a pod's labels; an empty, missing or invalid selector
    matches nothing (kube-scheduler's reading for PDBs in preemption)."""
    if not isinstance(selector, Mapping):
        return False
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        return False
    if not match_labels and not expressions:
        return False
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in expressions:
        ok = _expression_matches(expr, labels) if isinstance(expr, Mapping) else None
        if not ok:  # False, or None: invalid selectors match nothing
            return False
    return True


def more_important_first(pods: Iterable[PodFacts]) -> list[PodFacts]:
    """kube-scheduler's ``MoreImportantPod`` order: higher priority, then earlier start."""
    return sorted(pods, key=lambda p: (-p.priority, p.start_time, p.namespace, p.name))


def pdb_violations(pods: Sequence[PodFacts], pdbs: Sequence[Mapping[str, Any]]) -> set[str]:
    """The UIDs among ``pods`` (most important first) whose eviction violates a PDB, as
    kube-scheduler's ``FilterVictimsWithPDBViolation`` decides: each PDB's
    ``disruptionsAllowed`` is used up in that order; a pod matching a used-up PDB
    violates; pods in its ``disruptedPods`` do not count; pods without labels never
    violate."""
    allowed = []
    for pdb in pdbs:
        status = pdb.get("status") or {}
        value = status.get("disruptionsAllowed", 0)
        allowed.append(value if isinstance(value, int) else 0)
    out: set[str] = set()
    for pod in pods:
        if not pod.labels:
            continue
        for i, pdb in enumerate(pdbs):
            meta = pdb.get("metadata") or {}
            if meta.get("namespace") != pod.namespace:
                continue
            if not selector_matches((pdb.get("spec") or {}).get("selector"), pod.labels):
                continue
            if pod.name in ((pdb.get("status") or {}).get("disruptedPods") or {}):
                continue
            allowed[i] -= 1
            if allowed[i] < 0:
                out.add(pod.uid)
                break
    return out


# ---- the verb ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    """What preempt decided for one node offered (for the log and the tests)."""

    node: str
    #: The engine's victims; None: no eviction among the candidates helps.
    victims: Victims | None
    #: UIDs answered (empty: the node is left out).
    uids: tuple[str, ...]
    why: str


class Preempter:
    """Answers preempt from the extender's cache and a :class:`PodIndex`."""

    def __init__(self, extender: Extender, pods: PodIndex, pdbs: PdbLister | None = None) -> None:
        self.extender = extender
        self.pods = pods
        self._pdbs = pdbs

    def preempt(
        self, pod: Mapping[str, Any], offered: Mapping[str, MetaVictims]
    ) -> ExtenderPreemptionResult:
        """The victims per node (see the module text); nodes where none help left out."""
        answers = self.decide(pod, offered)
        kept: dict[str, MetaVictims] = {}
        for a in answers:
            if a.uids:
                num = a.victims.num_pdb_violations if a.victims and a.victims.pods else None
                if num is None:  # kube-scheduler's own victims, passed through
                    num = offered[a.node]["NumPDBViolations"]
                kept[a.node] = {"Pods": [{"UID": u} for u in a.uids], "NumPDBViolations": num}
        return {"NodeNameToMetaVictims": kept}

    def decide(
        self, pod: Mapping[str, Any], offered: Mapping[str, MetaVictims]
    ) -> list[NodeAnswer]:
        """Per node offered, in name order: the victims and why."""
        started = time.perf_counter()
        metrics = self.extender.metrics
        try:
            key, req, priority = pod_key(pod), request_from_pod(pod), pod_priority(pod)
        except ObjectError as err:
            log.info("preempt: no victims for a pod kubenpu cannot read: %s", err)
            metrics.count("preempt", "unschedulable", "invalid_pod")
            return [NodeAnswer(n, None, (), str(err)) for n in sorted(offered)]
        # Outside the lock: an API read (an error fails the call; kube-scheduler retries).
        pdbs = self._pdbs() if self._pdbs is not None and offered else []
        answers = []
        with self.extender.lock:
            cache = self.extender.cache
            state = cache.state()
            with cache.released(key):
                rows = {n: state.node_index.get(n) for n in offered}
                on_node: dict[int, list[str]] = {i: [] for i in rows.values() if i is not None}
                for name, holding in state.holdings.items():
                    if holding.node in on_node:
                        on_node[holding.node].append(name)
                for node in sorted(offered):
                    i = rows[node]
                    if i is None:
                        answers.append(NodeAnswer(node, None, (), "node not known to kubenpu"))
                        continue
                    answers.append(
                        self._node(req, priority, node, i, on_node[i], offered[node], pdbs)
                    )
        self._log(key, priority, req, offered, answers)
        result = "ok" if any(a.uids for a in answers) else "unschedulable"
        metrics.count("preempt", result, "" if result == "ok" else "no_victims")
        metrics.latency.labels("preempt").observe(time.perf_counter() - started)
        return answers

    def _node(
        self,
        req: Request,
        priority: int,
        node: str,
        i: int,
        keys: list[str],
        theirs: MetaVictims,
        pdbs: Sequence[Mapping[str, Any]],
    ) -> NodeAnswer:
        state = self.extender.cache.state()
        now = time.time()
        running: list[RunningPod] = []
        eligible: list[PodFacts] = []
        uid_of: dict[str, str] = {}
        for key in sorted(keys):
            holding = state.holdings[key]
            facts = self.pods.get(key)
            prio = facts.priority if facts is not None else 0
            start = facts.start_time if facts is not None else math.inf
            running.append(
                RunningPod(
                    holding.request, holding.placement, prio, start if start < math.inf else now
                )
            )
            # Only pods kube-scheduler has on this node can be named to it.
            if facts is not None and facts.uid and facts.node == node and prio < priority:
                eligible.append(facts)
                uid_of[key] = facts.uid
        violating = pdb_violations(more_important_first(eligible), pdbs) if pdbs else set()
        candidates = [Candidate(key, uid in violating) for key, uid in uid_of.items()]
        victims = select_victims(req, priority, state.nodes[i], running, candidates)
        if victims is None:
            why = f"no eviction of the {len(candidates)} lower-priority pods frees enough"
            return NodeAnswer(node, None, (), why)
        if not victims.pods:
            uids = tuple(p["UID"] for p in theirs["Pods"])
            why = "fits without evictions by kubenpu's count; kube-scheduler's own victims kept"
            return NodeAnswer(node, victims, uids, why)
        devices = state.device_ids(i, list(victims.slots)) if victims.slots else ()
        why = _why(req, devices, victims)
        return NodeAnswer(node, victims, tuple(uid_of[p.name] for p in victims.pods), why)

    def _log(
        self,
        key: str,
        priority: int,
        req: Request,
        offered: Mapping[str, MetaVictims],
        answers: Sequence[NodeAnswer],
    ) -> None:
        for a in answers:
            theirs = len(offered[a.node]["Pods"])
            if a.uids and a.victims is not None and a.victims.pods:
                log.info(
                    "preempt %s (priority %d) on %s: evict %s: %s (kube-scheduler's count "
                    "chose %d)",
                    key,
                    priority,
                    a.node,
                    ", ".join(f"{p.name} (priority {p.priority})" for p in a.victims.pods),
                    a.why,
                    theirs,
                )
            else:
                log.info("preempt %s (priority %d) on %s: %s", key, priority, a.node, a.why)


def _why(req: Request, devices: Sequence[str], victims: Victims) -> str:
    if req.npus:
        what = f"frees {', '.join(devices)} whole for {req.npus} NPU"
    elif req.share_milli:
        what = f"frees {req.share_milli // 10} percent on {', '.join(devices)}"
    else:
        what = "frees CPU and memory"
    if victims.num_pdb_violations:
        what += f"; {victims.num_pdb_violations} of them violate a PodDisruptionBudget"
    if not victims.exact:
        what += " (search budget spent: minimal, maybe not the best)"
    return what
