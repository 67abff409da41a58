"""The read-only SQL surface: `whystream sql`, the sink's query port, and the
readers behind `drift` and `report`.

What a statement is, is decided by ClickHouse's own parser, never by patterns
over the text (a quote inside a comment once fooled a regex into letting
`DROP TABLE` through). A statement passes when all of this holds:

1. `formatQuerySingleLine` parses it as exactly one statement (ClickHouse
   refuses multi-statements there); from then on only that canonical text is
   used, so what runs is what was checked.
2. It still parses as a subquery: `SELECT * FROM (<canonical>)`. Only read
   queries do (SELECT, WITH, UNION/INTERSECT/EXCEPT, EXPLAIN of a SELECT), and
   never with output options: `INTO OUTFILE` (which clickhouse-local and chDB
   carry out, writing files as the sink's user) and `FORMAT` are syntax errors
   inside parentheses.
3. Its syntax tree (`EXPLAIN AST` of that subquery form: nothing can follow
   its closing parenthesis, so the EXPLAIN itself has no output options)
   calls no function that reads the host (`file`, `filesystem*`) and no table
   function outside ALLOWED_TABLE_FUNCTIONS. `readonly=1` refuses `file()`,
   `url()`, `s3()`, `remote()` and `executable()` as tables, but not the
   scalar `file('/etc/passwd')` nor chDB's `python()` table function, which
   reads objects of the process it runs in.

It then runs on a session that is read-only before the caller gets it: the
limits of QueryLimits are set first, `readonly=1` last, so no query can
change a setting (a `SETTINGS` clause is refused), write, or create a
temporary table. The limits come from the operator's environment
(Settings.environ), never from the query:

    >>> limits = QueryLimits.from_env({"WHYSTREAM_SQL_MAX_EXECUTION_TIME": "120"})
    >>> limits.max_execution_time, limits.max_result_rows
    (120, 1000000)
    >>> list(limits.settings())[-1]  # read-only last: once it is 1, nothing can be changed
    'readonly'

A guard is a `ReadOnlyQueries` over a function that opens such a session
(`partial(open_read_only_client, dsn, database, limits)`, as the query port
does); its `query(sql)` refuses or runs one statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

from whystream.config import ENV
from whystream.errors import ConfigError, WhystreamError

# Table functions that read nothing but their arguments and the tables a read
# query may read anyway. Every other table function is refused (file, url, s3,
# remote, executable, python, filesystem, mysql, …), and so is any call of one
# outside FROM.
ALLOWED_TABLE_FUNCTIONS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries", "primes", "generaterandom",
    "values", "format", "view", "viewexplain", "merge",
})
# Ordinary functions that read the host (a file's content, the disks' sizes).
DENIED_FUNCTIONS = frozenset({"file", "filesystemavailable", "filesystemcapacity", "filesystemunreserved"})


@dataclass(frozen=True)
class QueryLimits:
    """Limits every read-only query runs under; the operator sets them with
    WHYSTREAM_SQL_<NAME> (e.g. WHYSTREAM_SQL_MAX_EXECUTION_TIME=120)."""

    max_execution_time: int = 60  # seconds
    max_result_rows: int = 1_000_000
    max_result_bytes: int = 256 * 2**20
    max_memory_usage: int = 2 * 2**30

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "QueryLimits":
        """The limits the WHYSTREAM_SQL_* variables of `environ` (Settings.environ) set."""
        values = {}
        for name, default in cls().__dict__.items():
            var = f"WHYSTREAM_SQL_{name.upper()}"
            text = environ.get(var)
            if text is None:
                continue
            if not text.strip().isdigit() or int(text) <= 0:
                raise ConfigError(var, f"expected a positive whole number, got {text!r} (default {default})")
            values[name] = int(text)
        return cls(**values)

    def settings(self) -> dict:
        """Session settings, `readonly` last: once it is 1, nothing can be changed."""
        return {**self.__dict__, "timeout_overflow_mode": "throw", "result_overflow_mode": "throw",
                "allow_introspection_functions": 0, "readonly": 1}


def open_read_only_client(dsn, database: str | None, limits: QueryLimits):
    """A clickhouse-connect client whose session is read-only and limited from
    the start. On chDB the settings are SET on its own handle (other clients of
    the process keep theirs); over HTTP they ride with every request."""
    import clickhouse_connect

    settings = limits.settings()
    try:
        if dsn.kind == "chdb":
            if dsn.path is not None:
                dsn.path.mkdir(parents=True, exist_ok=True)
            return clickhouse_connect.get_client(interface="chdb", path=str(dsn.path) if dsn.path else ":memory:",
                                                 database=database, settings=settings)
        return clickhouse_connect.get_client(dsn=dsn.url, database=database, connect_timeout=5,
                                             send_receive_timeout=settings["max_execution_time"] + 10,
                                             settings=settings)
    except Exception as exc:
        raise ConfigError(ENV["clickhouse_dsn"], f"cannot open a read-only session at {dsn.redacted}: "
                                                 f"{_reason(exc)}") from None


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _reason(exc: Exception) -> str:
    """ClickHouse's own words, first line, without its scope and version trailer."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^.*?DB::Exception: ", "", text)
    return re.sub(r"(: In scope .*)|( \(version [^)]*\))", "", text)[:300]


class RefusedQuery(WhystreamError):
    """A statement the read-only surface does not run; nothing was executed."""


class ReadOnlyQueries:
    """Checks statements with ClickHouse's parser and runs the ones that pass,
    on a client from `open_client` (a call of open_read_only_client). A query
    that fails part way leaves a chDB handle with unread data behind (the next
    answer would be garbage), so after a failure the session is opened anew."""

    def __init__(self, open_client: Callable[[], object]):
        self._open_client = open_client
        self.client = open_client()
        self._table_functions: frozenset[str] | None = None
        self._functions: frozenset[str] | None = None

    def _scalar(self, sql: str):
        return self.client.query(sql).result_rows[0][0]

    def _catalogue(self) -> tuple[frozenset[str], frozenset[str]]:
        if self._table_functions is None:
            self._table_functions, self._functions = self._names("table_functions"), self._names("functions")
        return self._table_functions, self._functions

    def _names(self, table: str) -> frozenset[str]:
        # One row, whatever max_result_rows the operator chose (there are ~1,900 functions).
        return frozenset(name.lower() for name in self._scalar(f"SELECT groupArray(name) FROM system.{table}"))

    def check(self, sql: str) -> str:
        """The canonical single-line form of `sql` if it is one read query that
        touches nothing outside the database; else RefusedQuery saying why."""
        if not sql.strip():
            raise RefusedQuery("empty query")
        try:
            canonical = self._scalar(f"SELECT formatQuerySingleLine({_literal(sql)})")
        except Exception as exc:
            raise RefusedQuery(f"not one statement ClickHouse can parse: {_reason(exc)}") from None
        subquery = f"SELECT * FROM ({canonical})"
        try:
            self._scalar(f"SELECT formatQuerySingleLine({_literal(subquery)})")
        except Exception:
            raise RefusedQuery("only one read query is accepted (SELECT or WITH, or EXPLAIN of one), without "
                               "INTO OUTFILE or FORMAT; for tables and columns read system.tables and "
                               f"system.columns; got: {canonical[:80]}") from None
        tree = [r[0] for r in self.client.query(f"EXPLAIN AST {subquery}").result_rows]
        self._check_calls(tree)
        return canonical

    def _check_calls(self, tree: list[str]) -> None:
        table_functions, functions = self._catalogue()
        parents: list[tuple[int, str]] = []  # (depth, node) of the lines above
        for line in tree:
            depth, node = len(line) - len(line.lstrip(" ")), line.strip()
            while parents and parents[-1][0] >= depth:
                parents.pop()
            parent = parents[-1][1] if parents else ""
            parents.append((depth, node))
            if not node.startswith("Function "):
                continue
            name = node[len("Function "):].split(" (", 1)[0].strip("`\"").lower()
            if name in DENIED_FUNCTIONS:
                raise RefusedQuery(f"function {name}() reads the host; it is not available here")
            as_table = parent.startswith("TableExpression") or name not in functions
            if as_table and name in table_functions and name not in ALLOWED_TABLE_FUNCTIONS:
                raise RefusedQuery(f"table function {name}() reaches outside the database; only "
                                   f"{', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))} are available here")

    def query(self, sql: str, settings: dict | None = None):
        """Run `sql` if it passes check(); the result is clickhouse-connect's."""
        if settings:
            raise RefusedQuery("read-only queries take no settings: their limits are the operator's")
        canonical = self.check(sql)
        try:
            return self.client.query(canonical)
        except Exception:
            self.client.close()
            self.client = self._open_client()
            raise

    def close(self) -> None:
        self.client.close()
