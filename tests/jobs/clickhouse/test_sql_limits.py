"""Limits of the read-only surface that hold from outside the query (issue 24):
the answer comes at the deadline even when one block runs far longer than
ClickHouse's own `max_execution_time` checks; the answer is bounded while it
streams, and the sink's query port holds at most a few blocks as Python rows;
the port survives idle connections and malformed headers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from functools import partial

import pytest

from whystream.jobs.clickhouse import connection as ch
from whystream.jobs.clickhouse import query_port
from whystream.jobs.clickhouse.bounded import overdue, run_with_deadline
from whystream.jobs.clickhouse.guard import (
    AnswerTooLarge,
    QueryLimits,
    QueryTimeout,
    ReadOnlyQueries,
    open_read_only_client,
)
from whystream.jobs.clickhouse.query_port import QueryServer, SinkQueryClient

# One block of 200 rows whose every row takes long: ClickHouse checks its time limit only between blocks.
SLOW_BLOCK = "SELECT sum(editDistance(repeat('a', {n}), repeat(toString(number % 2), {n}))) FROM numbers(200)"


@pytest.fixture(autouse=True)
def no_query_left_running():
    """A query cut off at its deadline runs on in this process until its block ends;
    the next test (in this file or another on the same worker) starts without it."""
    yield
    assert overdue.wait_until_none(timeout=300), f"{overdue.running} overdue queries still run"


def _guard(stack, database, **limits) -> ReadOnlyQueries:
    chosen = QueryLimits(**limits)
    return ReadOnlyQueries(partial(open_read_only_client, ch.parse_dsn(stack.clickhouse_dsn), database, chosen),
                           chosen)


def test_the_deadline_holds_inside_one_slow_block(stack, db):
    _, database = db
    _guard(stack, database).query("SELECT 1")  # the process's function catalogue, loaded without a hurry
    guard = _guard(stack, database, max_execution_time=1)
    started = time.monotonic()
    guard.query(SLOW_BLOCK.format(n=2000))  # the same query, short: it runs
    small = time.monotonic() - started
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match="time limit of 2 s"):
        guard.query(SLOW_BLOCK.format(n=12000))  # ~36 times the work of the short one, in one block
    waited = time.monotonic() - started
    assert waited < 2 + 2 * small + 1.5, (waited, small)  # answered at the deadline, not at the block's end
    assert guard.query("SELECT 40 + 2").result_rows == [(42,)]  # a fresh session serves at once


def test_whystream_sql_exits_at_its_deadline(tmp_path):
    """The command line does not wait at exit for a chDB block that runs on (this
    one would take minutes): it says so in one line and ends, with the query."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYSTREAM_")}
    env.update(WHYSTREAM_HOME=str(tmp_path), WHYSTREAM_CLICKHOUSE_DSN=f"chdb://{tmp_path / 'chdb'}",
               WHYSTREAM_SQL_MAX_EXECUTION_TIME="2")
    result = subprocess.run([sys.executable, "-m", "whystream", "sql", SLOW_BLOCK.format(n=40000)], env=env,
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 2, result.stderr[-1000:]
    assert result.stderr.startswith("whystream: error: the query passed its time limit of 3 s")
    assert result.stderr.count("\n") == 1


def test_the_answer_is_bounded_while_it_streams(stack, db):
    _, database = db
    guard = _guard(stack, database, max_reply_bytes=1 << 20)
    assert len(guard.query("SELECT number FROM numbers(1000)").result_rows) == 1000
    with pytest.raises(AnswerTooLarge, match="WHYSTREAM_SQL_MAX_REPLY_BYTES"):
        guard.query("SELECT repeat('x', 1000) FROM numbers(1000000)")  # 1 GB; cut off after about 1 MiB
    assert overdue.running == 0  # a stream cut short between blocks closed: it holds no overdue slot
    assert guard.query("SELECT 1").result_rows == [(1,)]


class _Row:
    """A row that counts how many of its kind are alive."""

    alive = peak = 0

    def __init__(self, value):
        self.value = value
        _Row.alive += 1
        _Row.peak = max(_Row.peak, _Row.alive)

    def __del__(self):
        _Row.alive -= 1


def test_an_encoded_answer_holds_a_few_blocks_not_the_whole_result():
    """Issue 24: the port turned the whole result into Python rows (a 15 MiB result
    raised the sink's peak memory ~70 times). Encoded block by block, at most three
    blocks of rows are alive at once, however long the answer
    (bench/query_port_memory.py measures the memory)."""
    block, blocks = 1000, 200

    def work(cancelled):
        yield ("n",), ()
        for b in range(blocks):
            yield [(_Row(b * block + i),) for i in range(block)]

    answer = run_with_deadline(work, 60, 1 << 30, lambda rows: json.dumps([r[0].value for r in rows])[1:-1].encode(),
                               lambda: None)
    assert len(answer.encoded) == blocks and not answer.result_rows
    assert json.loads(b"[" + b", ".join(answer.encoded) + b"]") == list(range(block * blocks))
    assert _Row.peak <= 3 * block, _Row.peak


@pytest.fixture
def port(stack, db, tmp_path, monkeypatch):
    monkeypatch.setattr(query_port, "READ_TIMEOUT_S", 1.0)
    server = QueryServer(stack.with_(home=tmp_path), db[1]).start()
    yield server
    server.stop()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_the_port_answers_a_malformed_content_length_with_400(port, capfd):
    for length in ("\u00b2", "-1", "1e3", "0x10", "\u0661\u0662"):
        head = (f"POST /query HTTP/1.1\r\nHost: 127.0.0.1:{port.port}\r\nAuthorization: Bearer {port.token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n")
        reply = _raw(port.port, head.encode("utf-8") + b"{}")
        assert reply.startswith(b"HTTP/1.0 400") or reply.startswith(b"HTTP/1.1 400"), (length, reply[:80])
        assert b"Content-Length" in reply.split(b"\r\n\r\n", 1)[1]
    assert "Traceback" not in capfd.readouterr().err


def test_idle_connections_neither_pile_up_threads_nor_lock_the_port_out(port, db):
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port.port), timeout=10) for _ in range(60)]
    try:
        time.sleep(0.3)
        assert threading.active_count() - before <= query_port.MAX_CONNECTIONS
        time.sleep(query_port.READ_TIMEOUT_S + 1.0)  # the idle ones are dropped after the read timeout
        advertised = json.loads(port.port_file().read_text())
        client = SinkQueryClient(advertised["port"], advertised["token"], db[1])
        assert client.query("SELECT 6 * 7").result_rows == [(42,)]
    finally:
        for sock in idle:
            sock.close()
