"""The drift statistics on the real ClickHouse engine (chDB): exact attributions
only, fallback share, the window's end, weighted KS and Wasserstein-1 against
scipy, strata, thresholds that follow the effective sample size, and no
non-finite value in any aggregate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from support.chdb import (
    MINUTE_MS,
    base_minute,
    events_for,
    population_shap,
    sample_minute,
    stream,
    synthetic_model,
)
from whystream.config import Settings
from whystream.jobs.analytics import drift_sql
from whystream.jobs.analytics.drift import DriftMonitor, drift_window
from whystream.jobs.clickhouse import references as model_reference
from whystream.jobs.clickhouse.sql import rows as query_rows
from whystream.jobs.sink import explanation_rows

LOCAL = Settings()


def weighted_minute(model, minute_ms: int, prefix: str, seed: int, per_minute: int = 2000, drift=None,
                    sources=None, stratum: str = "US"):
    """One minute sampled as the workers do; 60 priority rows, 194 sampled of 1940 (weight 10 exactly)."""
    rng = np.random.default_rng(seed)
    pop = population_shap(rng, per_minute, model.scales, drift)
    idx, w, reasons = sample_minute(rng, pop, k=194)
    events = events_for(model, pop[idx], w, reasons, minute_ms, prefix, rng, sources)
    for e in events:
        e["stratum"] = stratum
    return events, pop[idx], w


def test_fallback_attributions_stay_out_and_their_share_is_reported(db):
    client, database = db
    model = synthetic_model(n_features=3, seed=5)
    model_reference.register_reference(client, model, database)
    t0 = base_minute(1.0)
    events, shap, w = weighted_minute(model, t0, "f", seed=6)
    fallback = np.zeros(len(events), dtype=bool)
    fallback[::4] = True  # a quarter of the explanations come from the fallback, with attributions far off
    for e, is_fallback in zip(events, fallback):
        if is_fallback:
            e["source"] = "FALLBACK"
            for a in e["attributions"]:
                a["shap"] = a["shap"] * 5 + 3
    explanation_rows.insert_explanations(client, events, database)
    rows = {r["feature"]: r for r in drift_sql.feature_drift(client, model.name, t0, t0 + MINUTE_MS, database)}
    exact = ~fallback
    for j, feature in enumerate(model.feature_names):
        row = rows[feature]
        assert row["n"] == exact.sum()
        assert row["weighted_n"] == pytest.approx(w[exact].sum())
        assert row["mean_abs_shap"] == pytest.approx(np.average(np.abs(shap[exact, j]), weights=w[exact]))
        assert row["fallback_share"] == pytest.approx(fallback.mean())
        assert row["psi"] < 0.3  # the exact ones are drift-free (n_eff ~ 150); the fallback's +3 is a PSI above 1
    # the alert says how much of the window it could not judge
    monitor = DriftMonitor(LOCAL, database=database, client=client, publish=False, min_weighted_n=10,
                           reservoir_window_seconds=0)
    drifted, _, _ = weighted_minute(model, t0 + MINUTE_MS, "g", seed=7, drift={0: (1.0, 3.0)})
    for e in drifted[::2]:
        e["source"] = "FALLBACK"
    explanation_rows.insert_explanations(client, drifted, database)
    alerts = monitor.tick(t0 + 2 * MINUTE_MS)
    assert {a["feature"] for a in alerts} == {"feature_0"}
    expected = (fallback.sum() + len(drifted[::2])) / (len(events) + len(drifted))
    assert all(a["fallback_share"] == pytest.approx(expected) for a in alerts)
    stored = drift_sql.recent_alerts(client, model.name, 0, database=database)
    assert stored and all(a["fallback_share"] == pytest.approx(expected) and a["effective_n"] > 100 for a in stored)


def test_window_ends_at_the_last_complete_minute_minus_the_reservoir_window(db):
    assert drift_window(12 * 3_600_000 + 5_000, 300_000, 10_000) == (12 * 3_600_000 - 360_000, 12 * 3_600_000 - 60_000)
    assert drift_window(12 * 3_600_000 + 10_000, 300_000, 10_000)[1] == 12 * 3_600_000
    client, database = db
    model = synthetic_model(n_features=3, seed=8)
    model_reference.register_reference(client, model, database)
    now_minute = base_minute(1.0)
    calm, _ = stream(model, now_minute - 7 * MINUTE_MS, 6, seed=9)
    explanation_rows.insert_explanations(client, calm, database)
    # The last minute and the current one so far hold priority rows only: their reservoir samples are
    # still open. Priority rows are the riskiest decisions: on their own they look like drift.
    for m in (1, 0):
        rng = np.random.default_rng(10 + m)
        pop = population_shap(rng, 2000, model.scales)
        idx, w, reasons = sample_minute(rng, pop, k=194)
        priority = [i for i, r in enumerate(reasons) if r != "RESERVOIR"] * 10
        explanation_rows.insert_explanations(client, events_for(model, pop[idx][priority], w[priority],
                                                  [reasons[i] for i in priority], now_minute - m * MINUTE_MS,
                                                  f"prio{m}-"), database)
    monitor = DriftMonitor(LOCAL, database=database, client=client, publish=False)
    assert monitor.tick(now_minute + 5_000) == []  # the window ends at now_minute - 1 minute
    hasty = DriftMonitor(LOCAL, database=database, client=client, publish=False, reservoir_window_seconds=0)
    assert hasty.tick(now_minute + 5_000) != []  # ending at now_minute takes the priority-only minute in


def edges_ecdf(values: np.ndarray, weights: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Weighted P(X < edge) at each inner edge (bins are [edge k, edge k+1))."""
    return np.array([weights[values < e].sum() / weights.sum() for e in edges[1:-1]])


def test_weighted_ks_agrees_with_scipy_within_the_histograms_resolution(db):
    client, database = db
    model = synthetic_model(n_features=3, seed=12)
    model_reference.register_reference(client, model, database)
    t0 = base_minute(1.0)
    shift = 0.3 * model.scales[1]
    events, shap, w = weighted_minute(model, t0, "k", seed=13, drift={1: (1.0, shift)})
    explanation_rows.insert_explanations(client, events, database)
    rows = {r["feature"]: r for r in drift_sql.feature_drift(client, model.name, t0, t0 + MINUTE_MS, database)}
    for j, feature in enumerate(model.feature_names):
        ref = model.reference_shap[:, j]
        edges = model.bin_edges[j]
        direct = np.abs(edges_ecdf(shap[:, j], w, edges) - edges_ecdf(ref, np.ones(len(ref)), edges)).max()
        assert rows[feature]["ks"] == pytest.approx(direct, abs=1e-9)  # exactly the weighted ECDFs at the edges
        # scipy on the same weighted sample (integer weights: each explanation repeated w times)
        repeated = np.repeat(shap[:, j], w.astype(int))
        assert np.allclose(w, w.astype(int))
        full = stats.ks_2samp(repeated, ref).statistic
        p = np.diff(np.r_[0, edges_ecdf(shap[:, j], w, edges), 1])
        q = np.diff(np.r_[0, edges_ecdf(ref, np.ones(len(ref)), edges), 1])
        resolution = np.maximum(p, q).max()  # the sup may fall inside a bin
        assert full - resolution <= rows[feature]["ks"] <= full + 1e-9
    assert rows["feature_1"]["ks"] > 0.08 and rows["feature_0"]["ks"] < 0.08


def test_wasserstein_counts_the_tails(db):
    client, database = db
    model = synthetic_model(n_features=2, seed=14)
    model_reference.register_reference(client, model, database)
    t0 = base_minute(1.0)
    events, shap, w = weighted_minute(model, t0, "w", seed=15)
    # a change in the top 2% of feature_0's attributions only: 20 midpoints would see little of it
    top = shap[:, 0] > np.quantile(model.reference_shap[:, 0], 0.98)
    for e, is_top in zip(events, top):
        if is_top:
            e["attributions"][0]["shap"] *= 4
    shap[top, 0] *= 4
    explanation_rows.insert_explanations(client, events, database)
    rows = {r["feature"]: r for r in drift_sql.feature_drift(client, model.name, t0, t0 + MINUTE_MS, database)}
    for j, feature in enumerate(model.feature_names):
        exact = stats.wasserstein_distance(shap[:, j], model.reference_shap[:, j], u_weights=w)
        assert rows[feature]["wasserstein"] == pytest.approx(exact, rel=0.15, abs=0.02 * model.scales[j])
    exact = stats.wasserstein_distance(shap[:, 0], model.reference_shap[:, 0], u_weights=w)
    levels = (np.arange(20) + 0.5) / 20
    order = np.argsort(shap[:, 0])
    cdf = np.cumsum(w[order]) / w.sum()
    coarse = np.mean(np.abs(shap[order, 0][np.searchsorted(cdf, levels)] - np.quantile(model.reference_shap[:, 0], levels)))
    assert abs(rows["feature_0"]["wasserstein"] - exact) < abs(coarse - exact)  # closer than 20 midpoints


def test_drift_by_stratum(db):
    client, database = db
    model = synthetic_model(n_features=3, seed=16)
    model_reference.register_reference(client, model, database)
    t0 = base_minute(1.0)
    pos, _, _ = weighted_minute(model, t0, "pos", seed=17, stratum="pos")
    ecom, _, _ = weighted_minute(model, t0, "ecom", seed=18, stratum="ecom", drift={2: (1.0, 2.0)})
    explanation_rows.insert_explanations(client, pos + ecom, database)
    window = (t0, t0 + MINUTE_MS)
    by = {s: {r["feature"]: r for r in drift_sql.feature_drift(client, model.name, *window, database, stratum=s)}
          for s in ("pos", "ecom", None)}
    assert drift_sql.strata(client, model.name, *window, database) == sorted(["pos", "ecom"])
    assert by["ecom"]["feature_2"]["psi"] > 1 and by["pos"]["feature_2"]["psi"] < 0.1
    assert by["ecom"]["feature_2"]["stratum"] == "ecom" and by[None]["feature_2"]["stratum"] == "*"
    for feature in model.feature_names:
        assert by[None][feature]["n"] == by["pos"][feature]["n"] + by["ecom"][feature]["n"] == len(pos) + len(ecom)
    assert drift_sql.feature_drift(client, model.name, *window, database, stratum="atm") == []


def test_thresholds_follow_the_effective_sample_size(db):
    """Small windows (n_eff ~ 160) never alert on noise and catch a shift of 0.15 sd (KS ~0.10,
    under their critical value ~0.15) only when noise pushes it over, in few windows; a large one
    (n_eff ~ 40,000) catches that shift, on that feature only."""
    client, database = db
    model = synthetic_model(n_features=5, seed=19)
    model_reference.register_reference(client, model, database)
    t0 = base_minute(2.0)
    shift = {1: (1.0, 0.15 * math.sqrt(2) * model.scales[1])}  # Laplace(scale b) has sd b * sqrt(2)
    calm, _ = stream(model, t0 - 10 * MINUTE_MS, 10, per_minute=2000, k=150, seed=24, prefix="calm")
    small, _ = stream(model, t0, 10, per_minute=2000, k=150, seed=20, drift=shift, prefix="small")
    explanation_rows.insert_explanations(client, calm + small, database)
    monitor = DriftMonitor(LOCAL, database=database, client=client, publish=False, window_seconds=60,
                           reservoir_window_seconds=0)
    small_rows = drift_sql.feature_drift(client, model.name, t0, t0 + MINUTE_MS, database)
    assert all(150 < r["effective_n"] < 400 for r in small_rows)
    small_alerts = [a for m in range(-9, 11) for a in monitor.tick(t0 + m * MINUTE_MS)]  # twenty small windows
    assert {(a["feature"], a["statistic"]) for a in small_alerts} <= {("feature_1", "ks")}  # none on noise
    assert len(small_alerts) <= 3
    # the same shift with about 40 times the effective sample
    t1 = t0 + 20 * MINUTE_MS
    large, _ = stream(model, t1, 5, per_minute=20000, k=8000, seed=21, drift=shift, prefix="large")
    explanation_rows.insert_explanations(client, large, database)
    wide = DriftMonitor(LOCAL, database=database, client=client, publish=False, window_seconds=300,
                        reservoir_window_seconds=0)
    alerts = wide.tick(t1 + 5 * MINUTE_MS)
    assert {a["feature"] for a in alerts} == {"feature_1"}
    assert "ks" in {a["statistic"] for a in alerts}
    row = next(r for r in drift_sql.feature_drift(client, model.name, t1, t1 + 5 * MINUTE_MS, database)
               if r["feature"] == "feature_1")
    assert row["effective_n"] > 20_000 and row["psi"] < 0.2  # the fixed 0.2 of old would have missed it


def test_non_finite_values_never_enter_the_aggregates(db):
    client, database = db
    model = synthetic_model(n_features=3, seed=22)
    model_reference.register_reference(client, model, database)
    t0 = base_minute(1.0)
    events, shap, w = weighted_minute(model, t0, "nan", seed=23)
    events[0]["attributions"][1]["shap"] = float("nan")  # a single NaN SHAP value
    events[1]["attributions"][1]["shap"] = float("inf")
    events[2]["inclusion_weight"] = float("nan")
    events[3]["inclusion_weight"] = float("inf")
    events[4]["inclusion_weight"] = 0.0
    explanation_rows.insert_explanations(client, events, database)
    bad = query_rows(client, f"""
        SELECT (SELECT count() FROM {database}.attribution_stats
                WHERE NOT (isFinite(weight) AND isFinite(weight_sq) AND isFinite(sum_shap)
                           AND isFinite(sum_abs_shap) AND isFinite(sum_sq_shap))) AS stats,
               (SELECT count() FROM {database}.attribution_hist WHERE NOT isFinite(weight)) AS hist""")[0]
    assert bad == {"stats": 0, "hist": 0}
    rows = {r["feature"]: r for r in drift_sql.feature_drift(client, model.name, t0, t0 + MINUTE_MS, database)}
    kept = np.ones(len(events), dtype=bool)
    kept[2:5] = False  # no usable weight: left out for every feature
    for j, feature in enumerate(model.feature_names):
        mask = kept.copy()
        if j == 1:
            mask[:2] = False  # the non-finite SHAP values: that feature only
        row = rows[feature]
        assert row["n"] == mask.sum()
        assert math.isfinite(row["stability"]) and math.isfinite(row["psi"]) and math.isfinite(row["wasserstein"])
        assert row["mean_abs_shap"] == pytest.approx(np.average(np.abs(shap[mask, j]), weights=w[mask]))


def test_the_power_benchmark_computes_what_the_view_computes(db):
    """bench/drift_power.py judges windows in numpy with the view's formulas: they must agree."""
    from bench.drift_power import Reference, window_rows

    client, database = db
    model = synthetic_model(n_features=3, seed=25)
    model_reference.register_reference(client, model, database)
    t0 = base_minute(1.0)
    events, shap, w = weighted_minute(model, t0, "b", seed=26, drift={1: (1.2, 0.3)})
    explanation_rows.insert_explanations(client, events, database)
    sql = {r["feature"]: r for r in drift_sql.feature_drift(client, model.name, t0, t0 + MINUTE_MS, database)}
    mine = {r["feature"]: r for r in window_rows(shap, w, Reference(model), model.feature_names)}
    for feature, row in mine.items():
        for key in ("n", "weighted_n", "effective_n", "psi", "ks", "psi_bins", "mean_abs_shap", "stability",
                    "mean_sq_shap", "reference_cdf_spread", "n_reference"):
            assert row[key] == pytest.approx(sql[feature][key], rel=1e-6), (feature, key)
        np.testing.assert_allclose(row["reference_cdf"], sql[feature]["reference_cdf"], rtol=1e-6)
        # the view's quantiles come from a t-digest, the benchmark's are exact
        assert row["wasserstein"] == pytest.approx(sql[feature]["wasserstein"], rel=0.1, abs=0.01)


def test_did_the_top_reasons_flip(db):
    client, database = db
    model = synthetic_model(n_features=4, seed=27)
    model_reference.register_reference(client, model, database)
    t0 = base_minute(1.0)
    before, _ = stream(model, t0, 3, seed=28, prefix="before")
    # later feature_0, the weakest, pushes much harder: it becomes the first reason far more often
    after, _ = stream(model, t0 + 3 * MINUTE_MS, 2, seed=29, prefix="after", drift={0: (1.0, 3.0)})
    explanation_rows.insert_explanations(client, before + after, database)

    def first_reasons(events):
        return [(e["top_reasons"][0]["feature"] if e["top_reasons"] else "", e["inclusion_weight"],
                 e["decision"]) for e in events]

    flips = {r["decision"]: r for r in drift_sql.top_reason_flips(
        client, model.name, t0 + 3 * MINUTE_MS, t0 + 5 * MINUTE_MS, t0, t0 + 3 * MINUTE_MS, top=2, database=database)}
    assert set(flips) == {"approve", "decline"}
    for decision, row in flips.items():
        ref = [(f, w) for f, w, d in first_reasons(before) if d == decision]
        totals: dict[str, float] = {}
        for f, w in ref:
            totals[f] = totals.get(f, 0.0) + w
        common = sorted(totals, key=lambda f: (-totals[f], f))[:2]
        assert sorted(row["reference_reasons"]) == sorted(common)
        now = [(f, w) for f, w, d in first_reasons(after) if d == decision]
        expected = sum(w for f, w in now if f not in common) / sum(w for _, w in now)
        assert row["flipped"] == pytest.approx(expected)
        assert row["reference_flipped"] == pytest.approx(sum(w for f, w in ref if f not in common) / sum(w for _, w in ref))
    # feature_0 (shifted up) becomes the first reason of most decisions, outside the reference's top 2
    for row in flips.values():
        assert "feature_0" not in row["reference_reasons"]
        assert row["flipped"] > row["reference_flipped"] + 0.2


def test_whole_hours_come_from_the_hourly_rollups_and_agree_with_the_minutes(db):
    client, database = db
    model = synthetic_model(n_features=3, seed=30)
    model_reference.register_reference(client, model, database)
    t0 = base_minute(4.0)
    t0 -= t0 % 3_600_000  # an hour's start
    events, _ = stream(model, t0, 150, per_minute=300, k=20, seed=31, drift={0: (1.5, 0.2)})
    explanation_rows.insert_explanations(client, events, database)
    start, end = t0 + 17 * MINUTE_MS + 30_000, t0 + 143 * MINUTE_MS  # hours 1 whole, edges in minutes
    inside = [e for e in events if start - 30_000 <= e["event_time"] < end]
    w = np.array([e["inclusion_weight"] for e in inside])
    before = {r["feature"]: r for r in drift_sql.feature_drift(client, model.name, start, end, database)}
    for j, feature in enumerate(model.feature_names):
        x = np.array([e["attributions"][j]["shap"] for e in inside])
        row = before[feature]
        assert row["n"] == len(inside) and row["weighted_n"] == pytest.approx(w.sum())
        assert row["mean_abs_shap"] == pytest.approx(np.average(np.abs(x), weights=w))
        bins = np.searchsorted(model.bin_edges[j], x, side="right") - 1
        p = np.maximum(np.bincount(bins, weights=w, minlength=10) / w.sum(), 1e-4)
        q = np.maximum(model.reference_hist[j], 1e-4)
        assert row["psi"] == pytest.approx(((p - q) * np.log(p / q)).sum())
    # Whole hours are read from the rollups: without their minute rows the answer stays the same.
    hour = f"toStartOfHour(minute) = fromUnixTimestamp64Milli({t0 + 3_600_000}, 'UTC')"
    for table in ("attribution_hist", "attribution_stats"):
        client.command(f"ALTER TABLE {database}.{table} DELETE WHERE {hour} SETTINGS mutations_sync = 1")
    after = {r["feature"]: r for r in drift_sql.feature_drift(client, model.name, start, end, database)}
    for feature, row in before.items():
        for key in ("n", "weighted_n", "effective_n", "psi", "ks", "mean_abs_shap", "stability"):
            assert after[feature][key] == pytest.approx(row[key]), (feature, key)
        assert after[feature]["wasserstein"] == pytest.approx(row["wasserstein"], rel=0.05)
    partial = drift_sql.feature_drift(client, model.name, t0 + 3_600_000, t0 + 3_600_000 + 30 * MINUTE_MS, database)
    assert partial == []  # half of that hour is minutes only, and those were deleted


def test_top_features_per_model_version(db):
    client, database = db
    old = synthetic_model(n_features=3, seed=32, version="old")
    new = synthetic_model(n_features=3, seed=33, version="new")
    new.reference_shap = new.reference_shap[:, ::-1]  # the new version leans on feature_0, the old on feature_2
    for model in (old, new):
        model_reference.register_reference(client, model, database)
    t0 = base_minute(1.0)
    rng = np.random.default_rng(34)
    events = []
    for model, scales, prefix in ((old, old.scales, "o"), (new, old.scales[::-1], "n")):
        pop = population_shap(rng, 2000, scales)
        idx, w, reasons = sample_minute(rng, pop, k=194)
        events += events_for(model, pop[idx], w, reasons, t0, prefix, rng)
    explanation_rows.insert_explanations(client, events, database)
    top = drift_sql.top_features(client, old.name, t0, t0 + MINUTE_MS, limit=2, database=database)
    assert [(r["model_version"], r["feature"]) for r in top] == [
        ("new", "feature_0"), ("new", "feature_1"), ("old", "feature_2"), ("old", "feature_1")]
    assert all(r["n"] == len(events) // 2 for r in top)


def test_a_reference_registered_before_migration_020_still_gets_wasserstein(db):
    """References stored before migration 020 have no reference_quantiles_100: the 20 midpoints serve."""
    client, database = db
    model = synthetic_model(n_features=2, seed=35)
    columns = dict(zip(model_reference.REFERENCE_COLUMNS, model_reference.reference_columns(model)))
    columns["reference_quantiles_100"] = [[] for _ in model.feature_names]
    client.insert("model_reference", list(columns.values()), database=database, column_names=list(columns),
                  column_oriented=True)
    t0 = base_minute(1.0)
    events, shap, w = weighted_minute(model, t0, "old", seed=36, drift={1: (1.0, 1.0)})
    explanation_rows.insert_explanations(client, events, database)
    rows = {r["feature"]: r for r in drift_sql.feature_drift(client, model.name, t0, t0 + MINUTE_MS, database)}
    levels = np.array(model_reference.QUANTILE_LEVELS)
    for j, feature in enumerate(model.feature_names):
        order = np.argsort(shap[:, j])
        cdf = np.cumsum(w[order]) / w.sum()
        window_q = shap[order, j][np.searchsorted(cdf, levels)]
        coarse = np.mean(np.abs(window_q - np.quantile(model.reference_shap[:, j], levels)))
        mean_gap = abs(np.average(shap[:, j], weights=w) - model.reference_shap[:, j].mean())
        assert rows[feature]["wasserstein"] == pytest.approx(max(coarse, mean_gap), rel=0.1, abs=0.02 * model.scales[j])
        assert math.isfinite(rows[feature]["reference_cdf_spread"]) and rows[feature]["wasserstein_resolution"] > 0
