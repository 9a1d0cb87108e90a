"""CSV import and export of the unsubscribed list.

Format (one header line, then one row per unsubscription)::

    phone_number,inbound_address,since
    +14155550100,+18005550199,2024-05-01T12:00:00+00:00

`since` is optional on import (empty: now) and may be ISO-8601 (a date, or a
date and time; no zone means UTC) or unix seconds. Export writes ISO-8601 UTC
so a file round-trips. Rows are checked one by one: a bad row is reported
with its line number and the good rows still land (`ImportReport`).

`read_rows` is the pure parsing half (no store, no asyncio); the service's
`import_csv` resolves addresses and writes in large batches; `import_file` and
`export_to` are what the CLI's ``import`` / ``export`` subcommands call.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from rules import numbers
from rules.model import DomainError, InvalidValue

if TYPE_CHECKING:
    from rules.service import ImportReport, OptOutService

__all__ = [
    "HEADER",
    "INFO_COLUMNS",
    "MAX_FIELD_CHARS",
    "CsvError",
    "CsvRow",
    "export_to",
    "format_row",
    "format_since",
    "import_file",
    "parse_since",
    "read_rows",
]

HEADER: Final = ("phone_number", "inbound_address", "since")
# Written by the HTTP export for people reading the file; ignored on import
# (an import records its own source and reason), so an export re-imports.
INFO_COLUMNS: Final = ("source", "reason")
MAX_FIELD_CHARS: Final = 128
"""Longer fields are refused before any parsing (bounded work per row)."""

_E164_NANP: Final = re.compile(r"\+1[2-9][0-9]{2}[2-9][0-9]{6}")

# Unix seconds beyond this are surely milliseconds or garbage (year 2286).
_MAX_UNIX: Final = 10_000_000_000


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One good row: numbers normalised, `since` in unix seconds (None: now)."""

    line: int
    phone_number: str
    inbound_address: str
    since: float | None


@dataclass(frozen=True, slots=True)
class CsvError:
    line: int
    message: str


def parse_since(value: str) -> float:
    """ISO-8601 (``2024-05-01``, ``2024-05-01T12:00:00Z``, with or without
    an offset; no offset means UTC) or unix seconds, as unix seconds.
    Raises InvalidValue."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or not 0 <= seconds < _MAX_UNIX:
            raise InvalidValue(f"since {text[:32]!r} is not a plausible unix time")
        return seconds
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidValue(
            f"since {text[:32]!r} is neither ISO-8601 (2024-05-01T12:00:00Z) nor unix seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def format_since(ts: float) -> str:
    """Unix seconds as ISO-8601 UTC, whole seconds (what export writes)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def format_row(*fields: str) -> str:
    """One CSV line, newline-terminated, quoted where needed."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


def _require_in_scope(raw: str) -> str:
    """`numbers.require_in_scope` for a million rows: rows already in E.164
    NANP form (what exports hold) skip the parser, and `numbers.in_scope`
    answers most rows from its area-code memo."""
    number = raw if _E164_NANP.fullmatch(raw) else numbers.normalize(raw)
    if numbers.in_scope(number):
        return number
    return numbers.require_in_scope(raw)  # raises OutOfScope, naming the country


def _columns(header: list[str]) -> tuple[dict[str, int], str | None]:
    names = [h.strip().lower() for h in header]
    index = {name: i for i, name in enumerate(names)}
    missing = [n for n in HEADER[:2] if n not in index]
    unknown = [n for n in names if n not in HEADER and n not in INFO_COLUMNS]
    if missing:
        return index, f"header lacks column(s) {', '.join(missing)}"
    if unknown:
        return index, f"unknown column(s) {', '.join(repr(u[:32]) for u in unknown)}"
    if len(index) != len(names):
        return index, "a column appears twice in the header"
    return index, None


def read_rows(lines: Iterable[str]) -> Iterator[CsvRow | CsvError]:
    """Parses and checks CSV lines, yielding a `CsvRow` per good row and a
    `CsvError` per bad one (bad number, out of scope, bad date, wrong column
    count). Whether the inbound address exists is for the caller to check.

    The first line is a header when one of its fields is ``phone_number``
    (columns may then come in any order); without one, the columns are
    ``phone_number,inbound_address[,since]``. Blank lines are skipped.
    """
    reader = csv.reader(lines)
    columns: dict[str, int] = {"phone_number": 0, "inbound_address": 1, "since": 2}
    width: int | None = None  # None: 2 or 3 (headerless)
    address_cache: dict[str, str | DomainError] = {}
    first = True
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield CsvError(reader.line_num, f"not valid CSV: {exc}")
            continue
        line = reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if first:
            first = False
            if "phone_number" in (f.strip().lower() for f in fields):
                columns, problem = _columns(fields)
                if problem is not None:
                    yield CsvError(line, problem)
                    return
                width = len(fields)
                continue
        if width is not None and len(fields) != width:
            yield CsvError(line, f"expected {width} columns, found {len(fields)}")
            continue
        if width is None and len(fields) not in (2, 3):
            yield CsvError(line, f"expected 2 or 3 columns, found {len(fields)}")
            continue
        # Only the columns an import reads are bounded: a long exported
        # reason is information, not a reason to refuse the row.
        read = (fields[i] for n, i in columns.items() if n in HEADER and i < len(fields))
        if any(len(f) > MAX_FIELD_CHARS for f in read):
            yield CsvError(line, f"a field is longer than {MAX_FIELD_CHARS} characters")
            continue
        try:
            phone = _require_in_scope(fields[columns["phone_number"]])
            raw_address = fields[columns["inbound_address"]]
            # A file names a handful of addresses a million times.
            cached = address_cache.get(raw_address)
            if cached is None:
                try:
                    cached = numbers.normalize(raw_address)
                except DomainError as exc:
                    cached = exc
                if len(address_cache) < 10_000:
                    address_cache[raw_address] = cached
            if isinstance(cached, DomainError):
                raise InvalidValue(f"inbound address: {cached}")
            since_col = columns.get("since")
            raw_since = (
                fields[since_col].strip()
                if since_col is not None and since_col < len(fields)
                else ""
            )
            since = parse_since(raw_since) if raw_since else None
        except DomainError as exc:
            yield CsvError(line, str(exc))
            continue
        yield CsvRow(line, phone, cached, since)


async def import_file(service: OptOutService, path: str | Path) -> ImportReport:
    """Imports a CSV file (UTF-8, an Excel BOM tolerated) into `service`.
    Raises OSError if the file cannot be read, StoreUnavailable if the store
    fails (rows of batches committed before the failure stay imported)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        return await service.import_csv(f)


async def export_to(service: OptOutService, out: TextIO) -> int:
    """Writes the current unsubscribed list to `out` as CSV (header first).
    Returns the number of data rows written."""
    rows = -1
    async for line in service.export_csv():
        out.write(line)
        rows += 1
    return max(rows, 0)
