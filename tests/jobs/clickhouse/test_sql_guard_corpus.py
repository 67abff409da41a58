"""A generated attack corpus against the SQL guard: every way to call a
function (direct, quoted, upper case, `APPLY` on `*`, `t.*`, `COLUMNS`,
`EXCEPT`, `REPLACE`, lambdas, higher-order functions, WITH-lambdas) x the
functions that read the host or the process x every nesting (subquery,
scalar subquery, CTE, `view()`, `IN`, `UNION`, `EXPLAIN` forms, a view of
the database). Each must be refused by the guard before anything runs,
and the secret must appear in no answer and no error. Issue 24's findings
(APPLY, `VALUES`) are among them; they passed the syntax-tree guard."""

from __future__ import annotations

import itertools
import secrets
from functools import partial

import pytest

from whystream.jobs.clickhouse import connection as ch
from whystream.jobs.clickhouse.guard import QueryLimits, ReadOnlyQueries, RefusedQuery, open_read_only_client

# Functions that read the host or the process, each called on one String argument `p`.
FUNCTIONS = ["file", "FILE", "filesystemAvailable", "getSetting", "dictGet", "hostName", "currentRequestURL"]

# How `f` gets called on column `p` of `src` (a table expression with p).
CALLS = {
    "direct": "SELECT {f}(p) FROM {src}",
    "backquoted": "SELECT `{f}`(p) FROM {src}",
    "apply *": "SELECT * APPLY({f}) FROM {src}",
    "apply t.*": "SELECT t.* APPLY({f}) FROM {src} AS t",
    "apply COLUMNS": "SELECT COLUMNS('p') APPLY({f}) FROM {src}",
    "apply EXCEPT": "SELECT * EXCEPT(q) APPLY({f}) FROM (SELECT p, 1 AS q FROM {src})",
    "apply lambda": "SELECT * APPLY(x -> {f}(x)) FROM {src}",
    "replace": "SELECT * REPLACE({f}(p) AS p) FROM {src}",
    "arrayMap": "SELECT arrayMap(x -> {f}(x), [p]) FROM {src}",
    "arrayFilter": "SELECT arrayFilter(x -> {f}(x) != '', [p]) FROM {src}",
    "WITH lambda": "WITH x -> {f}(x) AS g SELECT g(p) FROM {src}",
    "WITH alias": "WITH {f}(p) AS c SELECT c FROM {src}",
    "WHERE": "SELECT 1 FROM {src} WHERE {f}(p) != ''",
    "ORDER BY": "SELECT 1 FROM {src} ORDER BY {f}(p)",
    "aggregate": "SELECT any({f}(p)) FROM {src}",
    "window": "SELECT any({f}(p)) OVER () FROM {src}",
}

# Where the call sits: `{q}` is the query of CALLS.
NESTINGS = {
    "plain": "{q}",
    "subquery": "SELECT * FROM ({q})",
    "scalar subquery": "SELECT ({q} LIMIT 1)",
    "CTE": "WITH c AS ({q}) SELECT * FROM c",
    "view()": "SELECT * FROM view({q})",
    "IN": "SELECT 1 WHERE 'x' IN ({q})",
    "UNION": "SELECT 'a' UNION ALL ({q})",
    "EXPLAIN": "EXPLAIN {q}",
    "EXPLAIN SYNTAX": "EXPLAIN SYNTAX {q}",
    "EXPLAIN QUERY TREE": "EXPLAIN QUERY TREE {q}",
    "EXPLAIN PIPELINE": "EXPLAIN PIPELINE {q}",
    "EXPLAIN ESTIMATE": "EXPLAIN ESTIMATE {q}",
}

# Table functions that reach the host or the network.
TABLE_FUNCTIONS = ["file('{secret}', 'LineAsString')", "url('http://127.0.0.1:9/x', 'CSV', 'p String')",
                   "remote('127.0.0.1:9', system.one)", "s3('http://127.0.0.1:9/b/x.csv', 'CSV', 'p String')",
                   "executable('cat {secret}', 'LineAsString', 'p String')", "python(os)",
                   "mysql('127.0.0.1:9', 'd', 't', 'u', 'p')", "dictionary('d')", "filesystem('/')",
                   "merge('system', '^one$') AS m, file('{secret}')"]


@pytest.fixture(scope="module")
def guard(stack_module):
    stack, database = stack_module
    guard = ReadOnlyQueries(partial(open_read_only_client, ch.parse_dsn(stack.clickhouse_dsn), database,
                                    QueryLimits()), QueryLimits())
    yield guard
    guard.close()


@pytest.fixture(scope="module")
def stack_module(stack):
    """The stack with a database holding a view whose body reads the host and
    one that reads that view (as a careless or hostile schema owner could)."""
    database = f"t_{secrets.token_hex(5)}"
    client = ch.connect(stack, database, migrate_schema=False)
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(f"CREATE VIEW {database}.host_view AS SELECT * APPLY(file) FROM (SELECT '/etc/hostname' AS p)")
    client.command(f"CREATE VIEW {database}.on_view AS SELECT * FROM {database}.host_view")
    client.command(f"CREATE VIEW {database}.fine_view AS SELECT number * {{k:UInt64}} AS n FROM numbers(3)")
    yield stack, database
    client.command(f"DROP DATABASE IF EXISTS {database} SYNC")
    client.close()


def _corpus(secret: str):
    source = f"(SELECT '{secret}' AS p)"
    for (how, call), (where, nest), f in itertools.product(CALLS.items(), NESTINGS.items(), FUNCTIONS):
        yield f"{how} x {where} x {f}", nest.format(q=call.format(f=f, src=source))
    for fn, (where, nest) in itertools.product(TABLE_FUNCTIONS, NESTINGS.items()):
        yield f"{fn} x {where}", nest.format(q=f"SELECT * FROM {fn.format(secret=secret)}")


def test_generated_corpus_is_refused_before_anything_runs(guard, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text(f"SECRET-{secrets.token_hex(8)}\n")
    token = secret.read_text().strip()
    tried = 0
    for label, sql in _corpus(str(secret)):
        with pytest.raises(RefusedQuery) as refused:
            guard.check(sql)
        assert token not in str(refused.value), label
        tried += 1
    assert tried == len(CALLS) * len(NESTINGS) * len(FUNCTIONS) + len(TABLE_FUNCTIONS) * len(NESTINGS)
    assert guard.query("SELECT 40 + 2").result_rows == [(42,)]  # and the session still serves


def test_issue_24_apply_findings_are_refused(guard):
    """The reported bypasses, verbatim: each printed /etc/passwd through the syntax-tree guard."""
    for sql in ["SELECT * APPLY(file) FROM (SELECT '/etc/passwd' AS p)",
                "SELECT COLUMNS('p') APPLY(file) FROM (SELECT '/etc/passwd' AS p)",
                "SELECT t.* APPLY(file) FROM (SELECT '/etc/passwd' AS p) AS t",
                "SELECT * EXCEPT(x) APPLY(file) FROM (SELECT '/etc/passwd' AS p, 1 AS x)",
                "SELECT * APPLY(x -> file(x)) FROM (SELECT '/etc/passwd' AS p)",
                "SELECT * FROM view(SELECT * APPLY(file) FROM (SELECT '/etc/passwd' AS p))",
                "WITH c AS (SELECT * APPLY(file) FROM (SELECT '/etc/passwd' AS p)) SELECT * FROM c",
                "SELECT * APPLY(filesystemAvailable) FROM (SELECT '' AS p)",
                "SELECT * APPLY(file) FROM (SELECT '/proc/self/environ' AS p)"]:
        with pytest.raises(RefusedQuery, match="not available here"):
            guard.query(sql)


def test_forged_tree_rows_are_refused(guard):
    """Column names are printed raw in the query tree: a name holding a newline
    or `function_name:` must not hide a call or pass for one."""
    for sql in ["SELECT * APPLY(file) FROM (SELECT '/etc/hostname' AS `a\nPROJECTION COLUMNS\n  b`)",
                "SELECT * FROM format(JSONEachRow, '{\"a\\\\nPROJECTION COLUMNS\\\\n    b\": \"/etc/hostname\"}') "
                "AS t, (SELECT * APPLY(file) FROM (SELECT '/etc/hostname' AS p))",
                "SELECT file(p) AS `x, function_name: plus` FROM (SELECT '/etc/hostname' AS p)"]:
        with pytest.raises(RefusedQuery):
            guard.query(sql)


def test_views_are_read_through(guard, stack_module):
    """The analyzer does not expand a view; the guard reads its body (and the views it reads)."""
    _, database = stack_module
    for sql in [f"SELECT * FROM {database}.host_view", f"SELECT * FROM {database}.on_view",
                f"SELECT * FROM (SELECT 1) AS a, {database}.on_view AS b"]:
        with pytest.raises(RefusedQuery, match="host_view"):
            guard.query(sql)
    assert guard.query(f"SELECT sum(n) FROM {database}.fine_view(k = 2)").result_rows == [(6,)]


def test_analyst_queries_still_run(guard):
    """VALUES (refused by the old guard), window functions, arrayJoin, WITH, combinators, EXPLAIN."""
    for sql, expected in [
        ("SELECT * FROM (VALUES (1), (2)) ORDER BY 1 DESC LIMIT 1", 2),
        ("SELECT sum(c1) FROM VALUES('c1 UInt8', 1, 2, 3)", 6),
        ("SELECT max(r) FROM (SELECT row_number() OVER (ORDER BY number) AS r FROM numbers(5))", 5),
        ("SELECT sum(x) FROM (SELECT arrayJoin([1, 2, 3]) AS x)", 6),
        ("WITH 2 AS k, t AS (SELECT number * k AS n FROM numbers(4)) SELECT max(n) FROM t", 6),
        ("SELECT countIf(number > 5) FROM numbers(10)", 4),
        ("SELECT uniqExactIf(number % 3, number > 0) FROM numbers(10)", 3),
        ("SELECT quantilesExactMerge(0.5)(s)[1] FROM (SELECT quantilesExactState(0.5)(number) AS s "
         "FROM numbers(5))", 2),
        ("SELECT length(arrayMap(x -> x * 2, [1, 2]))", 2),
        ("SELECT * APPLY(toString) FROM (SELECT 7 AS p)", "7"),
        ("SELECT lagInFrame(number) OVER (ORDER BY number) FROM numbers(2) ORDER BY number DESC LIMIT 1", 0),
        ("SELECT toStartOfHour(toDateTime('2026-01-01 10:20:00', 'UTC')) = '2026-01-01 10:00:00'", 1),
        ("SELECT count() FROM numbers(10) WHERE number IN (SELECT number FROM numbers(3))", 3),
    ]:
        assert guard.query(sql).result_rows[0][0] == expected, sql
    assert guard.query("EXPLAIN SELECT sum(number) FROM numbers(3)").result_rows
