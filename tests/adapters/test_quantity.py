"""Kubernetes quantities: suffixes, exponents, rounding and what is refused."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubenpu.adapters.quantity import MAX_QUANTITY, cpu_milli, mebibytes, parse_quantity

MULTIPLIER = {
    "": 1,
    "m": Decimal("0.001"),
    "k": 1000,
    "M": 10**6,
    "G": 10**9,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500m", Decimal("0.5")),
        ("16Gi", Decimal(16 * 2**30)),
        ("1.5", Decimal("1.5")),
        ("2e3", Decimal(2000)),
        ("2E3", Decimal(2000)),
        ("2E", Decimal(2 * 10**18)),  # exa, not an exponent
        (".5", Decimal("0.5")),
        ("5.", Decimal(5)),
        ("+3", Decimal(3)),
        ("-2", Decimal(-2)),
        ("  4  ", Decimal(4)),
        ("1k", Decimal(1000)),
        ("1Ki", Decimal(1024)),
        ("100n", Decimal("1e-7")),
        ("3u", Decimal("3e-6")),
        ("1.5e-3", Decimal("0.0015")),
        (7, Decimal(7)),
        (0.25, Decimal("0.25")),
    ],
)
def test_parse_quantity(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "1x",
        "1 Gi",
        "Gi",
        "1.2.3",
        "1e",
        "--1",
        "1KiB",
        "0x10",
        True,
        False,
        None,
        float("inf"),
        float("-inf"),
        float("nan"),
        "1e999999999",  # would overflow the decimal context
        "1e30",
        "9Ei",
        2**64,
    ],
)
def test_parse_quantity_rejects(bad):
    with pytest.raises(ValueError):
        parse_quantity(bad)


def test_largest_quantity_is_int64():
    assert parse_quantity(str(2**63 - 1)) == MAX_QUANTITY
    with pytest.raises(ValueError, match="too large"):
        parse_quantity(str(2**63))


@pytest.mark.parametrize(
    ("text", "milli"),
    [("500m", 500), ("1.5", 1500), ("2", 2000), ("0.0001", 1), ("1n", 1), ("0", 0), ("1k", 10**6)],
)
def test_cpu_milli_rounds_up(text, milli):
    assert cpu_milli(text) == milli


@pytest.mark.parametrize(
    ("text", "mib"),
    [("16Gi", 16384), ("1Mi", 1), ("1", 1), ("2e3", 1), ("1025Ki", 2), ("1G", 954), ("0", 0)],
)
def test_mebibytes_rounds_up(text, mib):
    assert mebibytes(text) == mib


@pytest.mark.parametrize("text", ["-1", "-100Ki", "-0.0001", "-1n"])
def test_negative_amounts_stay_negative(text):
    # Rounding -100Ki "up" to 0 MiB would hide the sign from callers that reject negatives.
    assert mebibytes(text) < 0
    assert cpu_milli(text) < 0


@given(st.integers(0, 10**6), st.sampled_from(sorted(MULTIPLIER)))
def test_integer_with_suffix(n, suffix):
    assert parse_quantity(f"{n}{suffix}") == n * Decimal(MULTIPLIER[suffix])


@given(st.decimals(min_value=0, max_value=10**9, places=4, allow_nan=False))
def test_cpu_milli_is_the_ceiling(q):
    milli = cpu_milli(str(q))
    assert milli - 1 < q * 1000 <= milli


@given(st.integers(0, 2**40))
def test_mebibytes_is_the_ceiling_of_bytes(n):
    mib = mebibytes(str(n))
    assert (mib - 1) * 2**20 < n <= mib * 2**20


@given(st.integers(-(10**12), 10**12), st.integers(-6, 6))
def test_exponent_form(mantissa, exp):
    assert parse_quantity(f"{mantissa}e{exp}") == Decimal(mantissa).scaleb(exp)
