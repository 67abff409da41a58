"""The SQL literals every ClickHouse module splices in, and reading a result as dicts."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from whystream.errors import WhystreamError

DEFAULT_DATABASE = "whystream"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def ident(name: str) -> str:
    """A database or table name, checked (they are spliced into DDL)."""
    if not _IDENTIFIER.match(name):
        raise WhystreamError(f"invalid ClickHouse identifier {name!r}: letters, digits and _ only")
    return name


def lit(value: Any) -> str:
    """A Python value as a ClickHouse SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(lit(v) for v in value) + "]"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def ms_lit(ms: int) -> str:
    """Epoch milliseconds as a DateTime64(3, 'UTC') expression."""
    return f"fromUnixTimestamp64Milli({int(ms)}, 'UTC')"


def rows(client, sql: str, **settings) -> list[dict]:
    """Run a query and return its rows as dicts (works for every client here)."""
    result = client.query(sql, settings=settings) if settings else client.query(sql)
    names = list(result.column_names)
    return [dict(zip(names, row)) for row in result.result_rows]


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."
