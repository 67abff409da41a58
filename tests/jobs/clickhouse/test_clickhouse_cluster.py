"""ClickHouse beyond the embedded engine: the cluster-aware migrations
(WHYSTREAM_CLICKHOUSE_CLUSTER) parse with ClickHouse's own parser (chDB has no
cluster to run them on), the DDL without a cluster is the files' own byte for
byte, view arguments are literals (ClickHouse < 24.6), and readers never write."""

from __future__ import annotations

import re
import uuid

import pytest

from whystream.errors import ConfigError
from whystream.jobs.analytics import drift_sql
from whystream.jobs.clickhouse import cluster as cc
from whystream.jobs.clickhouse import connection as ch
from whystream.jobs.clickhouse import migrations
from whystream.jobs.clickhouse.sql import lit, rows

CLUSTER = "analytics"
# Checksums of the migrations as released: applied deployments record them, so they must never change.
RELEASED = {1: "d9138ad7cbd57250", 2: "ebdc9234eb4db4b4", 3: "6122a47411c0d09c", 4: "5bb3d6ecd5c3c10c",
            5: "b64c21ea3bfe6ca0", 6: "ab11e14c640a7bde", 7: "07cb6b0ea00db85b", 8: "a2d74fb9a47aa86a"}
SHARDED = {"explanations", "attribution_hist", "attribution_stats", "engine_stats", "drift_alerts", "input_hist",
           "decision_stats", "score_hist", "top_reason_stats", "attribution_hist_hourly", "attribution_stats_hourly"}


def cluster_ddl(database: str = "whystream") -> list[str]:
    return [cc.schema_migrations_ddl(database, CLUSTER)] + [
        s for mig in migrations.migrations() for s in migrations.migration_statements(mig, database, CLUSTER)]


def parsed(client, statement: str) -> str:
    """The statement as ClickHouse's parser reads it back (one line); raises on a syntax error."""
    return rows(client, f"SELECT formatQuerySingleLine({lit(statement)}) AS q")[0]["q"]


def test_without_a_cluster_the_ddl_is_the_files_own_byte_for_byte():
    for mig in migrations.migrations():
        if mig.version in RELEASED:
            assert mig.checksum == RELEASED[mig.version], f"migration {mig.version} changed after release"
        assert migrations.migration_statements(mig, "whystream") == migrations.statements(mig.sql.replace("{db}", "whystream"))
        assert migrations.migration_statements(mig, "whystream", None) == migrations.migration_statements(mig, "whystream", "")
    assert cc.schema_migrations_ddl("whystream", None) == (
        "CREATE TABLE IF NOT EXISTS whystream.schema_migrations (version UInt32, name String, checksum String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version")
    assert cc.create_database("whystream", None) == "CREATE DATABASE IF NOT EXISTS whystream"


def test_every_cluster_statement_parses_and_runs_on_the_cluster(db):  # noqa: F811
    client, _ = db
    statements = [cc.create_database("whystream", CLUSTER)] + cluster_ddl()
    for statement in statements:
        rows(client, f"EXPLAIN AST {statement}")  # ClickHouse's parser; raises on anything it cannot read
        # a one-off backfill runs once, through the Distributed tables; everything else on every node
        assert f"ON CLUSTER {CLUSTER}" in parsed(client, statement) or statement.startswith("INSERT INTO"), statement
    with pytest.raises(Exception, match="(?i)syntax"):
        rows(client, "EXPLAIN AST " + statements[1].replace("ENGINE", "ENGINE ENGINE", 1))  # the check can fail


def test_sharded_tables_are_replicated_per_shard_behind_distributed_tables(db):  # noqa: F811
    client, _ = db
    ddl = [parsed(client, s) for s in cluster_ddl()]
    tables = {m.group(1): s for s in ddl if (m := re.match(r"CREATE TABLE IF NOT EXISTS whystream\.(\w+)", s))}
    for name in SHARDED:
        assert "ReplicatedMergeTree" in tables[f"{name}_local"] or "Replicated" in tables[f"{name}_local"]
        assert f"'/clickhouse/tables/{{shard}}/whystream/{name}_local', '{{replica}}'" in tables[f"{name}_local"]
        assert f"AS whystream.{name}_local ENGINE = Distributed({CLUSTER}, whystream, {name}_local" in tables[name]
    assert "Distributed(analytics, whystream, explanations_local, cityHash64(prediction_id))" in tables["explanations"]
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/whystream/explanations_local', '{replica}', " \
           "explained_at)" in tables["explanations_local"]
    assert "replicated_deduplication_window = 1000" in tables["explanations_local"]
    assert "non_replicated_deduplication_window" not in " ".join(ddl)
    # model_reference and schema_migrations: whole on every shard (no {shard} in the path, no Distributed)
    for name in cc.EVERYWHERE:
        assert f"'/clickhouse/tables/all/whystream/{name}', '{{replica}}'" in tables[name]
        assert f"{name}_local" not in tables
    views = [s for s in ddl if s.startswith("CREATE MATERIALIZED VIEW")]
    assert len(views) == len(file_statements("CREATE MATERIALIZED VIEW"))
    for view in views:  # each shard's views read and write the shard's own tables, the reference whole
        assert re.search(r"TO whystream\.\w+_local ", view) and re.search(r"FROM whystream\.\w+_local", view)
        assert not re.search(r"whystream\.(explanations|attribution_hist|attribution_stats|engine_stats|input_hist|"
                             r"decision_stats|score_hist)\b(?!_)",
                             view.split(" AS ", 1)[1])
    drift_views = [s for s in ddl if s.startswith("CREATE VIEW")]
    assert len(drift_views) == len(file_statements("CREATE VIEW")) and all("_local" not in s for s in drift_views)  # they read every shard
    altered = [s for s in ddl if s.startswith("ALTER TABLE")]
    assert altered and all(" ON CLUSTER analytics " in s for s in altered)
    # a sorting key changes on the shards' tables only; a view's new query reads the shard's own tables
    assert not any("MODIFY ORDER BY" in s for s in altered if not re.match(r"ALTER TABLE whystream\.\w+_local ", s))
    queries = [s for s in altered if "MODIFY QUERY" in s]
    modified = [s for s in file_statements("ALTER TABLE") if "MODIFY QUERY" in s]
    assert len(queries) == len(modified) >= 3 and all("FROM whystream.explanations_local" in s for s in queries)


def file_statements(prefix: str) -> list[str]:
    """The statements of the migration files that start with `prefix`."""
    return [s for mig in migrations.migrations() for s in migrations.statements(mig.sql) if s.startswith(prefix)]


def test_view_arguments_are_literals_for_clickhouse_before_24_6():
    sql = drift_sql.feature_drift_sql("fraud", 1_767_225_600_123, 1_767_225_900_000)
    args = re.search(r"feature_drift_by_stratum\((.*?)\)$", sql).group(1)
    assert args == "model = 'fraud', start = '2026-01-01 00:00:00.123', end = '2026-01-01 00:05:00.000', stratum = '*'"


def test_readers_never_write_not_even_the_database(stack, tmp_path):
    database = f"r_{uuid.uuid4().hex[:10]}"
    settings = stack.with_(home=tmp_path)  # no sink.port here: the reader connects itself
    from whystream.jobs.clickhouse.query_port import open_query_client

    reader = open_query_client(settings, database)
    assert rows(reader, "SELECT 1 AS one")[0]["one"] == 1  # `whystream sql` works on what is there
    probe = ch.connect(settings, "default", migrate_schema=False)
    assert not rows(probe, f"SELECT count() AS n FROM system.databases WHERE name = '{database}'")[0]["n"]
    with pytest.raises(ConfigError, match="whystream sink"):
        ch.require_schema(reader, database)  # `drift` and `report`: one line, not a traceback


def test_a_cluster_name_is_checked():
    with pytest.raises(Exception, match="WHYSTREAM_CLICKHOUSE_CLUSTER"):
        cc.on_cluster("x; DROP TABLE y")
    assert cc.on_cluster("prod-eu.1") == " ON CLUSTER `prod-eu.1`"
