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
3. Every call in its query tree is allowed (query_tree.py): `EXPLAIN QUERY
   TREE` of that subquery form (nothing can follow its closing parenthesis,
   so the EXPLAIN itself has no output options), as written and then as the
   analyzer resolves it, with `APPLY`, `COLUMNS`, lambdas, CTEs, `view()` and
   the bodies of the database's views. `EXPLAIN AST` left column transformers
   out (`SELECT * APPLY(file) ...` read files past it), and `readonly=1`
   refuses `file()`, `url()`, `s3()`, `remote()` and `executable()` as tables
   but not the scalar `file('/etc/passwd')` nor chDB's `python()` table
   function, which reads objects of the process it runs in.

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
does) and the same limits; its `query(sql)` refuses or runs one statement,
under the limits that hold from outside the query (bounded.py: a wall-clock
deadline, an answer bounded while it streams).
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass
from typing import Callable, Mapping

from whystream.config import ENV
from whystream.errors import ConfigError, WhystreamError
from whystream.jobs.clickhouse.bounded import AnswerTooLarge, BoundedAnswer, QueryTimeout, run_with_deadline
from whystream.jobs.clickhouse.query_tree import FunctionCatalogue, RefusedQuery, check_tree

_FUNCTIONS: dict[str, FunctionCatalogue] = {}  # ClickHouse version -> its allow-listed functions

__all__ = ["AnswerTooLarge", "QueryFailed", "QueryLimits", "QueryTimeout", "ReadOnlyQueries", "RefusedQuery", "open_read_only_client"]

@dataclass(frozen=True)
class QueryLimits:
    """Limits every read-only query runs under; the operator sets them with
    WHYSTREAM_SQL_<NAME> (e.g. WHYSTREAM_SQL_MAX_EXECUTION_TIME=120)."""

    max_execution_time: int = 60  # seconds
    max_result_rows: int = 1_000_000
    max_result_bytes: int = 256 * 2**20
    max_memory_usage: int = 2 * 2**30
    # The answer as JSON text, measured by the guard while it streams (bounded.py), not ClickHouse.
    max_reply_bytes: int = 64 * 2**20

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
        engine = {k: v for k, v in self.__dict__.items() if k != "max_reply_bytes"}
        return {**engine, "timeout_overflow_mode": "throw", "cancel_http_readonly_queries_on_client_close": 1, "result_overflow_mode": "throw",
                "allow_introspection_functions": 0, "enable_analyzer": 1, "readonly": 1}


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


class QueryFailed(WhystreamError):
    """ClickHouse refused or failed the query (a limit, an unknown column, ...): its own words."""


class ReadOnlyQueries:
    """Checks statements with ClickHouse's parser and runs the ones that pass,
    on a client from `open_client` (a call of open_read_only_client). A query
    that fails part way leaves a chDB handle with unread data behind (the next
    answer would be garbage), so after a failure the session is opened anew."""

    def __init__(self, open_client: Callable[[], object], limits: QueryLimits = QueryLimits()):
        self._open_client = open_client
        self.limits = limits
        self.client = open_client()
        self._chdb = type(self.client).__name__ == "ChdbClient"
        self._functions: FunctionCatalogue | None = None

    @staticmethod
    def _scalar(client, sql: str):
        return client.query(sql).result_rows[0][0]

    def _catalogue(self, client) -> FunctionCatalogue:
        # One row per list, whatever max_result_rows the operator chose (there are ~1,900 functions).
        # The functions depend on the ClickHouse version only: loaded once per process and version.
        if self._functions is None:
            version = self._scalar(client, "SELECT version()")
            if version not in _FUNCTIONS:
                _FUNCTIONS[version] = FunctionCatalogue.load(lambda sql: client.query(sql).result_rows[0])
            bodies = dict(client.query("SELECT concat(database, '.', name), as_select FROM system.tables "
                                       "WHERE engine = 'View' LIMIT 10000").result_rows)
            self._functions = _FUNCTIONS[version].with_views(bodies, lambda sql: [
                r[0] for r in client.query(f"EXPLAIN QUERY TREE run_passes = 0 {sql}").result_rows])
        return self._functions

    def check(self, sql: str, client=None) -> str:
        """The canonical single-line form of `sql` if it is one read query that
        touches nothing outside the database; else RefusedQuery saying why."""
        client = client or self.client
        if not sql.strip():
            raise RefusedQuery("empty query")
        try:  # one round trip: the canonical form, and whether it parses as a subquery
            canonical, readable = client.query(
                f"SELECT formatQuerySingleLine({_literal(sql)}) AS c, "
                "formatQuerySingleLineOrNull(concat('SELECT * FROM (', c, ')')) IS NOT NULL").result_rows[0]
        except Exception as exc:
            raise RefusedQuery(f"not one statement ClickHouse can parse: {_reason(exc)}") from None
        subquery = f"SELECT * FROM ({canonical})"
        if not readable:
            raise RefusedQuery("only one read query is accepted (SELECT or WITH, or EXPLAIN of one), without "
                               "INTO OUTFILE or FORMAT; for tables and columns read system.tables and "
                               f"system.columns; got: {canonical[:80]}")
        # The tree as written first (nothing runs), then the analyzer's resolved
        # tree (it evaluates constants and scalar subqueries while it resolves).
        # ClickHouse cannot resolve an EXPLAIN on a read-only session; an EXPLAIN
        # runs nothing of its query but the analysis, whose calls pass 1 checked.
        catalogue = self._catalogue(client)
        passes = ["EXPLAIN QUERY TREE run_passes = 0"] + ([] if canonical.startswith("EXPLAIN ") else
                                                          ["EXPLAIN QUERY TREE"])
        for explain in passes:
            try:
                tree = [r[0] for r in client.query(f"{explain} {subquery}").result_rows]
            except Exception as exc:
                raise RefusedQuery(f"ClickHouse cannot analyse the query: {_reason(exc)}") from None
            check_tree(tree, catalogue)
        return canonical

    def query(self, sql: str, settings: dict | None = None, encode: Callable[[list], bytes] | None = None
              ) -> BoundedAnswer:
        """Run `sql` if it passes check(), within the limits that hold from outside
        (bounded.py): the answer at the latest max_execution_time + 1 s after the
        call, at most max_reply_bytes of it. With `encode`, each block of rows is
        kept only encoded (BoundedAnswer.encoded)."""
        if settings:
            raise RefusedQuery("read-only queries take no settings: their limits are the operator's")
        client, query_id = self.client, secrets.token_hex(16)
        abandoned = threading.Event()

        def work(cancelled):
            try:
                canonical = self.check(sql, client)
                if canonical.startswith("EXPLAIN "):  # chDB streams no EXPLAIN; its text is the size of the query's
                    result = client.query(canonical, settings=self._id_setting(query_id))
                    yield tuple(result.column_names), tuple(result.column_types)
                    yield result.result_rows
                    return
                with client.query_row_block_stream(canonical, settings=self._id_setting(query_id)) as stream:
                    yield tuple(stream.source.column_names), tuple(stream.source.column_types)
                    for block in stream:
                        yield block
                        if cancelled():
                            return  # leaving the stream cancels the query (chDB's StreamingResult.cancel)
            finally:
                if abandoned.is_set():
                    client.close()

        def overdue() -> None:  # the caller has given up on this session: a fresh one for the next query
            abandoned.set()
            self.client = self._open_client()
            self._kill(query_id)

        try:
            return run_with_deadline(work, self.limits.max_execution_time + 1, self.limits.max_reply_bytes,
                                     encode, overdue)
        except (RefusedQuery, QueryTimeout, AnswerTooLarge):
            raise
        except Exception as exc:
            # A chDB handle whose query failed half way holds unread data: open it anew.
            if self.client is client:
                client.close()
                self.client = self._open_client()
            raise QueryFailed(f"ClickHouse: {_reason(exc)}") from None

    def _id_setting(self, query_id: str) -> dict:
        return {} if self._chdb else {"query_id": query_id}

    def _kill(self, query_id: str) -> None:
        """Over HTTP, stop the query on the server from another session (its own user's
        query: no privilege needed). chDB stops it at the end of the block."""
        if self._chdb:
            return
        try:
            self.client.command(f"KILL QUERY WHERE query_id = {_literal(query_id)} ASYNC")
        except Exception:  # noqa: BLE001 (best effort: the server also cancels it when its client goes away)
            pass

    def close(self) -> None:
        self.client.close()
