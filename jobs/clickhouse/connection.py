"""Connecting to whystream's ClickHouse.

- `connect(settings, database)` gives a clickhouse-connect client for a
  `chdb:///path` DSN (the ClickHouse engine in this process) or an
  `http(s)://host:8123` one, with the database created and the schema migrated
  (`migrations`). A malformed DSN or a server that does not answer ends as
  ConfigError naming WHYSTREAM_CLICKHOUSE_DSN.
- A chDB directory is open in one process only. While `whystream sink` runs it
  owns the directory and serves read-only queries on a loopback port written to
  `<home>/sink.port` (`query_port`; what may run there: `guard`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from whystream.config import ENV, Settings, mask_secrets
from whystream.errors import ConfigError, WhystreamError
from whystream.jobs.clickhouse.cluster import CLUSTER_INSERT_SETTINGS, create_database
from whystream.jobs.clickhouse.migrations import migrate
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident, lit, one_line, rows

log = logging.getLogger("whystream.clickhouse")

DSN_VAR = ENV["clickhouse_dsn"]
PORT_FILE = "sink.port"


@dataclass(frozen=True)
class Dsn:
    kind: str  # "chdb" or "http"
    path: Path | None  # chDB directory; None for chdb://memory
    url: str  # the DSN as given (http) or normalised (chdb)

    @property
    def redacted(self) -> str:
        return mask_secrets(self.url)


def parse_dsn(dsn: str) -> Dsn:
    """Check a WHYSTREAM_CLICKHOUSE_DSN value: chdb:///path, chdb://memory or http(s)://host:port."""
    text = (dsn or "").strip()
    try:
        parts = urlparse(text)
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise ConfigError(DSN_VAR, f"cannot parse {mask_secrets(text)!r} ({exc}); expected chdb:///path or http://host:8123") from None
    if parts.scheme == "chdb":
        rest = text[len("chdb://"):].split("?", 1)[0]
        if rest in ("memory", ":memory:"):
            return Dsn("chdb", None, "chdb://memory")
        if not rest:
            raise ConfigError(DSN_VAR, f"{text!r} names no chDB directory; expected chdb:///absolute/path")
        path = Path(rest).expanduser().resolve()
        return Dsn("chdb", path, f"chdb://{path}")
    if parts.scheme in ("http", "https") and parts.hostname:
        return Dsn("http", None, text)
    raise ConfigError(DSN_VAR, f"unsupported DSN {mask_secrets(text)!r}; expected chdb:///path (embedded) or "
                               "http(s)://[user:password@]host:8123 (a ClickHouse server)")


def _held_elsewhere(exc: Exception) -> bool:
    return "Error initializing EmbeddedServer" in str(exc)


def _open_client(dsn: Dsn, database: str | None, settings: dict | None = None):
    import clickhouse_connect

    if dsn.kind == "chdb":
        if dsn.path is not None:
            dsn.path.mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(interface="chdb", path=str(dsn.path) if dsn.path else ":memory:",
                                             database=database)
    return clickhouse_connect.get_client(dsn=dsn.url, database=database, connect_timeout=5,
                                         send_receive_timeout=60, settings=settings or {})


def connect(settings: Settings, database: str = DEFAULT_DATABASE, migrate_schema: bool = True):
    """A clickhouse-connect client on `database` (created if missing), with the
    schema migrated. Raises ConfigError naming WHYSTREAM_CLICKHOUSE_DSN when the
    DSN is malformed or ClickHouse cannot be reached. With migrate_schema=False
    (readers: `sql`, `drift`, `report`) nothing is written, not even the database:
    read-only credentials suffice; a missing database gives a client without one."""
    dsn = parse_dsn(settings.require("clickhouse_dsn"))
    ident(database)
    cluster = settings.clickhouse_cluster or None
    try:
        bootstrap = _open_client(dsn, None)
        if migrate_schema:
            bootstrap.command(create_database(database, cluster))
        elif not rows(bootstrap, f"SELECT count() AS n FROM system.databases WHERE name = {lit(database)}")[0]["n"]:
            return bootstrap
        client = _open_client(dsn, database, CLUSTER_INSERT_SETTINGS if cluster else None)
        bootstrap.close()
    except WhystreamError:
        raise
    except Exception as exc:
        if _held_elsewhere(exc):
            raise ConfigError(DSN_VAR, held_message(settings, dsn)) from None
        raise ConfigError(DSN_VAR, f"cannot connect to ClickHouse at {dsn.redacted}: {one_line(exc)}") from None
    if migrate_schema:
        migrate(client, database, cluster)
    return client


def require_schema(client, database: str = DEFAULT_DATABASE) -> None:
    """A ConfigError unless `database` holds whystream's tables (readers never create them)."""
    found = rows(client, f"SELECT count() AS n FROM system.tables WHERE database = {lit(database)} "
                         f"AND name = 'schema_migrations'")
    if not found[0]["n"]:
        raise ConfigError(DSN_VAR, f"ClickHouse has no whystream tables in database {database!r} yet; "
                                   "`whystream sink` creates them when it starts (readers never write)")


def held_message(settings: Settings, dsn: Dsn) -> str:
    return (f"the chDB directory {dsn.path} is held by another process (`whystream sink` holds it while it runs), "
            f"and no running sink advertises a query port in {settings.home / PORT_FILE}: pass the sink's --home, "
            f"or stop the process that holds the directory")


