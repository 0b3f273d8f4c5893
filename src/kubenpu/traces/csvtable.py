"""Typed access to CSV rows with errors that name the file, the line and the problem.

Reading is strict, as a trace cut short (a copy interrupted, a download stopped) must
stop the run rather than replay wrong numbers: every row has exactly the header's fields,
quotes close, no NUL byte, UTF-8 throughout, and a file whose lines end with a newline
ends with one too (a last line without it is a line cut off); numbers are plain decimals.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from kubenpu.errors import InputError

#: Largest count accepted: exact as a float and safe in the engine's int64 arrays.
MAX_COUNT = 2**53

# What float() takes that a trace's number never is (1_000, unicode digits, nan) fails this.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Bytes that are not UTF-8, as errors="surrogateescape" decodes them.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


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
        """The cell as a non-negative integer (``12.0`` and ``1e3`` accepted, ``1.5``,
        ``1_000`` or ``nan`` rejected)."""
        raw = self.text(column)
        try:
            value = float(raw)
        except ValueError:
            raise self.error(f"column {column!r}: {raw!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")) or value != int(value):
            raise self.error(f"column {column!r}: {raw!r} is not a whole number")
        if not _DECIMAL.fullmatch(raw):
            raise self.error(f"column {column!r}: {raw!r} is not a plain decimal number")
        if value < 0:
            raise self.error(f"column {column!r}: {raw!r} is negative")
        if value > MAX_COUNT:
            raise self.error(f"column {column!r}: {raw!r} is too large")
        return int(value)


class _Lines:
    """The physical lines of a text file opened with ``newline=""``, checked one by one
    (NUL bytes, bytes that are not UTF-8, a cut last line) before the CSV parser sees them."""

    def __init__(self, handle: Iterable[str], source: str) -> None:
        self._handle = handle
        self._source = source
        #: Lines handed out so far: the number of the line being parsed.
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        ended = False  # has a line ended with a line break yet
        for line in self._handle:
            self.count += 1
            bad = _UNDECODABLE.search(line)
            if bad is not None:
                byte = ord(bad.group()) - 0xDC00
                raise self._error(f"not UTF-8 CSV text (byte 0x{byte:02x})")
            if "\x00" in line:
                raise self._error("NUL byte: not CSV text (a binary or damaged file?)")
            if line.endswith(("\n", "\r")):
                ended = True
            elif ended:
                # Only the last line can lack a break; when the others have one, this one
                # was cut off, perhaps inside a value (1000 read as 10).
                raise self._error(
                    "the file ends inside this line (no line break, unlike the lines "
                    "before it): the file looks cut short"
                )
            yield line

    def _error(self, problem: str) -> InputError:
        return InputError(problem, source=self._source, line=self.count)


def read_rows(path: Path, required: tuple[str, ...]) -> Iterator[Row]:
    """Yield the data rows of ``path``, after checking that every required column exists.

    Raises ``InputError`` (file and line) for any row that is not exactly a row of the
    header's table; see the module's docstring. Blank lines are skipped.
    """
    source = str(path)
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark. Undecodable
        # bytes are let through (as surrogates) so that _Lines names their line.
        handle = path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", source=source) from None
    with handle:
        lines = _Lines(handle, source)
        # strict: an unterminated quote or text after a closing quote is an error.
        reader = csv.reader(iter(lines), strict=True)
        try:
            header = next(reader, [])
        except csv.Error as exc:
            raise InputError(f"not a CSV file: {exc}", source=source, line=1) from None
        except OSError as exc:
            raise InputError(f"cannot read file: {exc.strerror or exc}", source=source) from None
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(
                f"missing column(s) {', '.join(missing)} "
                f"(header has: {', '.join(header) or 'nothing'})",
                source=source,
                line=1,
            )
        width = len(header)
        start = lines.count + 1  # the line the next row starts on
        while True:
            try:
                values = next(reader, None)
            except csv.Error as exc:
                problem = f"malformed CSV: {exc}"
                if "unexpected end of data" in str(exc):
                    problem = "a quoted value opened in this row is never closed"
                raise InputError(problem, source=source, line=start) from None
            except OSError as exc:
                raise InputError(
                    f"cannot read file: {exc.strerror or exc}", source=source
                ) from None
            if values is None:
                return
            if values:  # csv gives [] for a blank line
                if len(values) != width:
                    raise InputError(_width_problem(header, len(values)), source=source, line=start)
                yield Row(dict(zip(header, values, strict=True)), source, start)
            start = lines.count + 1


def _width_problem(header: list[str], fields: int) -> str:
    if fields < len(header):
        return (
            f"{fields} of the header's {len(header)} fields: "
            f"column {header[fields]!r} is missing (a cut row?)"
        )
    return (
        f"{fields} fields, the header has {len(header)} "
        "(an unquoted comma in a value, or rows run together?)"
    )
