"""Strict CSV reading: every bad cell is an error naming the file, line and column."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

from tessellate.simulator.trace import TraceError


class Row:
    """One data row with typed accessors that raise TraceError on bad values."""

    def __init__(self, path: Path, line: int, values: dict[str, str]):
        self.path, self.line, self.values = path, line, values

    def error(self, column: str | None, message: str) -> TraceError:
        return TraceError(self.path, message, line=self.line, column=column)

    def text(self, column: str, default: str | None = None) -> str:
        value = self.values.get(column)
        if value is None:
            if default is None:
                raise self.error(column, "missing value")
            return default
        return value.strip()

    def integer(self, column: str, minimum: int | None = 0, default: int | None = None) -> int:
        raw = self.text(column, default="" if default is not None else None)
        if raw == "" and default is not None:
            return default
        try:
            value = int(raw)
        except ValueError:
            try:
                as_float = float(raw)
            except ValueError:
                raise self.error(column, f"expected an integer, got {raw!r}") from None
            if not as_float.is_integer():
                raise self.error(column, f"expected an integer, got {raw!r}") from None
            value = int(as_float)
        if minimum is not None and value < minimum:
            raise self.error(column, f"must be >= {minimum}, got {value}")
        return value

    def optional_number(self, column: str) -> float | None:
        raw = self.values.get(column)
        if raw is None or raw.strip() == "":
            return None
        try:
            value = float(raw)
        except ValueError:
            raise self.error(column, f"expected a number or nothing, got {raw!r}") from None
        if not math.isfinite(value):
            raise self.error(column, f"expected a finite number, got {raw!r}")
        return value


def read_rows(path: Path, required: Sequence[str]) -> Iterator[Row]:
    """Yield the rows of a CSV file after checking its header has `required` columns."""
    if not path.is_file():
        raise TraceError(path, "no such file")
    # utf-8-sig: spreadsheet exports start with a byte-order mark that would
    # otherwise become part of the first column's name.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            yield from _rows(path, reader, required)
        except UnicodeDecodeError as exc:
            raise TraceError(path, f"not UTF-8 text: {exc}") from None
        except csv.Error as exc:
            raise TraceError(path, f"malformed CSV: {exc}", line=reader.line_num) from None


def _rows(path: Path, reader: Iterator[list[str]], required: Sequence[str]) -> Iterator[Row]:
    header = next(reader, None)
    if header is None:
        raise TraceError(path, "empty file (no header row)")
    header = [h.strip() for h in header]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise TraceError(path, f"duplicate column(s) {', '.join(duplicated)} in the header", line=1)
    missing = [c for c in required if c not in header]
    if missing:
        raise TraceError(
            path, f"missing column(s) {', '.join(missing)}; the header has {', '.join(header)}", line=1
        )
    for number, cells in enumerate(reader, start=2):
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise TraceError(path, f"expected {len(header)} fields, found {len(cells)}", line=number)
        yield Row(path, number, dict(zip(header, cells, strict=True)))
