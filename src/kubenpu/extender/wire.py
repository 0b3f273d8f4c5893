"""The kube-scheduler extender API (``k8s.io/kube-scheduler/extender/v1``) as typed JSON.

The Go types carry no JSON tags, so the field names are the Go names (``Pod``,
``NodeNames``, ``FailedNodes`` ...). Scores are 0..``MAX_EXTENDER_PRIORITY``. JSON is read
and written with orjson; only the prioritize answer is joined by hand (from per-name
pieces: several times faster than building thousands of dicts for any encoder).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NotRequired, TypedDict

import orjson

from kubenpu.errors import WireError

#: kube-scheduler's MaxExtenderPriority: extender scores are 0..10.
MAX_EXTENDER_PRIORITY = 10


class ExtenderArgs(TypedDict):
    """Body of a filter or prioritize call."""

    Pod: dict[str, Any]
    #: Full Node objects; only when the extender is not nodeCacheCapable.
    Nodes: NotRequired[dict[str, Any] | None]
    #: Node names; only when the extender is nodeCacheCapable (kubenpu's configuration).
    NodeNames: NotRequired[list[str] | None]


class ExtenderFilterResult(TypedDict):
    """Answer to filter: the nodes that fit, and why each other one does not."""

    Nodes: NotRequired[dict[str, Any] | None]
    NodeNames: NotRequired[list[str] | None]
    FailedNodes: dict[str, str]
    #: Nodes that no preemption can make fit (kube-scheduler does not try them).
    FailedAndUnresolvableNodes: dict[str, str]
    Error: str


class HostPriority(TypedDict):
    """One node's score in a prioritize answer."""

    Host: str
    Score: int


HostPriorityList = list[HostPriority]


class ExtenderBindingArgs(TypedDict):
    """Body of a bind call."""

    PodName: str
    PodNamespace: str
    PodUID: str
    Node: str


class ExtenderBindingResult(TypedDict):
    """Answer to bind; an empty ``Error`` means bound."""

    Error: str


def decode(raw: bytes) -> Any:
    """A request body's JSON; ``WireError`` if it is not JSON (or nested too deeply)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise WireError(f"body is not JSON: {err}") from None


def encode(data: Any) -> bytes:
    """Compact JSON (UTF-8, not ASCII-escaped: Go reads either)."""
    return orjson.dumps(data)


def _string(data: dict[str, Any], key: str, *, empty: bool = False) -> str:
    value = data.get(key)
    if not isinstance(value, str) or (not value and not empty):
        raise WireError(f"{key} must be a non-empty string, got {value!r}"[:200])
    return value


def _strings(value: object) -> bool:
    """``value`` is a list of strings (join is one C loop that fails on anything else)."""
    if not isinstance(value, list):
        return False
    try:
        "".join(value)
    except TypeError:
        return False
    return True


def parse_extender_args(
    data: object, recent: NameLists | None = None
) -> tuple[ExtenderArgs, list[str]]:
    """Validate a filter/prioritize body; return it and its candidate node names.

    ``recent``: NodeNames equal to one of these lists is that list (validated before);
    another valid one is added to them.
    """
    if not isinstance(data, dict):
        raise WireError(f"ExtenderArgs must be a JSON object, not {type(data).__name__}")
    pod = data.get("Pod")
    if not isinstance(pod, dict) or not isinstance(pod.get("metadata"), dict):
        raise WireError("ExtenderArgs.Pod must be a Pod object with metadata")
    names = data.get("NodeNames")
    nodes = data.get("Nodes")
    if names is not None:
        known = None if recent is None else recent.find(names)
        if known is not None:
            names = known
        elif not _strings(names):
            raise WireError("ExtenderArgs.NodeNames must be a list of strings")
        elif recent is not None:
            recent.add(names)
        found = names
    elif nodes is not None:
        items = nodes.get("items") if isinstance(nodes, dict) else None
        if not isinstance(items, list):
            raise WireError("ExtenderArgs.Nodes must be a NodeList with items")
        found = []
        for item in items:
            meta = item.get("metadata") if isinstance(item, dict) else None
            name = meta.get("name") if isinstance(meta, dict) else None
            if not isinstance(name, str):
                raise WireError("ExtenderArgs.Nodes.items[] needs metadata.name")
            found.append(name)
    else:
        raise WireError("ExtenderArgs needs NodeNames (nodeCacheCapable) or Nodes")
    args: ExtenderArgs = {"Pod": pod, "Nodes": nodes, "NodeNames": names}
    return args, found


def parse_binding_args(data: object) -> ExtenderBindingArgs:
    """Validate a bind body."""
    if not isinstance(data, dict):
        raise WireError(f"ExtenderBindingArgs must be a JSON object, not {type(data).__name__}")
    return {
        "PodName": _string(data, "PodName"),
        "PodNamespace": _string(data, "PodNamespace"),
        "PodUID": _string(data, "PodUID"),
        "Node": _string(data, "Node"),
    }


#: Stands in for ``%`` in text kube-scheduler formats: the FULLWIDTH PERCENT SIGN.
PERCENT_SIGN = "\uff05"


def printf_safe(text: str) -> str:
    """``text`` with every ``%`` replaced by :data:`PERCENT_SIGN`: for each reason and
    error an extender answers, kube-scheduler's event is ``Eventf(..., msg)`` with the text
    as the printf *format* and no operands, so ``60% free`` reads ``60%!f(MISSING)ree``.
    ``%%`` is no cure: the pod's PodScheduled condition carries the same text unformatted
    and would show both signs. kubenpu's own reasons say "percent"; this catches text from
    elsewhere (a pod's values, an API server's error) on its way out.
    """
    return text.replace("%", PERCENT_SIGN) if "%" in text else text


def printf_safe_reasons(reasons: Mapping[str, str]) -> Mapping[str, str]:
    """A node name -> reason map through :func:`printf_safe` (each distinct reason once;
    the map itself when no reason has a ``%``)."""
    distinct = set(reasons.values())
    if not any("%" in r for r in distinct):
        return reasons
    safe = {r: printf_safe(r) for r in distinct}
    return dict(zip(reasons, map(safe.__getitem__, reasons.values()), strict=True))


def encode_filter_result(result: ExtenderFilterResult) -> bytes:
    """The filter answer as JSON, its reasons and error :func:`printf_safe`."""
    answer = dict(result)
    answer["FailedNodes"] = printf_safe_reasons(result["FailedNodes"])
    answer["FailedAndUnresolvableNodes"] = printf_safe_reasons(result["FailedAndUnresolvableNodes"])
    answer["Error"] = printf_safe(result["Error"])
    return orjson.dumps(answer)


class NameCache:
    """``make(name)`` per node name, remembered: the same few thousand names go out in
    every answer, in whatever order kube-scheduler lists them."""

    def __init__(self, make: Callable[[str], str], limit: int = 100_000) -> None:
        self._make = make
        self._known: dict[str, str] = {}
        #: Cleared when over this many names, so that node churn cannot grow it forever.
        self._limit = limit

    def many(self, names: Iterable[str]) -> list[str]:
        """``make(n)`` for each of ``names``, in order (``names`` is iterated twice at most)."""
        known = self._known
        try:
            return list(map(known.__getitem__, names))  # one C loop when all are known
        except KeyError:
            if len(known) > self._limit:
                known.clear()
            made = list(map(self._make, names))
            known.update(zip(names, made, strict=True))
            return made


#: JSON string literal of a str, ASCII only.
escape = json.encoder.encode_basestring_ascii

#: ``0},`` .. ``10},``: the tail of one encoded HostPriority per score, and its comma.
_SCORE_TAILS = [f"{s}}}," for s in range(MAX_EXTENDER_PRIORITY + 1)]


def priority_head(name: str) -> str:
    """``{"Host":"<name>","Score":``, JSON-escaped."""
    return f'{{"Host":{escape(name)},"Score":'


def priority_heads(names: list[str]) -> list[str]:
    """:func:`priority_head` of each name (reusable for a node list)."""
    return list(map(priority_head, names))


def encode_priorities(heads: list[str], scores: list[int]) -> bytes:
    """A HostPriorityList as JSON from :func:`priority_heads` and scores 0..10: the bytes
    ``json.dumps`` gives for ``[{"Host": n, "Score": s}, ...]`` (compact)."""
    if not heads:
        return b"[]"
    # Heads and tails alternate; the slices fill them in C, with no per-node string.
    pieces = [""] * (2 * len(heads))
    pieces[::2] = heads
    pieces[1::2] = map(_SCORE_TAILS.__getitem__, scores)
    pieces[0] = "[" + pieces[0]
    pieces[-1] = pieces[-1][:-1] + "]"
    return "".join(pieces).encode()


class NameLists:
    """The last few NodeNames lists (as received, or as filter answered them), found by
    equality, each with its prioritize heads once asked for: kube-scheduler sends the
    same lists call after call, and prioritize the names filter answered."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._lists: list[tuple[list[str], list[str] | None]] = []
        self._heads = NameCache(priority_head)
        self._lock = threading.Lock()

    def find(self, names: object) -> list[str] | None:
        """The recent list equal to ``names``, if any."""
        with self._lock:
            for known, _ in self._lists:
                if known == names:
                    return known
        return None

    def add(self, names: list[str]) -> None:
        """Note ``names`` (a valid list, never to be modified) as the most recent; an
        equal list known already is kept instead, with its heads."""
        with self._lock:
            kept: tuple[list[str], list[str] | None] = (names, None)
            others = []
            for entry in self._lists:
                if entry[0] == names:
                    kept = entry
                else:
                    others.append(entry)
            self._lists = [kept, *others[: self._size - 1]]

    def heads(self, names: list[str]) -> list[str]:
        """:func:`priority_head` of each of ``names``, kept with a recent list."""
        with self._lock:
            for i, (known, heads) in enumerate(self._lists):
                if known == names:
                    if heads is None:
                        heads = self._heads.many(known)
                        self._lists[i] = (known, heads)
                    return heads
            return self._heads.many(names)


# ---- preempt ---------------------------------------------------------------------------


class MetaPod(TypedDict):
    """A victim named by its UID (kube-scheduler finds the pod in its node's pods)."""

    UID: str


class MetaVictims(TypedDict):
    """The victims on one node by UID, and how many of them violate a PDB."""

    Pods: list[MetaPod]
    NumPDBViolations: int


class ExtenderPreemptionArgs(TypedDict):
    """Body of a preempt call: the preemptor and, per candidate node, the victims
    kube-scheduler's own dry run chose. A nodeCacheCapable extender (kubenpu's
    configuration) gets ``NodeNameToMetaVictims``, any other ``NodeNameToVictims`` (full
    Pods); the other map is null."""

    Pod: dict[str, Any]
    NodeNameToVictims: NotRequired[dict[str, Any] | None]
    NodeNameToMetaVictims: NotRequired[dict[str, MetaVictims] | None]


class ExtenderPreemptionResult(TypedDict):
    """Answer to preempt: the nodes kept, each with the victims to evict there (never
    empty: kube-scheduler refuses a node without victims from an extender that is not
    ignorable). Nodes left out are no longer candidates."""

    NodeNameToMetaVictims: dict[str, MetaVictims]


def _count(value: object, what: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise WireError(f"{what} must be a non-negative integer, got {value!r}"[:200])
    return value


def _victims(value: object, node: str, *, meta: bool) -> MetaVictims:
    """One node's Victims or MetaVictims as MetaVictims."""
    field = "NodeNameToMetaVictims" if meta else "NodeNameToVictims"
    what = f"ExtenderPreemptionArgs.{field}[{node!r}]"[:200]
    if value is None:
        return {"Pods": [], "NumPDBViolations": 0}
    if not isinstance(value, dict):
        raise WireError(f"{what} must be an object")
    pods = value.get("Pods")
    if pods is None:
        pods = []
    if not isinstance(pods, list):
        raise WireError(f"{what}.Pods must be a list")
    uids: list[MetaPod] = []
    for item in pods:
        if meta:
            uid = item.get("UID") if isinstance(item, dict) else None
        else:
            m = item.get("metadata") if isinstance(item, dict) else None
            uid = m.get("uid") if isinstance(m, dict) else None
        if not isinstance(uid, str):
            raise WireError(f"{what}.Pods[] needs a {'UID' if meta else 'metadata.uid'} string")
        uids.append({"UID": uid})
    return {"Pods": uids, "NumPDBViolations": _count(value.get("NumPDBViolations"), what)}


def parse_preemption_args(data: object) -> tuple[dict[str, Any], dict[str, MetaVictims]]:
    """Validate a preempt body; return the preemptor Pod and kube-scheduler's victims per
    node as MetaVictims (UIDs), whichever of the two maps it sent."""
    if not isinstance(data, dict):
        raise WireError(f"ExtenderPreemptionArgs must be a JSON object, not {type(data).__name__}")
    pod = data.get("Pod")
    if not isinstance(pod, dict) or not isinstance(pod.get("metadata"), dict):
        raise WireError("ExtenderPreemptionArgs.Pod must be a Pod object with metadata")
    meta, full = data.get("NodeNameToMetaVictims"), data.get("NodeNameToVictims")
    chosen, is_meta = (meta, True) if meta is not None else (full, False)
    if chosen is None:
        return pod, {}
    if not isinstance(chosen, dict):
        field = "NodeNameToMetaVictims" if is_meta else "NodeNameToVictims"
        raise WireError(f"ExtenderPreemptionArgs.{field} must be an object")
    return pod, {str(n): _victims(v, str(n), meta=is_meta) for n, v in chosen.items()}


def encode_preemption_result(result: ExtenderPreemptionResult) -> bytes:
    """The preempt answer as JSON."""
    return orjson.dumps(result)
