"""Why an NPU pod waits, in plain words, from its PodScheduled condition and events.

kube-scheduler writes one message per failed attempt, e.g. ``0/3 nodes are available: 2
Insufficient aliyun.com/npu-core: no NPU with 40 percent free core, 1 no NPU devices.
preemption: ...``; the extender's per-node reasons (``engine.fit.Reason.text``) are among
its items. Each item becomes ``(nodes, what it means)``; unknown texts are kept as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubenpu.names import RESOURCE_NPU, RESOURCE_NPU_CORE, RESOURCE_NPU_MEM

_SUMMARY = re.compile(r"^\s*(\d+)/(\d+) nodes are available[:.]?\s*(.*)$", re.DOTALL)
_ITEM_SPLIT = re.compile(r",\s+(?=\d+ )")
_ITEM = re.compile(r"^(\d+)\s+(.*)$", re.DOTALL)

#: (prefix or fragment of kube-scheduler's / the extender's text, plain words). First match
#: wins, so the longer resource names come before aliyun.com/npu.
_PLAIN: tuple[tuple[str, str], ...] = (
    (f"Insufficient {RESOURCE_NPU_CORE}", "no NPU has enough free compute for the share"),
    (f"Insufficient {RESOURCE_NPU_MEM}", "no NPU has enough free memory for the share"),
    (f"Insufficient {RESOURCE_NPU}", "too few free whole NPUs"),
    ("Insufficient cpu", "not enough free CPU"),
    ("Insufficient memory", "not enough free memory"),
    ("no NPU devices", "no NPUs at all"),
    ("NPU model not", "another NPU model than the pod allows"),
    ("healthy " + RESOURCE_NPU, "too few healthy NPUs"),
    ("untolerated taint", "a taint the pod does not tolerate"),
    (
        "didn't match Pod's node affinity/selector",
        "excluded by the pod's node selector or affinity",
    ),
    ("were unschedulable", "cordoned (unschedulable)"),
    ("didn't have free ports", "the pod's host port is taken"),
    ("volume node affinity conflict", "its volume is bound elsewhere"),
)


@dataclass(frozen=True, slots=True)
class Cause:
    """One group of nodes that cannot take the pod, and why."""

    nodes: int
    plain: str
    #: The scheduler's own words.
    text: str


@dataclass(frozen=True, slots=True)
class WaitReason:
    """Why one pod waits: a headline and the causes per group of nodes."""

    headline: str
    causes: tuple[Cause, ...] = ()
    #: The scheduler's message as it wrote it ("" when there is none yet).
    message: str = ""
    #: How many times the scheduler reported it (the event's count), 0 if unknown.
    attempts: int = 0


def plain_words(text: str) -> str:
    """One reason item in plain words (the text itself when it is not a known one)."""
    for fragment, plain in _PLAIN:
        if fragment in text:
            detail = text.split(":", 1)[1].strip() if ":" in text and "Insufficient" in text else ""
            return f"{plain} ({detail})" if detail else plain
    return text


def parse_message(message: str) -> WaitReason:
    """kube-scheduler's ``FailedScheduling`` message as a headline and causes."""
    text = " ".join(message.split())
    match = _SUMMARY.match(text)
    if not match:
        return WaitReason(headline=plain_words(text.rstrip(".")) or "waiting", message=text)
    total = int(match.group(2))
    body = match.group(3)
    # What follows the node reasons: kube-scheduler's preemption verdict, not a node reason.
    body = body.split(" preemption:", 1)[0].strip().rstrip(".")
    causes = []
    for item in _ITEM_SPLIT.split(body) if body else []:
        m = _ITEM.match(item.strip())
        if m:
            causes.append(Cause(int(m.group(1)), plain_words(m.group(2)), m.group(2)))
        else:
            causes.append(Cause(0, plain_words(item), item))
    if total == 0:
        headline = "the cluster has no nodes"
    else:
        one = total == 1
        headline = (
            "the one node cannot take it" if one else f"none of the {total} nodes can take it"
        )
        if not causes:
            headline += " (no reason given)"
    return WaitReason(headline=headline, causes=tuple(causes), message=text)


def event_time(event: Mapping[str, Any]) -> str:
    """When an event last happened (RFC 3339; "" if it says nothing)."""
    return str(
        event.get("lastTimestamp")
        or (event.get("series") or {}).get("lastObservedTime")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def latest(events: Sequence[Mapping[str, Any]], reason: str) -> Mapping[str, Any] | None:
    """The most recent event with ``reason``, or None."""
    found = [e for e in events if e.get("reason") == reason]
    return max(found, key=event_time) if found else None


def wait_reason(pod: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> WaitReason:
    """Why ``pod`` (not bound yet) waits: its latest FailedScheduling event, else its
    PodScheduled condition, else that the scheduler has not decided yet."""
    event = latest(events, "FailedScheduling")
    if event is not None and event.get("message"):
        parsed = parse_message(str(event["message"]))
        count = event.get("count") or (event.get("series") or {}).get("count") or 1
        return WaitReason(parsed.headline, parsed.causes, parsed.message, int(count))
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == "PodScheduled":
            if cond.get("status") == "False" and cond.get("message"):
                return parse_message(str(cond["message"]))
            if cond.get("status") == "False":
                return WaitReason(f"not scheduled: {cond.get('reason') or 'unknown'}")
    scheduler = (pod.get("spec") or {}).get("schedulerName") or "default-scheduler"
    return WaitReason(f"waiting for {scheduler}: no scheduling decision yet")
