"""The versioned ClickHouse DDL: `schemas/clickhouse/NNN_name.sql`, applied in order.

`migrate(client, database)` applies the files not yet recorded in
`schema_migrations` and records each version; re-running applies nothing. With
a cluster name the statements are their cluster-aware forms (`clickhouse_cluster`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

from whystream.errors import WhystreamError
from whystream.jobs.clickhouse.cluster import cluster_statement, schema_migrations_ddl
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident, rows

log = logging.getLogger("whystream.clickhouse")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


def migrations() -> list[Migration]:
    """The DDL files schemas/clickhouse/NNN_name.sql, in version order."""
    folder = resources.files("whystream.schemas").joinpath("clickhouse")
    found = []
    for entry in folder.iterdir():
        m = re.match(r"^(\d+)_(\w+)\.sql$", entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise WhystreamError(f"two ClickHouse migrations share a version number: {versions}")
    return found


def statements(sql: str) -> list[str]:
    """The statements of a DDL file: `--` comments dropped, split at `;` ending a line."""
    text = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", text) if s.strip()]


def migration_statements(mig: Migration, database: str, cluster: str | None = None) -> list[str]:
    """The statements of a migration for `database`: the file's own, or their cluster
    form (jobs/clickhouse/cluster.py) when a cluster name is given."""
    own = statements(mig.sql.replace("{db}", ident(database)))
    return own if not cluster else [out for statement in own for out in cluster_statement(statement, cluster)]


def migrate(client, database: str = DEFAULT_DATABASE, cluster: str | None = None) -> list[int]:
    """Apply the migrations not yet recorded in `schema_migrations`; return their versions.

    Every statement is idempotent (`CREATE ... IF NOT EXISTS`, `ADD COLUMN IF NOT
    EXISTS`), so a migration interrupted half way is simply applied again. A
    changed file of an applied version is reported in the log, not re-applied:
    add a new version instead. With `cluster` (WHYSTREAM_CLICKHOUSE_CLUSTER) the
    statements are the cluster-aware ones: ON CLUSTER, Replicated, Distributed.
    """
    db = ident(database)
    client.command(schema_migrations_ddl(db, cluster))
    applied = {r["version"]: r["checksum"] for r in rows(
        client, f"SELECT version, any(checksum) AS checksum FROM {db}.schema_migrations GROUP BY version")}
    done = []
    for mig in migrations():
        if mig.version in applied:
            if applied[mig.version] != mig.checksum:
                log.warning("ClickHouse migration %03d_%s changed after it was applied to %s; "
                            "not re-applied (add a new migration instead)", mig.version, mig.name, db)
            continue
        for statement in migration_statements(mig, db, cluster):
            client.command(statement)
        client.insert("schema_migrations", [[mig.version], [mig.name], [mig.checksum]], database=db,
                      column_names=["version", "name", "checksum"], column_oriented=True)
        done.append(mig.version)
    if done:
        log.info("applied ClickHouse migrations %s to %s", done, db)
    return done
