"""Attacks on the read-only SQL surface: `whystream sql` (its own read-only
session) and the sink's query port (HTTP, token), on the real ClickHouse
engine. Every attempt must be refused or harmless, and afterwards the
database, the host's files and the guard's session must be as before."""

from __future__ import annotations

import json
import os
import secrets
import stat
import urllib.error
import urllib.request
from functools import partial

import pytest

from support.docs import cookbook
from whystream.config import Settings
from whystream.errors import WhystreamError
from whystream.jobs.clickhouse import connection as ch
from whystream.jobs.clickhouse.guard import (
    QueryLimits,
    ReadOnlyQueries,
    RefusedQuery,
    open_read_only_client,
)
from whystream.jobs.clickhouse.query_port import (
    QueryServer,
    SinkQueryClient,
    open_query_client,
)
from whystream.jobs.clickhouse.sql import lit, rows

TABLE_FUNCTIONS = ["file('{secret}', 'LineAsString')", "url('http://127.0.0.1:9/x', 'CSV', 'a String')",
                   "s3('http://127.0.0.1:9/bucket/x.csv', 'CSV', 'a String')", "remote('127.0.0.1:9', system.one)",
                   "remoteSecure('127.0.0.1:9', system.one)", "cluster('default', system.one)",
                   "executable('cat {secret}', 'LineAsString', 'a String')", "python(os)", "filesystem('/etc')",
                   "mysql('127.0.0.1:9', 'd', 't', 'u', 'p')", "postgresql('127.0.0.1:9', 'd', 't', 'u', 'p')",
                   "sqlite('{secret}', 't')", "hdfs('hdfs://127.0.0.1:9/x', 'CSV', 'a String')",
                   "fileCluster('default', '{secret}')", "urlCluster('default', 'http://127.0.0.1:9/x')",
                   "jdbc('x', 'y', 'z')", "odbc('x', 'y', 'z')", "input('a String')", "dictionary('d')",
                   "azureBlobStorage('http://127.0.0.1:9', 'c', 'x')", "redis('127.0.0.1:9', 'k', 'k String')",
                   "mongodb('127.0.0.1:9', 'd', 'c', 'u', 'p', 'a String')", "iceberg('{secret}')",
                   "deltaLake('{secret}')", "gcs('http://127.0.0.1:9/b/x')", "URL('http://127.0.0.1:9/x', CSV)",
                   "FILE('{secret}')"]

HOST_READS = ["SELECT file('{secret}')", "SELECT FILE('{secret}')", "SELECT `file`('{secret}')",
              "SELECT arrayMap(p -> file(p), ['{secret}'])", "SELECT 1 WHERE file('{secret}') != ''",
              "SELECT (SELECT file('{secret}'))", "EXPLAIN SYNTAX SELECT file('{secret}')",
              "WITH file('{secret}') AS f SELECT f", "SELECT filesystemAvailable()",
              "SELECT * FROM numbers(1) WHERE number IN (SELECT * FROM file('{secret}'))",
              "SELECT * FROM numbers(1) WHERE toString(number) IN url('http://127.0.0.1:9/', 'CSV', 'a String')"]

STATEMENTS = ["DROP TABLE {db}.drift_alerts", "TRUNCATE TABLE {db}.drift_alerts",
              "INSERT INTO {db}.drift_alerts (alert_id) VALUES ('x')", "ALTER TABLE {db}.drift_alerts DELETE WHERE 1",
              "CREATE TABLE {db}.evil (a Int8) ENGINE = Memory", "RENAME TABLE {db}.drift_alerts TO {db}.gone",
              "DETACH TABLE {db}.drift_alerts", "OPTIMIZE TABLE {db}.drift_alerts FINAL", "SYSTEM STOP MERGES",
              "SET readonly = 0", "KILL QUERY WHERE 1", "GRANT ALL ON *.* TO default", "SHOW TABLES",
              "DESCRIBE TABLE {db}.explanations", "CREATE TEMPORARY TABLE t (a Int8)", "", "   ",
              # the reported bypass: a quote inside a comment, then more statements
              "SELECT 1 -- '\n; DROP TABLE {db}.drift_alerts; SELECT 2 -- '",
              "SELECT 1; DROP TABLE {db}.drift_alerts", "SELECT 1 /* ; */ ; DROP TABLE {db}.drift_alerts",
              "SELECT '\\'; DROP TABLE {db}.drift_alerts; --'; DROP TABLE {db}.drift_alerts",
              "SELECT \"a;\" FROM (SELECT 1 AS `a;`); DROP TABLE {db}.drift_alerts",
              "SELECT 1;\n\nDROP TABLE {db}.drift_alerts;", "EXPLAIN PIPELINE SELECT 1; DROP TABLE {db}.drift_alerts",
              "SELECT 1 INTO OUTFILE '{out}'", "SELECT 1 INTO OUTFILE '{out}' TRUNCATE",
              "SELECT 1 INTO OUTFILE '{out}' AND STDOUT", "SELECT 1 INTO OUTFILE '{out}' APPEND FORMAT CSV",
              "WITH 1 AS x SELECT x INTO OUTFILE '{out}'", "EXPLAIN SELECT 1 INTO OUTFILE '{out}'",
              "EXPLAIN AST SELECT 1 INTO OUTFILE '{out}'", "SELECT 1 UNION ALL SELECT 2 INTO OUTFILE '{out}'",
              "SELECT 1 FORMAT CSV", "SELECT 1 SETTINGS readonly = 0", "SELECT 1 SETTINGS max_result_rows = 0",
              "SELECT count() FROM numbers(10) SETTINGS max_execution_time = 0",
              "SELECT * FROM numbers(1) SETTINGS allow_introspection_functions = 1"]


def _state(client, database: str, paths) -> dict:
    """What an attack must not change: the database's tables, a table's rows, files."""
    return {"tables": sorted(r["name"] for r in rows(client, f"SELECT name FROM system.tables "
                                                                f"WHERE database = {lit(database)}")),
            "alerts": rows(client, f"SELECT count() AS n FROM {database}.drift_alerts")[0]["n"],
            "files": {str(p): p.exists() for p in paths}}


@pytest.fixture
def target(db, tmp_path):
    """(writer client, database, secret file, output path, attack formatter)."""
    client, database = db
    client.command(f"INSERT INTO {database}.drift_alerts (alert_id) VALUES ('kept')")
    secret = tmp_path / "secret.txt"
    secret.write_text(f"SECRET-{secrets.token_hex(8)}\n")
    out = tmp_path / "out.tsv"

    def attack(template: str) -> str:
        return template.format(db=database, secret=secret, out=out)
    return client, database, secret, out, attack


def _attacks(attack):
    yield from (attack(s) for s in STATEMENTS)
    yield from (attack(s) for s in HOST_READS)
    yield from (attack(f"SELECT * FROM {fn}") for fn in TABLE_FUNCTIONS)
    yield from (attack(f"SELECT count() FROM numbers(3) AS n, {fn} AS t") for fn in TABLE_FUNCTIONS[:6])


def _assert_all_refused(run, target) -> None:
    client, database, secret, out, attack = target
    before = _state(client, database, [out])
    token = secret.read_text().strip()
    for sql in _attacks(attack):
        try:
            result = run(sql)
        except (WhystreamError, Exception) as exc:  # refused by the guard, or by ClickHouse's read-only session
            assert token not in str(exc), sql
            continue
        # What ran must be harmless: nothing of the host's in it.
        assert token not in repr(result.result_rows), sql
        pytest.fail(f"not refused: {sql!r} -> {result.result_rows[:3]!r}")
    assert _state(client, database, [out]) == before
    assert run("SELECT 40 + 2 AS answer").result_rows[0][0] == 42  # and the session still serves


def guard_on(stack, database: str) -> ReadOnlyQueries:
    """The guard as the query port makes it: on the stack's chDB, with the limits of the
    operator's WHYSTREAM_SQL_* variables (as Settings.load reads them now)."""
    limits = QueryLimits.from_env(Settings.load().environ)
    return ReadOnlyQueries(partial(open_read_only_client, ch.parse_dsn(stack.clickhouse_dsn), database, limits), limits)


def test_guard_refuses_every_bypass_on_its_own_session(stack, target):
    _, database, *_ = target
    guard = guard_on(stack, database)
    _assert_all_refused(guard.query, target)


def test_guard_refusals_come_from_the_guard_itself(stack, target):
    """The guard, not a lucky ClickHouse error, refuses host access and output
    options: no statement of these reaches ClickHouse for execution."""
    _, database, _, _, attack = target
    guard = guard_on(stack, database)
    for sql in [*(attack(f"SELECT * FROM {fn}") for fn in TABLE_FUNCTIONS), *map(attack, HOST_READS)]:
        with pytest.raises(RefusedQuery, match="not available here|reaches outside"):
            guard.check(sql)
    for template in [s for s in STATEMENTS if "OUTFILE" in s or "FORMAT" in s or "DROP" in s]:
        with pytest.raises(RefusedQuery):
            guard.check(attack(template))


def test_ordinary_reads_still_work(stack, target):
    client, database, *_ = target
    guard = guard_on(stack, database)
    for sql, expected in [
        ("SELECT 1", 1), ("  select 41 + 1 ;", 42), ("-- a comment\nSELECT count() FROM drift_alerts", 1),
        ("WITH 2 AS x SELECT x * 3", 6), ("SELECT count() FROM numbers(1000)", 1000),
        ("SELECT 1 UNION ALL SELECT 2 ORDER BY 1 LIMIT 1", 1), ("SELECT ';' AS s", ";"),
        (f"SELECT count() FROM system.tables WHERE database = '{database}' AND name = 'explanations'", 1),
        ("SELECT length(format('{} {}', 'a', 'b'))", 3),
        ("SELECT count() FROM feature_drift(model = 'fraud', start = now() - INTERVAL 5 MINUTE, end = now())", 0),
    ]:
        assert guard.query(sql).result_rows[0][0] == expected, sql
    assert guard.query("EXPLAIN SELECT 1").result_rows
    for sql in cookbook(database).values():  # the auditor's queries of docs/cookbook.md, as printed there
        guard.query(sql)


def test_limits_are_the_operators_not_the_querys(stack, target, monkeypatch):
    _, database, *_ = target
    guard_on(stack, database).query("SELECT 1")  # the process's function catalogue, loaded without a hurry
    monkeypatch.setenv("WHYSTREAM_SQL_MAX_RESULT_ROWS", "1000")
    assert QueryLimits.from_env(Settings.load().environ).max_result_rows == 1000
    guard = guard_on(stack, database)
    with pytest.raises(WhystreamError, match="(?i)limit for result exceeded"):
        guard.query("SELECT * FROM system.numbers")
    with pytest.raises(WhystreamError, match="(?i)readonly"):
        guard.query("SELECT count() FROM numbers(10) SETTINGS max_result_rows = 0")
    assert guard.query("SELECT count() FROM numbers(10)").result_rows == [(10,)]  # the session recovered
    monkeypatch.setenv("WHYSTREAM_SQL_MAX_EXECUTION_TIME", "1")
    guard = guard_on(stack, database)
    # ClickHouse's own limit between blocks, or the guard's deadline a second later (a loaded machine)
    with pytest.raises(WhystreamError, match="(?i)timeout exceeded|passed its time limit"):
        guard.query("SELECT count() FROM numbers(1000000000000)")
    monkeypatch.setenv("WHYSTREAM_SQL_MAX_RESULT_ROWS", "lots")
    with pytest.raises(WhystreamError, match="WHYSTREAM_SQL_MAX_RESULT_ROWS"):
        QueryLimits.from_env(Settings.load().environ)


def test_cli_sql_refuses_and_serves(stack, target, tmp_path):
    from typer.testing import CliRunner

    from whystream.cli import app

    client, database, secret, out, attack = target
    home = tmp_path / "home"  # no sink advertises a port here: `sql` opens its own read-only session
    before = _state(client, database, [out])
    for sql in [attack(STATEMENTS[0]), attack(STATEMENTS[17]), attack("SELECT 1 INTO OUTFILE '{out}'"),
                attack(HOST_READS[0]), attack("SELECT * FROM " + TABLE_FUNCTIONS[0])]:
        result = CliRunner().invoke(app, ["--home", str(home), "--clickhouse-dsn", stack.clickhouse_dsn,
                                          "sql", "--database", database, sql])
        assert result.exit_code != 0 and isinstance(result.exception, WhystreamError), sql
        assert secret.read_text().strip() not in result.output
    assert _state(client, database, [out]) == before
    result = CliRunner().invoke(app, ["--home", str(home), "--clickhouse-dsn", stack.clickhouse_dsn, "sql",
                                      "--database", database, "SELECT number AS n FROM system.numbers LIMIT 3"])
    assert result.exit_code == 0, result.output
    assert "n" in result.output and "2" in result.output


# ---------------------------------------------------------------- the query port

def _post(port: int, body: bytes, headers: dict, method: str = "POST") -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/query", data=body if method == "POST" else None,
                                     headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def port(stack, target, tmp_path):
    _, database, *_ = target
    server = QueryServer(stack.with_(home=tmp_path), database).start()
    yield server
    server.stop()


def test_query_port_refuses_every_bypass(port, target):
    advertised = json.loads(port.port_file().read_text())
    client = SinkQueryClient(advertised["port"], advertised["token"], target[1])
    _assert_all_refused(client.query, target)


def test_query_port_wants_its_token_loopback_and_json(port, target):
    client, database, *_ = target
    mode = stat.S_IMODE(os.stat(port.port_file()).st_mode)
    assert mode == 0o600, oct(mode)
    token = json.loads(port.port_file().read_text())["token"]
    assert len(token) >= 32
    body = json.dumps({"sql": "SELECT 1", "database": database}).encode()
    good = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    assert _post(port.port, body, good) == (200, {"columns": ["1"], "types": ["UInt8"], "rows": [[1]]})
    refused = [
        ({"Content-Type": "application/json"}, 401),  # no token
        ({**good, "Authorization": "Bearer " + "x" * len(token)}, 401),  # wrong token
        ({**good, "Authorization": token}, 401),  # not a bearer header
        ({**good, "Host": "evil.example:80"}, 403),  # DNS rebinding: a name that resolves here
        ({**good, "Host": f"attacker.test:{port.port}"}, 403),
        ({**good, "Origin": "http://evil.example"}, 403),  # a web page in the operator's browser
        ({**good, "Content-Type": "text/plain"}, 415),  # a "simple" cross-site POST
        ({**good, "Content-Type": "application/x-www-form-urlencoded"}, 415),
    ]
    for headers, status in refused:
        assert _post(port.port, body, headers)[0] == status, headers
    assert _post(port.port, b"", good, method="GET")[0] == 405
    try:  # refused before it is read: 413, or the connection closed while the client still sends
        assert _post(port.port, b"x" * (2 << 20), good)[0] == 413
    except urllib.error.URLError as exc:
        assert isinstance(exc.reason, (BrokenPipeError, ConnectionResetError)), exc
    drop = json.dumps({"sql": f"DROP TABLE {database}.drift_alerts", "database": database}).encode()
    assert _post(port.port, drop, {"Content-Type": "application/json"})[0] == 401
    assert rows(client, f"SELECT count() AS n FROM {database}.drift_alerts")[0]["n"] == 1


def test_readers_find_the_port_and_its_token(port, stack, target, tmp_path):
    _, database, *_ = target
    reader = open_query_client(stack.with_(home=tmp_path), database)
    assert isinstance(reader, SinkQueryClient)
    assert reader.query("SELECT count() FROM drift_alerts").result_rows == [(1,)]
