"""The read-only analyst role of infra/deployment/clickhouse-analyst.sql, and
the readers connecting as it. No ClickHouse server runs here: every statement
is parsed by ClickHouse's own parser (through chDB), none is run."""

from __future__ import annotations

import re
import socket
from types import MappingProxyType

import pytest

from support import REPO
from whystream.config import Settings
from whystream.errors import ConfigError
from whystream.jobs.clickhouse.query_port import READER_DSN_VAR, open_query_client
from whystream.jobs.clickhouse.sql import lit

ROLE_SQL = REPO / "infra" / "deployment" / "clickhouse-analyst.sql"


def statements() -> list[str]:
    body = "\n".join(line for line in ROLE_SQL.read_text().splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def test_every_statement_of_the_analyst_role_parses(db):
    client, _ = db
    found = statements()
    kinds = {re.match(r"(CREATE \w+( PROFILE)?|GRANT|REVOKE)", s).group(1) for s in found}
    assert kinds == {"CREATE SETTINGS PROFILE", "CREATE ROLE", "GRANT", "REVOKE", "CREATE USER", "CREATE QUOTA"}
    for statement in found:
        canonical = client.query(f"SELECT formatQuerySingleLine({lit(statement)})").result_rows[0][0]
        assert canonical.split()[0] in ("CREATE", "GRANT", "REVOKE"), statement
    profile = next(s for s in found if s.startswith("CREATE SETTINGS PROFILE"))
    for setting in ("readonly = 1 CONST", "max_execution_time", "max_result_rows", "max_result_bytes",
                    "max_memory_usage", "allow_introspection_functions = 0 CONST"):
        assert setting in profile
    assert any(s.startswith("REVOKE SOURCES ON *.*") for s in found)  # no FILE, URL, REMOTE, S3, ...
    assert not any(re.search(r"GRANT .*(SOURCES|FILE|URL|REMOTE|S3|INSERT|ALTER|CREATE|DROP)", s) for s in found)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_readers_connect_as_the_analyst_when_configured(tmp_path):
    sink, reader = _closed_port(), _closed_port()
    environ = MappingProxyType({READER_DSN_VAR: f"http://whystream_reader:S3cret@127.0.0.1:{reader}"})
    settings = Settings(home=tmp_path, clickhouse_dsn=f"http://127.0.0.1:{sink}", environ=environ)
    with pytest.raises(ConfigError) as refused:
        open_query_client(settings)
    assert refused.value.setting == READER_DSN_VAR and f":{reader}" in str(refused.value)
    assert "S3cret" not in str(refused.value)
