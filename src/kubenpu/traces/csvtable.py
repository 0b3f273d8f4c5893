"""Typed access to CSV rows with errors that name the file, the line and the problem."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from kubenpu.errors import InputError

#: Largest count accepted: exact as a float and safe in the engine's int64 arrays.
MAX_COUNT = 2**53


class Row:
    """One CSV data row; getters raise ``InputError`` pointing at the exact cell."""

    def __init__(self, values: dict[str, str], source: str, line: int):
        self._values = values
        self.source = source
        self.line = line

    def error(self, problem: str) -> InputError:
        """An ``InputError`` located at this row."""
        return InputError(problem, source=self.source, line=self.line)

    def text(self, column: str) -> str:
        """The cell, stripped; empty when blank."""
        return (self._values.get(column) or "").strip()

    def count(self, column: str) -> int:
        """The cell as a non-negative integer (``12.0`` accepted, ``1.5`` rejected)."""
        raw = self.text(column)
        try:
            value = float(raw)
        except ValueError:
            raise self.error(f"column {column!r}: {raw!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")) or value != int(value):
            raise self.error(f"column {column!r}: {raw!r} is not a whole number")
        if value < 0:
            raise self.error(f"column {column!r}: {raw!r} is negative")
        if value > MAX_COUNT:
            raise self.error(f"column {column!r}: {raw!r} is too large")
        return int(value)


def read_rows(path: Path, required: tuple[str, ...]) -> Iterator[Row]:
    """Yield the data rows of ``path``, after checking that every required column exists."""
    source = str(path)
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", source=source) from None
    with handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames or []
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"not a CSV file: {exc}", source=source, line=1) from None
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(
                f"missing column(s) {', '.join(missing)} "
                f"(header has: {', '.join(header) or 'nothing'})",
                source=source,
                line=1,
            )
        try:
            for values in reader:
                yield Row(values, source, reader.line_num)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"malformed CSV: {exc}", source=source, line=reader.line_num) from None
