"""Cluster-aware DDL: the migrations of schemas/clickhouse/ rewritten for a
replicated, sharded ClickHouse cluster (`WHYSTREAM_CLICKHOUSE_CLUSTER=NAME`,
the cluster's name in the servers' `remote_servers`).

Without a cluster name every statement is the file's own, byte for byte. With one:

| in the files                       | on the cluster                                                        |
|------------------------------------|-----------------------------------------------------------------------|
| `CREATE TABLE {db}.T ... ENGINE = XMergeTree(args)` (sharded tables) | `{db}.T_local ON CLUSTER c`, `ReplicatedXMergeTree('/clickhouse/tables/{shard}/{db}/T_local', '{replica}', args)`, and `{db}.T ON CLUSTER c AS {db}.T_local ENGINE = Distributed(c, {db}, T_local, key)` under the public name |
| `model_reference`, `schema_migrations` | one replicated table on every shard (a ZooKeeper path without `{shard}`): every shard's materialized views join the whole reference locally |
| `non_replicated_deduplication_window = N` | `replicated_deduplication_window = N` (a retried insert with the same token is a no-op on the replicas too) |
| `CREATE MATERIALIZED VIEW {db}.V TO {db}.T AS ... FROM {db}.S` | `ON CLUSTER c`, reading and writing the shard's local tables (`S_local`, `T_local`) |
| `CREATE [OR REPLACE] VIEW` (the parameterised drift views) | `ON CLUSTER c`, reading the Distributed tables: a query on any node sees every shard |
| `ALTER TABLE {db}.T ...` | `ON CLUSTER c`, on `T_local` and on the Distributed `T` (which gets only the column changes of an ALTER that also does `MODIFY ORDER BY`) |
| `INSERT INTO {db}.T SELECT ...` (a one-off backfill) | as it is, once: through the Distributed tables, reading every shard |
| `ALTER TABLE {db}.V ...` of a view (`*_mv`, or in `VIEWS`) | `ON CLUSTER c` on the view itself; a materialized view's `MODIFY QUERY` reads the shard's local tables |
| `DROP VIEW IF EXISTS {db}.V` | `ON CLUSTER c` (a view is one per node) |

`explanations` is sharded by `cityHash64(prediction_id)`: every copy of one
decision lands on the same shard, so ReplacingMergeTree (and the sink's
filter by prediction_id) still deduplicates it; `explanation_ids`, the filter's
index, by the same key (each shard's view fills it from the shard's own rows).
`drift_alerts` by alert_id.
The aggregate tables are filled by each shard's views and read through their
Distributed tables (sums and `...Merge` states combine across shards).
The `{shard}` and `{replica}` macros must be defined on every server.

Inserts through a Distributed table should be synchronous for the deduplication
token to reach the shards before the sink commits its offsets:
`CLUSTER_INSERT_SETTINGS` (`insert_distributed_sync = 1`).
"""

from __future__ import annotations

import re

from whystream.errors import WhystreamError

CLUSTER_VAR = "WHYSTREAM_CLICKHOUSE_CLUSTER"
# Tables every shard holds whole (replicated across the cluster, not sharded).
EVERYWHERE = {"model_reference", "schema_migrations", "input_reference", "score_reference",
              "sink_claims"}  # sink_claims: one token, one claim, cluster-wide
SHARDING_KEYS = {"explanations": "cityHash64(prediction_id)", "explanation_ids": "cityHash64(prediction_id)",
                 "drift_alerts": "cityHash64(alert_id)", "decisions": "cityHash64(prediction_id)",
                 "explain_answers": "cityHash64(request_id)"}
# Parameterised views (materialized views are the names ending in _mv): one per node, not sharded.
VIEWS = {"feature_drift", "feature_drift_by_stratum", "top_features", "engine_health", "top_reason_flips",
         "decision_drift_all", "input_drift_all"}
DEFAULT_SHARDING_KEY = "rand()"  # aggregate tables: written by each shard's views, inserted into only by hand
CLUSTER_INSERT_SETTINGS = {"insert_distributed_sync": 1}
ZK_ROOT = "/clickhouse/tables"

_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (?P<db>\w+)\.(?P<name>\w+)(?P<body>.*)$", re.S)
_ENGINE = re.compile(r"ENGINE\s*=\s*(?P<engine>\w*MergeTree)(?:\((?P<args>[^()]*(?:\([^()]*\)[^()]*)*)\))?")
_CREATE_MV = re.compile(r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (?P<db>\w+)\.(?P<name>\w+) TO (?P<to>\w+\.\w+)"
                        r"(?P<rest>.*)$", re.S)
_CREATE_VIEW = re.compile(r"^CREATE (?P<how>VIEW IF NOT EXISTS|OR REPLACE VIEW) (?P<db>\w+)\.(?P<name>\w+)(?P<rest>.*)$",
                          re.S)
_ORDER_BY = re.compile(r",\s*MODIFY ORDER BY \([^()]*\)\s*$", re.S)
_ALTER = re.compile(r"^ALTER TABLE (?P<db>\w+)\.(?P<name>\w+)(?P<rest>.*)$", re.S)
_DROP_VIEW = re.compile(r"^DROP VIEW IF EXISTS (?P<db>\w+)\.(?P<name>\w+)\s*$", re.S)


def quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_cluster_name(cluster: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", cluster or ""):
        raise WhystreamError(f"{CLUSTER_VAR}: invalid cluster name {cluster!r}: letters, digits, _ . - only")
    return cluster


def on_cluster(cluster: str) -> str:
    return f" ON CLUSTER {_cluster_ident(cluster)}"


def _cluster_ident(cluster: str) -> str:
    check_cluster_name(cluster)
    return cluster if re.fullmatch(r"\w+", cluster) else f"`{cluster}`"


def create_database(database: str, cluster: str | None) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {database}" + (on_cluster(cluster) if cluster else "")


def local(name: str) -> str:
    """The name of a sharded table's per-shard table."""
    return name if name in EVERYWHERE else f"{name}_local"


def _replicated_engine(match: re.Match, path: str) -> str:
    args = [quote(path), quote("{replica}")]
    if match.group("args") and match.group("args").strip():
        args.append(match.group("args").strip())
    return f"ENGINE = Replicated{match.group('engine')}({', '.join(args)})"


def cluster_statement(statement: str, cluster: str) -> list[str]:
    """One migration statement (with {db} filled in) as the statements for `cluster`."""
    on = on_cluster(cluster)
    if m := _CREATE_TABLE.match(statement):
        db, name, body = m.group("db"), m.group("name"), m.group("body")
        target = local(name)
        path = f"{ZK_ROOT}/{{shard}}/{db}/{target}" if name not in EVERYWHERE else f"{ZK_ROOT}/all/{db}/{target}"
        engine = _ENGINE.search(body)
        if engine is None:
            raise WhystreamError(f"cluster DDL: no MergeTree engine in the statement for {db}.{name}")
        body = body[:engine.start()] + _replicated_engine(engine, path) + body[engine.end():]
        body = body.replace("non_replicated_deduplication_window", "replicated_deduplication_window")
        created = [f"CREATE TABLE IF NOT EXISTS {db}.{target}{on}{body}"]
        if name not in EVERYWHERE:
            key = SHARDING_KEYS.get(name, DEFAULT_SHARDING_KEY)
            created.append(f"CREATE TABLE IF NOT EXISTS {db}.{name}{on} AS {db}.{target} "
                           f"ENGINE = Distributed({_cluster_ident(cluster)}, {db}, {target}, {key})")
        return created
    if m := _CREATE_MV.match(statement):
        db, name, rest = m.group("db"), m.group("name"), m.group("rest")
        to_db, to_name = m.group("to").split(".")
        return [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{name}{on} TO {to_db}.{local(to_name)}"
                + _local_sources(rest, db)]
    if m := _CREATE_VIEW.match(statement):
        return [f"CREATE {m.group('how')} {m.group('db')}.{m.group('name')}{on}{m.group('rest')}"]
    if statement.startswith("INSERT INTO "):
        return [statement]
    if m := _DROP_VIEW.match(statement):
        return [f"DROP VIEW IF EXISTS {m.group('db')}.{m.group('name')}{on}"]
    if m := _ALTER.match(statement):
        db, name, rest = m.group("db"), m.group("name"), m.group("rest")
        if name.endswith("_mv") or name in VIEWS:  # a view: one per node (a materialized one reads its shard)
            return [f"ALTER TABLE {db}.{name}{on}" + _local_sources(rest, db)]
        altered = [f"ALTER TABLE {db}.{local(name)}{on}{rest}"]
        if name not in EVERYWHERE:  # the Distributed table's columns too (it has no sorting key)
            altered.append(f"ALTER TABLE {db}.{name}{on}{_ORDER_BY.sub('', rest)}")
        return altered
    raise WhystreamError(f"cluster DDL: no cluster form for the statement {statement[:60]!r}...")


def _local_sources(sql: str, db: str) -> str:
    """A view's SELECT reading the shard's own tables: `FROM db.T` -> `FROM db.T_local`."""
    return re.sub(rf"\b(FROM|JOIN)\s+{re.escape(db)}\.(\w+)", lambda m: f"{m.group(1)} {db}.{local(m.group(2))}", sql)


def schema_migrations_ddl(db: str, cluster: str | None) -> str:
    """The table migrate() records applied versions in."""
    columns = ("(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))")
    if not cluster:
        return f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations {columns} ENGINE = MergeTree ORDER BY version"
    path = quote(f"{ZK_ROOT}/all/{db}/schema_migrations")
    return (f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations{on_cluster(cluster)} {columns} "
            f"ENGINE = ReplicatedMergeTree({path}, '{{replica}}') ORDER BY version")
