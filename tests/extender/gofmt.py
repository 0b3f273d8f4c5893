"""Go's ``fmt.Sprintf(format)`` with no operands: what kube-scheduler's event recorder does
with an extender's reasons (``Eventf(pod, nil, "Warning", "FailedScheduling", "Scheduling",
msg)`` in pkg/scheduler/schedule_one.go, v1.37)."""

from __future__ import annotations

_FLAGS = "+-# 0"


def sprintf_no_operands(format: str) -> str:
    """The text Go's fmt makes of ``format`` alone: ``%%`` is ``%``; any other verb has no
    operand (``%!v(MISSING)``); a ``%`` at the end has no verb (``%!(NOVERB)``)."""
    out: list[str] = []
    i, n = 0, len(format)
    while i < n:
        c = format[i]
        i += 1
        if c != "%":
            out.append(c)
            continue
        while i < n and format[i] in _FLAGS:
            i += 1
        if i < n and format[i] == "*":
            out.append("%!(BADWIDTH)")
            i += 1
        while i < n and format[i].isdigit():
            i += 1
        if i < n and format[i] == ".":
            i += 1
            if i < n and format[i] == "*":
                out.append("%!(BADPREC)")
                i += 1
            while i < n and format[i].isdigit():
                i += 1
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = format[i]
        i += 1
        out.append("%" if verb == "%" else f"%!{verb}(MISSING)")
    return "".join(out)


def fit_error(num_nodes: int, reasons: dict[str, str]) -> str:
    """``FitError.Error()`` (pkg/scheduler/framework/types.go): ``0/N nodes are available:``
    and each reason with its count, sorted as strings."""
    counts: dict[str, int] = {}
    for why in reasons.values():
        counts[why] = counts.get(why, 0) + 1
    parts = sorted(f"{count} {why}" for why, count in counts.items())
    return f"0/{num_nodes} nodes are available: " + ", ".join(parts) + "."
