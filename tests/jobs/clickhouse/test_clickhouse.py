"""ClickHouse schema, histograms and statistics, on the real ClickHouse engine
(chDB through clickhouse-connect, the session stack's directory)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support.chdb import (
    MINUTE_MS,
    base_minute,
    stream,
    synthetic_model,
    tiny_registered_model,
)
from support.docs import cookbook
from whystream.config import Settings
from whystream.errors import ConfigError, WhystreamError
from whystream.jobs.analytics import drift_sql
from whystream.jobs.clickhouse import connection as ch
from whystream.jobs.clickhouse import migrations
from whystream.jobs.clickhouse import references as model_reference
from whystream.jobs.clickhouse.query_port import (
    QueryServer,
    SinkQueryClient,
    open_query_client,
)
from whystream.jobs.clickhouse.sql import lit, rows
from whystream.jobs.sink import explanation_rows

TABLES = {"schema_migrations", "explanations", "model_reference", "attribution_hist", "attribution_hist_mv",
          "attribution_stats", "attribution_stats_mv", "engine_stats", "engine_stats_mv", "drift_alerts",
          "feature_drift", "feature_drift_by_stratum", "top_features", "engine_health", "top_reason_stats",
          "top_reason_stats_mv", "top_reason_flips", "attribution_hist_hourly", "attribution_hist_hourly_mv",
          "attribution_stats_hourly", "attribution_stats_hourly_mv",
          # input drift (030)
          "input_reference", "score_reference", "input_hist", "input_hist_mv", "decision_stats", "decision_stats_mv",
          "score_hist", "score_hist_mv", "input_drift", "decision_drift",
          # champion vs challenger (041)
          "champion_challenger_pairs", "champion_challenger", "champion_challenger_features",
          # the sink's ledger (011, 013; written by the sink since 050)
          "sink_ledger", "sink_claims",
          # the duplicate filter's index (043)
          "explanation_ids", "explanation_ids_mv",
          # score consistency (071), the decision store (072, 074), the audit trail of answers (073);
          # their ledger rows are written by the sink (075)
          "score_check_stats", "score_check_stats_mv", "decisions", "decision_drift_all", "explain_answers",
          # input drift over every decision (076)
          "input_drift_all"}


def test_migrations_apply_once_in_order(db):
    client, database = db
    assert migrations.migrate(client, database) == []  # connect() applied them all already
    assert migrations.migrate(client, database) == []
    applied = rows(client, f"SELECT version, name FROM {database}.schema_migrations ORDER BY version")
    assert [(r["version"], r["name"]) for r in applied] == [(m.version, m.name) for m in migrations.migrations()]
    versions = [m.version for m in migrations.migrations()]
    assert versions == sorted(set(versions)) and versions[0] == 1  # in order, each once (ranges may leave gaps)
    tables = {r["name"] for r in rows(client, f"SELECT name FROM system.tables WHERE database = '{database}'")}
    assert tables == TABLES


def test_every_table_view_and_column_has_a_comment(db):
    """What analysts and auditors read in their SQL client (system.tables / system.columns); a
    table or column added by a later migration must carry its own comment."""
    client, database = db
    tables = rows(client, f"SELECT name, comment FROM system.tables WHERE database = '{database}'")
    columns = rows(client, f"SELECT table, name, comment FROM system.columns WHERE database = '{database}'")
    assert {t["name"] for t in tables} == TABLES and len(columns) > 100
    assert [t["name"] for t in tables if not t["comment"].strip()] == []
    assert [(c["table"], c["name"]) for c in columns if not c["comment"].strip()] == []
    client.command(f"CREATE TABLE {database}.uncommented (x UInt8) ENGINE = MergeTree ORDER BY x")  # the check can fail
    assert rows(client, f"SELECT comment FROM system.tables WHERE database = '{database}' "
                           f"AND name = 'uncommented'") == [{"comment": ""}]


def test_feature_drift_view_uses_the_reference_quantile_levels():
    sql = next(m.sql for m in migrations.migrations() if m.name == "drift_views")
    levels = re.search(r"quantilesTDigestWeightedMerge\(([^)]*)\)", sql).group(1)
    assert tuple(float(x) for x in levels.split(",")) == model_reference.QUANTILE_LEVELS
    sql = next(m.sql for m in migrations.migrations() if m.name == "exact_drift")  # 100 levels since migration 020
    levels = re.search(r"quantilesTDigestWeightedMerge\(([^)]*)\)", sql).group(1)
    assert tuple(float(x) for x in levels.split(",")) == model_reference.QUANTILE_LEVELS_100
    assert all(model_reference.QUANTILE_LEVELS_100[5 * i + 2] == level for i, level in enumerate(model_reference.QUANTILE_LEVELS))


@pytest.mark.parametrize("dsn", ["ftp://somewhere", "chdb://", "http://", "http://127.0.0.1:notaport"])
def test_malformed_dsn_is_a_config_error(dsn):
    with pytest.raises(ConfigError) as e:
        ch.connect(Settings(clickhouse_dsn=dsn))
    assert e.value.setting == "WHYSTREAM_CLICKHOUSE_DSN"


def test_unreachable_server_is_a_config_error():
    from whystream.infra.stack import free_port

    with pytest.raises(ConfigError) as e:
        ch.connect(Settings(clickhouse_dsn=f"http://user:secret@127.0.0.1:{free_port()}"))
    assert e.value.setting == "WHYSTREAM_CLICKHOUSE_DSN" and "cannot connect" in str(e.value)
    assert "secret" not in str(e.value)


def test_a_held_chdb_directory_names_whystream_sink(stack, db, tmp_path):
    # This process holds the stack's chDB directory; another process must say who holds it.
    env = {**os.environ, "WHYSTREAM_CLICKHOUSE_DSN": stack.clickhouse_dsn, "WHYSTREAM_HOME": str(tmp_path)}
    cli = Path(sys.executable).with_name("whystream")
    done = subprocess.run([str(cli), "sql", "SELECT 1"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "WHYSTREAM_CLICKHOUSE_DSN" in message and "`whystream sink` holds it" in message
    assert "Traceback" not in done.stderr


def test_histograms_equal_numpy_on_the_raw_rows(db):
    client, database = db
    model = synthetic_model(n_features=4, seed=3)
    model_reference.register_reference(client, model, database)
    t0 = base_minute()
    events, _ = stream(model, t0, minutes=5, per_minute=1500, seed=4)
    explanation_rows.insert_explanations(client, events[:700], database)
    explanation_rows.insert_explanations(client, events[700:], database)

    got = {(r["feature"], r["minute"], r["bin"]): (r["w"], r["n"]) for r in rows(client, f"""
        SELECT feature, toUnixTimestamp(minute) * 1000 AS minute, bin, sum(weight) AS w, sum(n) AS n
        FROM {database}.attribution_hist GROUP BY feature, minute, bin""")}
    raw = rows(client, f"""SELECT toUnixTimestamp64Milli(event_time) AS t, inclusion_weight AS w,
                                     attributions.shap AS shap FROM {database}.explanations FINAL""")
    assert len(raw) == len(events)
    shap = np.array([r["shap"] for r in raw])
    weights = np.array([r["w"] for r in raw])
    minutes = np.array([r["t"] for r in raw]) // MINUTE_MS * MINUTE_MS
    expected = {}
    for j, feature in enumerate(model.feature_names):
        bins = np.searchsorted(model.bin_edges[j], shap[:, j], side="right") - 1
        for minute in np.unique(minutes):
            here = minutes == minute
            w = np.bincount(bins[here], weights=weights[here], minlength=10)
            n = np.bincount(bins[here], minlength=10)
            for b in np.flatnonzero(n):
                expected[(feature, int(minute), int(b))] = (w[b], n[b])
    assert got.keys() == expected.keys()
    for key, (w, n) in expected.items():
        assert got[key][1] == n
        assert got[key][0] == pytest.approx(w, rel=1e-9)


def test_the_duplicate_filters_index_holds_every_stored_decision_and_no_answer(db):
    """explanation_ids (043) has the stored explanations' ids, from its view and, for rows
    stored before it, from its backfill; answers to explain requests stay out of both."""
    client, database = db
    model = synthetic_model(n_features=2, seed=9)
    events, _ = stream(model, base_minute(), minutes=1, per_minute=300, seed=10)
    answer = {**events[0], "prediction_id": "answered", "sampling_reason": "ON_DEMAND", "request_id": "r-1"}
    explanation_rows.insert_explanations(client, events + [answer], database)

    def ids():
        return sorted(r["prediction_id"] for r in rows(client, f"SELECT prediction_id FROM {database}.explanation_ids"))
    expected = sorted(e["prediction_id"] for e in events)
    assert ids() == expected
    client.command(f"TRUNCATE TABLE {database}.explanation_ids")  # as if the rows predated migration 043
    (backfill,) = [m for m in migrations.migrations() if m.version == 43]
    for statement in migrations.migration_statements(backfill, database):
        client.command(statement)
    assert ids() == expected


def test_histograms_bin_attributions_in_any_order(stack, db):
    """attribution_hist_mv takes the reference's edges in model order and looks each feature up
    only when an explanation lists its attributions otherwise: the same rows either way, and
    none for a feature the reference lacks."""
    client, database = db
    model = synthetic_model(n_features=4, seed=5)
    events, _ = stream(model, base_minute(), minutes=2, per_minute=600, seed=6)
    shuffled_db = database + "_shuffled"
    shuffled = ch.connect(stack, shuffled_db)
    try:
        for c, d in ((client, database), (shuffled, shuffled_db)):
            model_reference.register_reference(c, model, d)
        explanation_rows.insert_explanations(client, events, database)
        rng = np.random.default_rng(7)
        moved = [{**e, "attributions": [e["attributions"][j] for j in rng.permutation(4)]
                  + [{"feature": "not_in_reference", "value": 1.0, "shap": 0.5}]} for e in events]
        explanation_rows.insert_explanations(shuffled, moved, shuffled_db)

        def hist(c, d):
            return rows(c, f"SELECT feature, minute, bin, sum(weight) AS w, sum(n) AS n FROM {d}.attribution_hist "
                              f"GROUP BY ALL ORDER BY ALL")
        in_order = hist(client, database)
        assert {r["feature"] for r in in_order} == set(model.feature_names)
        assert sum(r["n"] for r in in_order) == 4 * len(events)
        assert hist(shuffled, shuffled_db) == in_order
    finally:
        shuffled.command(f"DROP DATABASE IF EXISTS {shuffled_db} SYNC")


def test_weighted_estimates_match_population_totals(db):
    """Inclusion-weighted sums over the explanations estimate the population:
    decisions seen, histogram proportions and mean |SHAP|."""
    client, database = db
    model = synthetic_model(n_features=3, seed=5)
    model_reference.register_reference(client, model, database)
    t0 = base_minute()
    events, populations = stream(model, t0, minutes=10, per_minute=5000, seed=6, k=300)
    explanation_rows.insert_explanations(client, events, database)
    population = np.concatenate(populations)
    start, end = t0, t0 + 10 * MINUTE_MS

    health = drift_sql.engine_health(client, model.name, start, end, database=database)[0]
    assert health["explained"] == len(events)
    # Reservoir weights are n_rest / k per minute, so the estimate of decisions seen is exact here.
    assert health["estimated_seen"] == pytest.approx(len(population), rel=1e-9)
    assert health["coverage"] == pytest.approx(len(events) / len(population), rel=1e-9)

    top = {r["feature"]: r for r in drift_sql.top_features(client, model.name, start, end, database=database)}
    hists = drift_sql.window_histograms(client, model.name, model.version, model.feature_names, start, end, database)
    sample_shap = np.array([[a["shap"] for a in e["attributions"]] for e in events])
    w = np.array([e["inclusion_weight"] for e in events])
    for j, feature in enumerate(model.feature_names):
        truth = np.abs(population[:, j]).mean()
        # standard error of the weighted (Horvitz-Thompson) mean, from the sample
        se = np.sqrt(np.sum(w ** 2 * (np.abs(sample_shap[:, j]) - truth) ** 2)) / w.sum()
        assert abs(top[feature]["mean_abs_shap"] - truth) < 4 * se, feature
        assert top[feature]["weighted_n"] == pytest.approx(len(population), rel=1e-9)
        bins = np.searchsorted(model.bin_edges[j], population[:, j], side="right") - 1
        truth_hist = np.bincount(bins, minlength=10) / len(population)
        assert np.abs(np.array(hists[feature]["window"]) - truth_hist).max() < 0.03, feature


def test_register_reference_backfills_earlier_explanations_once(db):
    client, database = db
    model = synthetic_model(n_features=3, seed=8)
    events, _ = stream(model, base_minute(), minutes=2, per_minute=800, seed=9)
    explanation_rows.insert_explanations(client, events, database)
    assert rows(client, f"SELECT count() AS c FROM {database}.attribution_hist")[0]["c"] == 0
    assert model_reference.register_reference(client, model, database) is True
    assert model_reference.register_reference(client, model, database) is False
    more, _ = stream(model, base_minute(), minutes=1, per_minute=800, seed=10, prefix="q")
    explanation_rows.insert_explanations(client, more, database)
    counts = rows(client, f"SELECT feature, sum(n) AS n FROM {database}.attribution_hist GROUP BY feature")
    assert {r["feature"]: r["n"] for r in counts} == {f: len(events) + len(more) for f in model.feature_names}
    refs = rows(client, f"SELECT count() AS c FROM {database}.model_reference")
    assert refs[0]["c"] == len(model.feature_names)


def test_the_backfill_bins_what_the_view_bins_with_its_filters_and_strata(db):
    """Finding 7 of issue 23: a version whose reference reached ClickHouse after its explanations
    was backfilled without the view's `source IN ('LIVE','CACHE')` and finite filters (FALLBACK
    rows entered the histograms) and without the stratum. The same explanations under two versions
    with the same bins, one registered before them (binned by the view), one after (backfilled),
    give the same histogram rows."""
    import dataclasses

    client, database = db
    early = synthetic_model(n_features=3, seed=45, version="early")
    late = dataclasses.replace(early, version="late")
    events, _ = stream(early, base_minute(), minutes=2, per_minute=600, seed=46)
    for i, e in enumerate(events):
        e["stratum"] = ("US", "EU", "")[i % 3]
        e["source"] = "FALLBACK" if i % 5 == 0 else e["source"]
        if i % 7 == 0:
            e["attributions"][0]["shap"] = math.nan
    model_reference.register_reference(client, early, database)
    explanation_rows.insert_explanations(client, events, database)
    explanation_rows.insert_explanations(client, [{**e, "model_version": "late", "prediction_id": "l" + e["prediction_id"]}
                                                  for e in events], database)
    assert model_reference.register_reference(client, late, database) is True

    def hist(version):
        return rows(client, f"""SELECT feature, minute, bin, stratum, sum(n) AS n, round(sum(weight), 6) AS w
                                FROM {database}.attribution_hist WHERE model_version = {lit(version)}
                                GROUP BY feature, minute, bin, stratum ORDER BY feature, minute, bin, stratum""")

    assert hist("late") == hist("early") and len({r["stratum"] for r in hist("early")}) == 3
    exact = sum(1 for e in events if e["source"] != "FALLBACK") * 3 - sum(
        1 for i, e in enumerate(events) if e["source"] != "FALLBACK" and i % 7 == 0)
    assert sum(r["n"] for r in hist("late")) == exact


def test_reference_rows_hold_the_models_reference(db, tmp_path):
    client, database = db
    model = tiny_registered_model(tmp_path)
    model_reference.register_reference(client, model, database)
    ref = rows(client, f"""SELECT feature, bin_edges, reference_hist, reference_mean_abs_shap
                              FROM {database}.model_reference FINAL ORDER BY feature_index""")
    assert [r["feature"] for r in ref] == model.feature_names
    assert np.allclose([r["bin_edges"] for r in ref], model.bin_edges)
    assert np.allclose([r["reference_hist"] for r in ref], model.reference_hist)
    assert np.allclose([r["reference_mean_abs_shap"] for r in ref], np.abs(model.reference_shap).mean(axis=0))


def test_same_token_twice_writes_once_everywhere(db):
    client, database = db
    model = synthetic_model(n_features=2, seed=11)
    model_reference.register_reference(client, model, database)
    events, _ = stream(model, base_minute(), minutes=1, per_minute=500, seed=12)
    for _ in range(3):
        explanation_rows.insert_explanations(client, events, database, token="batch-1")
    counts = rows(client, f"""SELECT (SELECT count() FROM {database}.explanations) AS raw,
        (SELECT sum(n) FROM {database}.attribution_hist) AS hist,
        (SELECT sum(n) FROM {database}.attribution_stats) AS stats,
        (SELECT sum(n) FROM {database}.engine_stats) AS engine""")[0]
    assert counts == {"raw": len(events), "hist": 2 * len(events), "stats": 2 * len(events), "engine": len(events)}


def test_query_port_serves_read_only_queries(stack, db, tmp_path):
    client, database = db
    model = synthetic_model(n_features=3, seed=13)
    model_reference.register_reference(client, model, database)
    t0 = base_minute()
    events, _ = stream(model, t0, minutes=3, per_minute=600, seed=14)
    explanation_rows.insert_explanations(client, events, database)
    settings = stack.with_(home=tmp_path)
    server = QueryServer(settings, database).start()
    try:
        proxy = open_query_client(settings, database)
        assert isinstance(proxy, SinkQueryClient)
        direct = drift_sql.feature_drift(client, model.name, t0, t0 + 3 * MINUTE_MS, database)
        via = drift_sql.feature_drift(proxy, model.name, t0, t0 + 3 * MINUTE_MS, database)
        assert [(r["feature"], r["n"]) for r in via] == [(r["feature"], r["n"]) for r in direct]
        assert [r["psi"] for r in via] == pytest.approx([r["psi"] for r in direct])
        with pytest.raises(WhystreamError, match="only one read query"):
            proxy.query(f"DROP TABLE {database}.explanations")
    finally:
        server.stop()
    assert not (tmp_path / ch.PORT_FILE).exists()


SYNTHETIC_COOKBOOK = ("explanation of one decision", "top features this hour against last week",
                      "features drifting now", "drift of one stratum", "did the top reasons flip",
                      "one stored decision", "adverse reasons of approvals", "answers given to explain requests",
                      "score mismatches per version")


def test_the_cookbooks_queries_run(db):
    """The queries of docs/cookbook.md, as printed there, on chDB (the two about principal reasons
    need explanations with reason codes: tests/streams/test_byo_stream.py runs them)."""
    client, database = db
    model = synthetic_model(n_features=3, seed=15, name="fraud")
    model_reference.register_reference(client, model, database)
    events, _ = stream(model, base_minute(0.05), minutes=3, per_minute=600, seed=16)
    explanation_rows.insert_explanations(client, events, database)
    queries = cookbook(database)
    # the cookbook's queries of principal reasons need explanations with reason codes: test_byo_stream runs them
    assert set(queries) - set(SYNTHETIC_COOKBOOK) == {"principal reasons of one decision",
                                                      "most frequent principal reasons of a day"}
    for name in SYNTHETIC_COOKBOOK:
        found = rows(client, queries[name].replace("the-prediction-id", events[0]["prediction_id"]))
        if name == "explanation of one decision":
            assert len(found) == 1 and len(found[0]["attributions"]) == 3
        if name == "top features this hour against last week":
            assert [r["feature"] for r in found] == list(reversed(model.feature_names))
