"""The sink's query port: read-only queries for `sql`, `drift` and `report`
while `whystream sink` owns the chDB directory (a chDB directory is open in
one process at a time).

The port listens on 127.0.0.1 only and is advertised, with a random token, in
`<home>/sink.port` (mode 0600: only the sink's user can read the token). A
request is answered only when it is a POST of JSON to /query that carries
`Authorization: Bearer <token>`, names a loopback Host (no DNS rebinding) and
no Origin (no web page in the operator's browser). Every statement then goes
through the guard of `guard`, on a read-only session of its own, under its
limits that hold from outside (bounded.py): each block of the answer is
encoded to JSON as it streams, so the sink never holds the whole result as
Python rows. The port itself is bounded too: MAX_CONNECTIONS at once (more
are closed), READ_TIMEOUT_S to send a request, MAX_REQUEST_BYTES of body.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hmac
import ipaddress
import json
import math
import os
import secrets
import threading
import urllib.error
import urllib.request
import uuid
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from whystream.config import Settings
from whystream.config.secrets import from_file, write_private
from whystream.errors import ConfigError, WhystreamError
from whystream.jobs.clickhouse.connection import (
    DSN_VAR,
    PORT_FILE,
    Dsn,
    connect,
    parse_dsn,
)
from whystream.jobs.clickhouse.guard import (
    QueryLimits,
    ReadOnlyQueries,
    open_read_only_client,
)
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident, lit, one_line, rows

READER_DSN_VAR = "WHYSTREAM_CLICKHOUSE_READER_DSN"
MAX_REQUEST_BYTES = 1 << 20
READ_TIMEOUT_S = 10.0  # to send a request (headers and body) once connected
MAX_CONNECTIONS = 16  # open at once; more are closed at once (each holds a thread)


def _encoded_rows(rows: list) -> bytes:
    """One block of rows as the JSON text of their list's items (no brackets)."""
    return json.dumps([_jsonable(list(r)) for r in rows])[1:-1].encode()


class _BoundedServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with at most MAX_CONNECTIONS connections (and threads)
    at once, which never prints a traceback for a client's fault."""

    daemon_threads = True

    def __init__(self, *args, **kwargs):
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: closed, not queued
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        pass  # a client that timed out, went away or sent garbage; the port keeps serving
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class ProxyResult:
    def __init__(self, column_names, column_types, result_rows):
        self.column_names = tuple(column_names)
        self.column_types = tuple(column_types)
        self.result_rows = [tuple(r) for r in result_rows]

    def named_results(self):
        return [dict(zip(self.column_names, r)) for r in self.result_rows]


class SinkQueryClient:
    """Read-only queries through the query port of a running `whystream sink`.
    Quacks like a clickhouse-connect client for `query()`; values come back as
    JSON types (times as ISO strings)."""

    def __init__(self, port: int, token: str, database: str = DEFAULT_DATABASE, timeout: float = 120.0):
        self.url = f"http://127.0.0.1:{port}/query"
        self.token = token
        self.database = database
        self.timeout = timeout

    def query(self, sql: str, settings: dict | None = None) -> ProxyResult:
        if settings:
            raise WhystreamError("the query port takes no settings: its limits are the operator's")
        body = json.dumps({"sql": sql, "database": self.database}).encode()
        request = urllib.request.Request(self.url, data=body, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            reply = json.loads(exc.read() or b"{}")
            raise WhystreamError(reply.get("error") or f"query port answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConfigError(DSN_VAR, f"the `whystream sink` query port {self.url} does not answer ({exc})") from None
        return ProxyResult(reply["columns"], reply["types"], reply["rows"])

    def close(self) -> None:
        pass


def _jsonable(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (decimal.Decimal, uuid.UUID, ipaddress.IPv4Address, ipaddress.IPv6Address, bytes)):
        return str(value)
    return value


def _loopback_host(host: str, port: int) -> bool:
    return host in {f"{name}:{port}" for name in LOOPBACK_HOSTS}


class QueryServer:
    """The read-only query port a `whystream sink` process serves on 127.0.0.1,
    advertised with its token in `<home>/sink.port` while it runs."""

    def __init__(self, settings: Settings, database: str = DEFAULT_DATABASE, port: int = 0):
        self.settings = settings
        self.database = database
        self.token = secrets.token_urlsafe(32)
        self._guards: dict[str, ReadOnlyQueries] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = READ_TIMEOUT_S  # a client that stops sending is dropped, its thread freed

            def do_POST(self):  # noqa: N802 (http.server's naming)
                refused = server.refusal(self.path, self.headers)
                if refused:
                    return self._reply(*refused)
                try:
                    request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    answer = server.query(request.get("database") or server.database, request["sql"])
                    head = json.dumps({"columns": list(answer.column_names),
                                       "types": [t.name for t in answer.column_types]})
                    # the rows as they were encoded block by block, never all as Python objects at once
                    body = b"".join([head[:-1].encode(), b', "rows": [', b", ".join(c for c in answer.encoded if c),
                                     b"]}"])
                    self._send(200, body)
                except Exception as exc:  # the caller gets the message, the sink keeps running
                    self._reply(400, {"error": one_line(exc, 2000)})

            def _refuse_method(self):
                self._reply(405, {"error": "POST only"})

            do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _refuse_method  # noqa: N815

            def _reply(self, status: int, reply: dict):
                self._send(status, json.dumps(reply).encode())

            def _send(self, status: int, data: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = _BoundedServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="whystream-query-port", daemon=True)

    def refusal(self, path: str, headers) -> tuple[int, dict] | None:
        """(status, reply) for a request that is not one of ours; None for one that is."""
        if path != "/query":
            return 404, {"error": "POST /query only"}
        if not _loopback_host(headers.get("Host", ""), self.port):
            return 403, {"error": "Host must be this machine's loopback address"}
        if headers.get("Origin") is not None:
            return 403, {"error": "requests from web pages are refused"}
        given = headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            return 401, {"error": f"missing or wrong token (it is in {self.port_file()})"}
        if headers.get_content_type() != "application/json":
            return 415, {"error": "Content-Type must be application/json"}
        length = headers.get("Content-Length", "")
        if not (length.isascii() and length.isdigit()):  # not "²" (a digit to str.isdigit, not to int)
            return 400, {"error": "a Content-Length of ASCII digits, please"}
        if int(length) > MAX_REQUEST_BYTES:
            return 413, {"error": f"a request body of at most {MAX_REQUEST_BYTES} bytes"}
        return None

    def query(self, database: str, sql: str):
        """One guarded read-only query, on a session per database (one at a time)."""
        with self._lock:
            if database not in self._guards:
                dsn = parse_dsn(self.settings.require("clickhouse_dsn"))
                limits = QueryLimits.from_env(self.settings.environ)
                self._guards[database] = ReadOnlyQueries(partial(open_read_only_client, dsn, ident(database), limits),
                                                         limits)
            return self._guards[database].query(sql, encode=_encoded_rows)

    def port_file(self) -> Path:
        return self.settings.home / PORT_FILE

    def start(self) -> "QueryServer":
        self.thread.start()
        write_private(self.port_file(), json.dumps({
            "port": self.port, "pid": os.getpid(), "token": self.token,
            "dsn": parse_dsn(self.settings.require("clickhouse_dsn")).url}) + "\n")
        return self

    def stop(self) -> None:
        try:
            advertised = json.loads(self.port_file().read_text())
            if advertised.get("pid") == os.getpid():
                self.port_file().unlink()
        except (OSError, ValueError):
            pass
        self.httpd.shutdown()
        self.httpd.server_close()


def advertised_port(settings: Settings, dsn: Dsn) -> tuple[int, str] | None:
    """(port, token) of a live `whystream sink` that owns this chDB directory, if any."""
    try:
        info = json.loads((settings.home / PORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    if not isinstance(pid, int) or not Path(f"/proc/{pid}").exists() or info.get("dsn") != dsn.url:
        return None
    return int(info["port"]), str(info.get("token", ""))


def open_query_client(settings: Settings, database: str = DEFAULT_DATABASE):
    """A client for read-only work whose `query()` runs only what the guard
    passes: through a running sink's query port when it owns the chDB
    directory, else on a read-only session of its own. Readers never write,
    not even the database (read-only credentials suffice); with no database
    yet the session has none, and `require_schema` says so in one line. On a
    server, WHYSTREAM_CLICKHOUSE_READER_DSN (the read-only analyst user of
    infra/deployment/clickhouse-analyst.sql) is used instead of the sink's DSN."""
    dsn = parse_dsn(settings.require("clickhouse_dsn"))
    if dsn.kind == "chdb":
        advertised = advertised_port(settings, dsn)
        if advertised is not None:
            return SinkQueryClient(*advertised, database)
    reader = settings.environ.get(READER_DSN_VAR) or from_file(READER_DSN_VAR, settings.environ)
    if reader and dsn.kind != "chdb":
        try:
            dsn, settings = parse_dsn(reader), settings.with_(clickhouse_dsn=reader)
            probe = connect(settings, database, migrate_schema=False)
        except ConfigError as exc:
            raise ConfigError(READER_DSN_VAR, str(exc).split(": ", 1)[-1]) from None
    else:
        probe = connect(settings, database, migrate_schema=False)  # one line for a held directory or a dead server
    try:
        exists = rows(probe, f"SELECT count() AS n FROM system.databases WHERE name = {lit(database)}")[0]["n"]
        limits = QueryLimits.from_env(settings.environ)
        return ReadOnlyQueries(partial(open_read_only_client, dsn, ident(database) if exists else None, limits),
                               limits)
    finally:
        probe.close()
