"""The drift monitor on a seeded synthetic explanation stream, real ClickHouse
engine (chDB) and, for publishing, the real broker."""

from __future__ import annotations

import csv
import io
import json

import pytest

from support.chdb import MINUTE_MS, base_minute, stream, synthetic_model
from support.drift import DRIFTED, LOCAL, consume_alerts, load_stream, run_ticks
from whystream.jobs.analytics import drift_sql
from whystream.jobs.analytics.drift import DriftMonitor
from whystream.jobs.clickhouse import references as model_reference
from whystream.jobs.sink import explanation_rows


def test_injected_drift_alerts_once_per_feature_and_episode(fresh_topics, db):
    client, database = db
    # normal 6 min, feature_2 drifted 8 min, normal 12 min, drifted again 4 min
    model, t0 = load_stream(client, database, [(6, False), (8, True), (12, False), (4, True)])
    monitor = DriftMonitor(fresh_topics, window_seconds=300, database=database, client=client)
    alerts = run_ticks(monitor, t0, range(5, 31))

    features = {a["feature"] for _, a in alerts}
    assert features == {f"feature_{DRIFTED}"}  # the untouched features never alert
    by_statistic = {s: [(m, a) for m, a in alerts if a["statistic"] == s] for s in ("psi", "ks", "stability",
                                                                                     "wasserstein")}
    # one alert per statistic and episode: the first drift (minutes 6-13), then the second (26-29); the
    # window ends a minute before the tick (the last complete minute before now minus the reservoir window)
    for statistic, raised in by_statistic.items():
        assert len(raised) == 2, statistic
        assert raised[0][0] in range(8, 15) and raised[1][0] in range(28, 31), statistic
    psi = by_statistic["psi"]
    assert len({a["alert_id"] for _, a in alerts}) == 8
    first = psi[0][1]
    assert first["model_name"] == model.name and first["model_version"] == model.version
    assert first["value"] > first["threshold"] >= 0.02  # the minimum effect size, or more
    assert first["window_end"] - first["window_start"] == 300_000 and first["reference"] == f"registry:{model.version}"
    assert first["window_end"] == psi[0][0] * MINUTE_MS + t0 - MINUTE_MS and first["fallback_share"] == 0.0
    assert first["effective_n"] > 1000

    # the same alerts are in ClickHouse and on the drift-alerts topic
    stored = drift_sql.recent_alerts(client, model.name, 0, database=database)
    assert sorted(a["alert_id"] for a in stored) == sorted(a["alert_id"] for _, a in alerts)
    assert all(a["weighted_n"] > 5000 for a in stored)
    assert sorted(a["alert_id"] for a in consume_alerts(fresh_topics, len(alerts))) == \
        sorted(a["alert_id"] for _, a in alerts)


def test_drift_statistics_single_out_the_drifted_feature(db):
    client, database = db
    model, t0 = load_stream(client, database, [(5, False), (5, True)])
    calm = {r["feature"]: r for r in drift_sql.feature_drift(client, model.name, t0, t0 + 5 * MINUTE_MS, database)}
    moved = {r["feature"]: r for r in drift_sql.feature_drift(client, model.name, t0 + 5 * MINUTE_MS,
                                                              t0 + 10 * MINUTE_MS, database)}
    for feature in model.feature_names:
        assert calm[feature]["psi"] < 0.05 and calm[feature]["stability"] < 0.15
        assert calm[feature]["wasserstein_rel"] < 0.25  # sampling noise of 20 quantiles at n_eff ~ 1000
    drifted = f"feature_{DRIFTED}"
    assert moved[drifted]["psi"] > 1.0 and moved[drifted]["stability"] > 0.5 and moved[drifted]["wasserstein_rel"] > 1
    # shifting by 2 * scale moves the quantile function by 2 * scale: Wasserstein-1 sees it
    assert moved[drifted]["wasserstein"] == pytest.approx(2.0 * model.scales[DRIFTED], rel=0.15)
    assert all(moved[f]["psi"] < 0.05 for f in model.feature_names if f != drifted)


def test_too_little_data_is_not_judged(db):
    client, database = db
    model = synthetic_model(n_features=3, seed=41)
    model_reference.register_reference(client, model, database)
    t0 = base_minute(1.0)
    # a tiny, heavily drifted sample: 30 explanations
    events, _ = stream(model, t0, 1, per_minute=300, k=20, seed=42, drift={0: (3.0, 5.0)})
    explanation_rows.insert_explanations(client, events, database)
    monitor = DriftMonitor(LOCAL, database=database, client=client, publish=False)
    rows = drift_sql.feature_drift(client, model.name, t0, t0 + MINUTE_MS, database)
    assert rows and rows[0]["psi"] > 1  # it did drift...
    assert monitor.tick(t0 + 2 * MINUTE_MS) == []  # ...but 30 explanations are not enough to say so
    loose = DriftMonitor(LOCAL, database=database, client=client, publish=False,
                         min_weighted_n=10, min_effective_n=10)
    # without the minimum the drifted feature alerts; the untouched ones stay under their critical values
    assert {a["feature"] for a in loose.tick(t0 + 2 * MINUTE_MS)} == {"feature_0"}


def test_per_feature_thresholds_and_restart(db):
    client, database = db
    model, t0 = load_stream(client, database, [(5, False), (8, True)], seed=51)
    drifted = f"feature_{DRIFTED}"
    lenient = DriftMonitor(LOCAL, database=database, client=client, publish=False,
                           per_feature_thresholds={drifted: 50.0})
    assert run_ticks(lenient, t0, range(5, 14)) == []
    only_psi = {drifted: {"stability": 50.0, "ks": 50.0, "wasserstein": 50.0}}
    psi_only = DriftMonitor(LOCAL, database=database, client=client, publish=False,
                            per_feature_thresholds=only_psi)
    raised = run_ticks(psi_only, t0, range(5, 11))
    assert [(a["feature"], a["statistic"]) for _, a in raised] == [(drifted, "psi")]
    # a monitor started after a restart finds the open episode in drift_alerts and does not repeat it
    restarted = DriftMonitor(LOCAL, database=database, client=client, publish=False,
                             per_feature_thresholds=only_psi)
    assert run_ticks(restarted, t0, range(11, 14)) == []
    assert len(restarted.episodes) == 1


def test_cli_drift_table_and_report(stack, db, tmp_path):
    from typer.testing import CliRunner

    from whystream.cli import app

    client, database = db
    model = synthetic_model(n_features=4, seed=61, name="fraud")
    model_reference.register_reference(client, model, database)
    now = base_minute(0) + MINUTE_MS
    events, _ = stream(model, now - 4 * MINUTE_MS, 4, per_minute=2000, seed=62,
                       drift={DRIFTED: (1.0, 2.0 * model.scales[DRIFTED])})
    explanation_rows.insert_explanations(client, events, database)
    flags = ["--clickhouse-dsn", stack.clickhouse_dsn, "--home", str(tmp_path)]
    result = CliRunner().invoke(app, [*flags, "drift", "--model", "fraud", "--window", "10m",
                                      "--database", database], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    assert set(lines) == set(model.feature_names)
    assert "psi" in lines[f"feature_{DRIFTED}"] and "psi" not in lines["feature_0"]
    assert "…" not in result.output and "\x1b" not in result.output

    # the same rows for programs, every figure whole; the only model with a reference is inferred
    result = CliRunner().invoke(app, [*flags, "drift", "--window", "10m", "--database", database, "--format", "json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["model"] == "fraud" and {f["feature"] for f in found["features"]} == set(model.feature_names)
    by_feature = {f["feature"]: f for f in found["features"]}
    assert "psi" in by_feature[f"feature_{DRIFTED}"]["alerts"] and by_feature["feature_0"]["alerts"] == []
    assert by_feature[f"feature_{DRIFTED}"]["psi"] > by_feature[f"feature_{DRIFTED}"]["thresholds"]["psi"]
    result = CliRunner().invoke(app, [*flags, "drift", "--window", "10m", "--database", database, "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["feature"] for r in rows} == set(model.feature_names) and float(rows[0]["psi"]) > 0
    # an unknown model is an error, in one line, with a non-zero exit
    result = CliRunner().invoke(app, [*flags, "drift", "--model", "nosuch", "--database", database])
    assert result.exit_code != 0 and "no model 'nosuch'" in str(result.exception) and "known: fraud" in str(
        result.exception)

    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, [*flags, "report", "--out", str(out), "--model", "fraud", "--window", "10m",
                                      "--history", "1h", "--database", database])
    assert result.exit_code == 0, result.output
    from plotly.offline import get_plotlyjs

    page = out.read_text()
    assert all(f"id=\"fig-hist-{f}\"" in page for f in model.feature_names)  # a histogram per feature (Plotly)
    assert page.count(get_plotlyjs()) == 1  # plotly.js inlined once
    ours = page.replace(get_plotlyjs(), "")
    assert "<svg" not in ours and "<script src=" not in ours and "<link" not in ours  # no SVG by hand, nothing to fetch
    assert page.index(f"fig-hist-feature_{DRIFTED}") < page.index("fig-hist-feature_0")  # the drifted one first


def test_stability_counts_the_reference_samples_own_error(db):
    client, database = db
    model = synthetic_model(n_features=3, seed=61, n_reference=400)
    model_reference.register_reference(client, model, database)
    t0 = base_minute(1.0)
    events, _ = stream(model, t0, 2, per_minute=2000, seed=62)
    explanation_rows.insert_explanations(client, events, database)
    rows = drift_sql.feature_drift(client, model.name, t0, t0 + 2 * MINUTE_MS, database)
    assert len(rows) == 3
    for row in rows:  # the reference's spread comes with every row
        j = model.feature_names.index(row["feature"])
        assert row["n_reference"] == 400
        assert row["reference_mean_sq_shap"] == pytest.approx(float((model.reference_shap[:, j] ** 2).mean()))
    # A window whose mean |SHAP| is 25% above a reference mean: tight against the window's own
    # error, but not against that of a small, heavy-tailed reference sample.
    row = {"feature": "feature_0", "weighted_n": 4000.0, "effective_n": 4000.0, "psi": 0.01,
           "mean_abs_shap": 1.25, "mean_sq_shap": 1.25 ** 2 + 0.25, "reference_mean_abs_shap": 1.0,
           "stability": 0.25, "reference_mean_sq_shap": 1.0 + 2.0}
    monitor = DriftMonitor(LOCAL, database=database, client=client, publish=False)
    stability = lambda **reference: next(j for j in monitor.judge({**row, **reference}) if j.statistic == "stability")
    assert not stability(n_reference=100).above  # 3 standard errors of the difference: 0.43 > 0.25
    assert stability(n_reference=5000).above  # a large reference: 3 standard errors are 0.09
    # a reference registered before its spread was kept: the window's error alone, as before
    assert stability(n_reference=0, reference_mean_sq_shap=0.0).above


def test_a_window_that_missed_a_heavy_tail_is_not_falsely_precise(db):
    """Seen in `make demo`: 873 effective explanations whose failed_pin_attempts happened to
    miss most of its rare large attributions. Mean |SHAP| 27% under the reference, and the
    window's own spread (sd 0.068 against the reference's 0.154) made that 4.3 standard
    errors; with the spread it should have had, 2.4: noise. The same window later held
    4,050 effective explanations and sat 7% under the reference."""
    client, database = db
    monitor = DriftMonitor(LOCAL, database=database, client=client, publish=False)
    reference, reference_sd, mean, sd = 0.0507, 0.154, 0.0369, 0.068
    row = {"feature": "feature_0", "weighted_n": 5122.0, "effective_n": 873.0, "psi": 0.01,
           "mean_abs_shap": mean, "mean_sq_shap": mean ** 2 + sd ** 2, "reference_mean_abs_shap": reference,
           "stability": abs(mean - reference) / reference, "reference_mean_sq_shap": reference ** 2 + reference_sd ** 2,
           "n_reference": 5000.0}
    stability = lambda r: next(j for j in monitor.judge(r) if j.statistic == "stability")
    assert row["stability"] > 0.2 and not stability(row).above
    # a real move of the same size, with a window as wide as the reference, still alerts
    assert stability({**row, "effective_n": 4050.0, "mean_sq_shap": mean ** 2 + reference_sd ** 2}).above
