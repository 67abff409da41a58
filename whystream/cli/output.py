"""What the listing commands print: one renderer for `--format table|csv|json`.

`sql`, `drift`, `verify`, `explain`, `dlq` and `models` hand their rows (dicts of
plain values) to `emit` (`whystream sql` answers a trailing ClickHouse `FORMAT CSV` or
`FORMAT JSON` clause with the same format: `output_format`):

- `table` (the default) is for people: a rich table that fits the terminal's width
  (cells fold onto more lines, never cut to `…`); when stdout is not a terminal (a
  pipe, a log file) the table is as wide as its widest row, one row a line, and
  carries no escape codes (rich writes none where stdout is not a terminal);
- `csv` is RFC 4180 quoting (Python's `csv`) with `\n` line ends: a header line, then
  the rows; lists and maps as JSON text in one cell, a missing value as an empty cell;
- `json` is one JSON document (`json.loads` reads it): the rows as a list of objects
  with numbers as numbers, times as ISO 8601 UTC, NaN and infinities as null.

Numbers a person reads are rounded in the table only; csv and json carry them whole.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import enum
import ipaddress
import json
import math
import re
import sys
import uuid
from typing import Callable, Iterable, Sequence

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from whystream.errors import WhystreamError


class Format(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


def format_option() -> Format:
    """The `--format` option every listing command takes."""
    return typer.Option(Format.table, "--format", "-f", case_sensitive=False,
                        help="table (for people), csv or json (for programs: every value whole)")


# -- plain values for csv and json

def plain(value):
    """`value` as JSON can hold it: times as ISO 8601 (UTC when naive), NaN/inf as None."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return plain(float(value))
    if isinstance(value, (uuid.UUID, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return plain(value.item())
    if hasattr(value, "tolist"):  # numpy arrays
        return plain(value.tolist())
    return str(value)


def to_json(document) -> str:
    return json.dumps(plain(document), indent=2, ensure_ascii=False, allow_nan=False)


def utc_ms(ms) -> str:
    """Epoch milliseconds (or a datetime, as fastavro decodes timestamp-millis) as ISO 8601 UTC."""
    if ms is None:
        return None
    if isinstance(ms, dt.datetime):
        when = ms if ms.tzinfo else ms.replace(tzinfo=dt.timezone.utc)
    else:
        when = dt.datetime.fromtimestamp(int(ms) / 1000, dt.timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def readable_time(ms) -> str:
    """'2026-12-07 00:17:27.123 UTC' for a person."""
    return utc_ms(ms).replace("T", " ").replace("Z", " UTC") if ms is not None else "-"


# -- table cells

def cell(value) -> str:
    """A value as a table shows it: floats to 6 significant digits, long lists shortened."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)) and len(value) > 12:
        return "[" + ", ".join(cell(v) for v in value[:12]) + f", ... ({len(value)})]"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(cell(v) for v in value) + "]"
    if isinstance(value, dt.datetime):
        return readable_time(value)
    return str(value)


# -- the consoles

def stdout_console() -> Console:
    """A console on the current stdout (CliRunner swaps it), never highlighting numbers."""
    return Console(file=sys.stdout, highlight=False)


def stderr_console() -> Console:
    """For progress and notes that must not mix into csv or json on stdout."""
    return Console(file=sys.stderr, highlight=False)


def print_table(table: Table, console: Console | None = None) -> None:
    """On a terminal: fitted to its width (cells fold). Elsewhere: as wide as the widest row."""
    console = console or stdout_console()
    for column in table.columns:
        column.overflow = "fold"
    if console.is_terminal:
        console.print(table)
        return
    natural = Console(width=1_000_000, file=sys.stdout).measure(table).maximum
    Console(file=console.file, width=max(natural, 20), highlight=False, color_system=None).print(table)


def print_json(document) -> None:
    sys.stdout.write(to_json(document) + "\n")


def print_line(text: str, console: Console | None = None) -> None:
    """One line, whole: never wrapped or cut, whatever the width."""
    (console or stdout_console()).print(Text(text), soft_wrap=True)


def emit(records: Sequence[dict], fmt: Format, columns: Sequence[str] | None = None, *,
         title: str | None = None, cells: Callable[[dict, str], object] | None = None,
         right: Iterable[str] = (), spaced: bool = False) -> None:
    """Print `records` in `fmt`. `columns` (default: the first record's keys) picks and
    orders them for table and csv (json holds every key); `cells(record, column)` gives a
    table cell (str or rich Text), default `cell(record[column])`; `spaced` heads a
    table's columns with the keys `_` written as a space (else as they are: SQL names)."""
    columns = list(columns or (records[0].keys() if records else ()))
    if fmt == Format.json:
        print_json(list(records))
    elif fmt == Format.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        # csv quotes a cell holding the line terminator ("\n") but not a lone "\r", which readers
        # take as a line end: rows holding one are written with every cell quoted.
        quoting = csv.writer(sys.stdout, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(columns)
        for record in records:
            row = [_csv_cell(record.get(c)) for c in columns]
            (quoting if any("\r" in c for c in row) else writer).writerow(row)
    else:
        right = set(right)
        table = Table(title=title)
        for c in columns:
            table.add_column(c.replace("_", " ") if spaced else c, justify="right" if c in right else "left")
        for record in records:
            table.add_row(*(_text(cells(record, c) if cells else cell(record.get(c))) for c in columns))
        print_table(table)


# A trailing `FORMAT name` (ClickHouse's output clause): answered with the same --format, without the clause.
_FORMAT_CLAUSE = re.compile(r"\s+FORMAT\s+([A-Za-z][A-Za-z0-9_]*)\s*;?\s*$", re.IGNORECASE)
_CLAUSE_FORMATS = {"csv": Format.csv, "csvwithnames": Format.csv, "json": Format.json, "jsoneachrow": Format.json,
                   "jsoncompact": Format.json, "pretty": Format.table, "prettycompact": Format.table}


def output_format(query: str, fmt: Format | None) -> tuple[str, Format]:
    """(the query without a trailing FORMAT clause, the format to print in). `FORMAT CSV` is
    answered as `--format csv` (and said so on stderr); a format whystream does not print,
    or one that contradicts --format, is an error naming --format."""
    clause = _FORMAT_CLAUSE.search(query)
    if clause is None:
        return query, fmt or Format.table
    asked = _CLAUSE_FORMATS.get(clause.group(1).lower())
    if asked is None:
        raise WhystreamError(f"FORMAT {clause.group(1)}: whystream sql prints table, csv or json; drop the FORMAT "
                             "clause and choose with --format, e.g. whystream sql --format csv \"SELECT ...\"")
    if fmt is not None and fmt != asked:
        raise WhystreamError(f"FORMAT {clause.group(1)} and --format {fmt.value} disagree; give only --format")
    print_line(f"# FORMAT {clause.group(1)} answered as --format {asked.value} (the query runs without the clause)",
               stderr_console())
    return query[:clause.start()], asked


def unique_names(names) -> list[str]:
    """Column names as JSON keys: a repeated name gets _2, _3, ..."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def _text(value) -> Text:
    return value if isinstance(value, Text) else Text(str(value))  # never rich markup: cells are data


def _csv_cell(value) -> str:
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
