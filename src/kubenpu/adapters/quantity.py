"""Kubernetes resource quantities ("500m", "16Gi", "1.5", "2e3") as exact numbers."""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal

_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_PATTERN = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$"
)


#: Largest magnitude accepted (Kubernetes keeps quantities within a signed 64-bit int).
MAX_QUANTITY = Decimal(2**63 - 1)


def parse_quantity(value: object) -> Decimal:
    """Parse a quantity; raises ``ValueError`` with the offending text.

    Non-finite numbers (YAML ``.inf``, ``.nan``) and magnitudes beyond a signed 64-bit
    integer are rejected, so converting the result to ``int`` is always safe.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int | float):
        text = str(value)
        q = Decimal(text)
    else:
        text = str(value).strip()
        match = _PATTERN.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a quantity")
        try:
            q = Decimal(match.group(1))
            if q.is_finite() and q.adjusted() <= 30:
                q *= _SUFFIX[match.group(2)]
        except ArithmeticError:  # InvalidOperation, Overflow from the decimal context
            raise ValueError(f"{text!r} is not a quantity") from None
    if not q.is_finite():
        raise ValueError(f"{text!r} is not a finite quantity")
    if q.adjusted() > 30 or abs(q) > MAX_QUANTITY:
        raise ValueError(f"{text!r} is too large")
    return q


def _ceil(q: Decimal) -> int:
    return int(q.to_integral_value(rounding=ROUND_CEILING))


def cpu_milli(value: object) -> int:
    """CPU quantity in millicores, rounded up like the kubelet does.

    A negative quantity stays negative (``-0.1m`` is -1), so callers can reject it.
    """
    q = parse_quantity(value) * 1000
    return _ceil(q) if q >= 0 else -_ceil(-q)


def mebibytes(value: object) -> int:
    """Memory quantity in MiB, rounded up; a negative quantity stays negative."""
    q = parse_quantity(value) / (2**20)
    return _ceil(q) if q >= 0 else -_ceil(-q)
