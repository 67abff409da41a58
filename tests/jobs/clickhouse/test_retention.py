"""Audit retention: the TTLs in the DDL as chDB parsed them, set from the environment,
and rows actually expiring by kind when ClickHouse merges."""

from __future__ import annotations

import time

import numpy as np
import pytest

from support.chdb import events_for, synthetic_model
from whystream.config import Settings
from whystream.errors import ConfigError
from whystream.jobs.clickhouse import references as model_reference
from whystream.jobs.clickhouse.retention import (
    AGGREGATES,
    DECISIONS_VAR,
    PRIORITY_VAR,
    SAMPLED_VAR,
    Retention,
)
from whystream.jobs.clickhouse.sql import lit
from whystream.jobs.clickhouse.sql import rows as query_rows
from whystream.jobs.sink import explanation_rows

DAY_MS = 86_400_000


def table_sql(client, database) -> dict[str, str]:
    return {r["name"]: r["q"] for r in query_rows(
        client, f"SELECT name, create_table_query AS q FROM system.tables WHERE database = {lit(database)}")}


def test_migrated_tables_carry_the_compliance_defaults(db):
    client, database = db
    sql = table_sql(client, database)
    assert "if(sampling_reason = 'RESERVOIR', 90, 762)" in sql["explanations"]
    assert "ttl_only_drop_parts = 0" in sql["explanations"]
    assert "if(sampling_reason = 'RESERVOIR', 90, 762)" in sql["explanation_ids"]  # the filter's index: as long
    for table in AGGREGATES:
        assert "TTL minute + toIntervalDay(90)" in sql[table]
    assert "TTL inserted_at + toIntervalDay(762)" in sql["sink_ledger"]
    assert "addDays(toDateTime(event_time), 762)" in sql["decisions"]  # 25 months, the audit default
    assert "addDays(toDateTime(explained_at), 762)" in sql["explain_answers"]
    assert Retention().apply(client, database) == []  # the defaults are what the migrations wrote


def test_retention_from_the_environment(db, monkeypatch):
    client, database = db
    monkeypatch.setenv(PRIORITY_VAR, "1827")  # ECOA's five years
    monkeypatch.setenv(SAMPLED_VAR, "180")
    retention = Retention.from_env(Settings.load().environ)
    assert (retention.priority_days, retention.sampled_days, retention.aggregate_days) == (1827, 180, 180)
    assert set(retention.apply(client, database)) == {"explanations", "explanation_ids", "sink_ledger",
                                                       "explain_answers", *AGGREGATES}
    sql = table_sql(client, database)
    assert "if(sampling_reason = 'RESERVOIR', 180, 1827)" in sql["explanations"]
    assert "if(sampling_reason = 'RESERVOIR', 180, 1827)" in sql["explanation_ids"]
    assert "toIntervalDay(180)" in sql["engine_stats"] and "toIntervalDay(1827)" in sql["sink_ledger"]
    assert "addDays(toDateTime(explained_at), 1827)" in sql["explain_answers"]  # the audit trail of answers: as priority rows
    assert retention.apply(client, database) == []
    monkeypatch.setenv(DECISIONS_VAR, "3650")  # the decision store on its own
    decisions = Retention.from_env(Settings.load().environ)
    assert decisions.decisions_days == 3650 and decisions.ledger_days == 3650
    assert set(decisions.apply(client, database)) == {"decisions", "sink_ledger"}
    assert "addDays(toDateTime(event_time), 3650)" in table_sql(client, database)["decisions"]
    monkeypatch.setenv(SAMPLED_VAR, "ninety")
    with pytest.raises(ConfigError, match=SAMPLED_VAR):
        Retention.from_env(Settings.load().environ)


def test_sampled_rows_expire_before_priority_rows(db):
    client, database = db
    model = synthetic_model(n_features=2, seed=51)
    model_reference.register_reference(client, model, database)
    now = int(time.time() * 1000)
    rows = []
    for days, reason, prefix in [(100, "RESERVOIR", "sampled-100"), (100, "ADVERSE", "priority-100"),
                                 (800, "ADVERSE", "priority-800"), (1, "RESERVOIR", "sampled-1")]:
        minute = now - days * DAY_MS
        minute -= minute % 60_000
        rows += events_for(model, np.array([[0.1, -0.2]]), [1.0 if reason == "ADVERSE" else 5.0], [reason], minute, prefix)
    explanation_rows.insert_explanations(client, rows, database)
    for table in ("explanations", "explanation_ids", *AGGREGATES):
        client.command(f"OPTIMIZE TABLE {database}.{table} FINAL")
    for table in ("explanations", "explanation_ids"):  # the duplicate filter forgets what the table forgot
        left = sorted(r["prediction_id"] for r in query_rows(client, f"SELECT prediction_id FROM {database}.{table}"))
        assert left == ["priority-100-0", "sampled-1-0"], table
    # aggregates keep 90 days: only the recent minute is still counted
    assert query_rows(client, f"SELECT sum(n) AS n FROM {database}.engine_stats")[0]["n"] == 1
