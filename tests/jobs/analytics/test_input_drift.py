"""Input drift (whystream/models/input_reference.py, jobs/analytics/input_drift.py, migration 030) on the
real ClickHouse engine (chDB): the views' weighted value histograms, missing rates,
score histograms and decline rates against numpy on the same rows; a shifted input
shows value drift and the others do not; exactly once under the dedup token; old
versions without an input reference."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pytest

from support.chdb import MINUTE_MS, base_minute
from whystream.jobs.analytics import input_drift
from whystream.jobs.clickhouse import references
from whystream.jobs.clickhouse.sql import rows as query_rows
from whystream.jobs.sink import explanation_rows
from whystream.models import input_reference
from whystream.models.registry import ModelRegistry

F = 4
MISSING_X2 = 0.2  # share of rows where x2 is missing


def draw(rng, n: int, shift: float = 0.0) -> np.ndarray:
    X = rng.normal(size=(n, F))
    X[:, 0] += shift
    X[:, 3] = rng.integers(0, 3, size=n)  # an atom-heavy feature
    X[rng.random(n) < MISSING_X2, 2] = np.nan
    return X


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(5)
    X = draw(rng, 3000)
    y = (X[:, 0] + np.nan_to_num(X[:, 2]) + rng.normal(size=len(X)) > 1).astype(int)
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": 1, "num_threads": 1},
                        lgb.Dataset(X, y, feature_name=[f"x{j}" for j in range(F)]), num_boost_round=15)
    return ModelRegistry(tmp_path_factory.mktemp("registry")).register("inputs", booster, 0.4, draw(rng, 2000),
                                                                       redact=["x1"])


def events(model, X: np.ndarray, weights, minute_ms: int, prefix: str, rng) -> list[dict]:
    """ExplanationEvent records carrying the rows' values (x1 redacted, as the model says)."""
    scores = model.booster.predict(X)
    out = []
    for i, row in enumerate(X):
        t = minute_ms + int(rng.integers(0, MINUTE_MS))
        out.append({
            "prediction_id": f"{prefix}-{i}", "model_name": model.name, "model_version": model.version,
            "explainer": "whystream-treeshap", "explainer_version": "test", "event_time": t, "explained_at": t + 5,
            "output_space": "raw_margin", "base_value": 0.0, "raw_score": 0.0,
            "attributions": [{"feature": f, "value": None if np.isnan(row[j]) or f == "x1" else float(row[j]),
                              "shap": 0.1 * j} for j, f in enumerate(model.feature_names)],
            "top_reasons": [], "score": float(scores[i]), "threshold": 0.4,
            "decision": "decline" if scores[i] >= 0.4 else "approve",
            "sampling_reason": "ADVERSE" if scores[i] >= 0.4 else "RESERVOIR", "inclusion_weight": float(weights[i]),
            "stratum": "all", "source": "LIVE", "cached": False, "latency_ms": 5.0, "worker": "test",
            "redacted_features": ["x1"],
        })
    return out


def weighted_stream(model, rng, minutes: int, per_minute: int, shift: float = 0.0, prefix: str = "e"):
    """Explanations of `per_minute` decisions a minute sampled as the workers do: adverse ones
    always (weight 1), the others each with probability 1/5 (weight 5)."""
    t0 = base_minute(1.0)
    out, rows = [], []
    for m in range(minutes):
        X = draw(rng, per_minute, shift)
        adverse = model.booster.predict(X) >= 0.4
        keep = adverse | (rng.random(per_minute) < 0.2)
        X, w = X[keep], np.where(adverse[keep], 1.0, 5.0)
        out += events(model, X, w, t0 + m * MINUTE_MS, f"{prefix}{m}", rng)
        rows.append((X, w))
    return t0, out, rows


def test_registry_keeps_the_reference_rows_inputs(model):
    ref = model.input_reference
    assert ref is not None and ref.n == 2000
    assert ref.missing[2] == pytest.approx(MISSING_X2, abs=0.03) and ref.missing[0] == 0
    assert np.allclose(ref.value_hist.sum(axis=1), 1.0)
    assert len(np.unique(ref.value_edges[3][np.isfinite(ref.value_edges[3])])) >= 2  # atoms 0, 1, 2 kept apart
    assert not np.any(np.isin(ref.value_edges[3], [0.0, 1.0, 2.0]))  # never on an atom
    scores = model.booster.predict(np.asarray(draw(np.random.default_rng(0), 10)))
    assert scores.shape == (10,)
    assert 0 < ref.decline < 1 and np.isclose(ref.score_hist.sum(), 1.0)


def test_histograms_and_rates_equal_numpy_on_the_weighted_rows(db, model):
    client, database = db
    assert references.register_reference(client, model, database)
    rng = np.random.default_rng(7)
    t0, stream, parts = weighted_stream(model, rng, minutes=3, per_minute=2000)
    # non-finite numbers never enter the aggregates: a score of inf and values of inf or nan
    bad = dict(stream[0], prediction_id="bad-numbers", score=float("inf"),
               attributions=[dict(a, value=float("nan") if j % 2 else float("-inf"))
                             for j, a in enumerate(stream[0]["attributions"])])
    infinite = dict(stream[1], prediction_id="bad-value",
                    attributions=[dict(a, value=float("inf")) for a in stream[1]["attributions"]])
    explanation_rows.insert_explanations(client, stream[:700] + [bad], database)
    explanation_rows.insert_explanations(client, stream[700:] + [infinite], database)

    X = np.concatenate([p[0] for p in parts])
    w = np.concatenate([p[1] for p in parts])
    minutes = np.array([e["event_time"] for e in stream]) // MINUTE_MS * MINUTE_MS
    got = {(r["feature"], r["minute"], r["missing"], r["bin"]): (r["w"], r["n"]) for r in query_rows(client, f"""
        SELECT feature, toUnixTimestamp(minute) * 1000 AS minute, missing, bin, sum(weight) AS w, sum(n) AS n
        FROM {database}.input_hist GROUP BY feature, minute, missing, bin""")}
    expected = {}
    for j, f in enumerate(model.feature_names):
        if f == "x1":
            continue  # redacted: neither a value nor missing
        for minute in np.unique(minutes):
            here = minutes == minute
            gone = here & np.isnan(X[:, j])
            if gone.any():
                expected[(f, int(minute), True, 0)] = (w[gone].sum(), int(gone.sum()))
            present = here & ~np.isnan(X[:, j])
            bins = np.searchsorted(model.input_reference.value_edges[j], X[present, j], side="right") - 1
            for b in np.unique(bins):
                expected[(f, int(minute), False, int(b))] = (w[present][bins == b].sum(), int((bins == b).sum()))
    assert got.keys() == expected.keys()
    for key, (weight, n) in expected.items():
        assert got[key][1] == n, key
        assert got[key][0] == pytest.approx(weight, rel=1e-12), key

    # the window's statistics, against numpy on the same rows
    start, end = t0, t0 + 3 * MINUTE_MS
    drift = {r["feature"]: r for r in input_drift.input_drift(client, model.name, start, end, database)}
    assert set(drift) == {"x0", "x2", "x3"}
    for j in (0, 2, 3):
        present = ~np.isnan(X[:, j])
        bins = np.searchsorted(model.input_reference.value_edges[j], X[present, j], side="right") - 1
        p = np.maximum(np.bincount(bins, weights=w[present], minlength=10) / w[present].sum(), 1e-4)
        q = np.maximum(model.input_reference.value_hist[j], 1e-4)
        row = drift[f"x{j}"]
        assert row["value_psi"] == pytest.approx(np.sum((p - q) * np.log(p / q)), rel=1e-9)
        assert row["missing_rate"] == pytest.approx(w[~present].sum() / w.sum(), rel=1e-12)
        assert row["reference_missing"] == pytest.approx(model.input_reference.missing[j])
        assert row["weighted_n"] == pytest.approx(w.sum(), rel=1e-12)
    assert drift["x2"]["missing_rate"] == pytest.approx(MISSING_X2, abs=0.05)

    scores = np.array([e["score"] for e in stream])
    decision = input_drift.decision_drift(client, model.name, start, end, database)
    assert len(decision) == 1
    d = decision[0]
    assert d["n"] == len(stream) + 1  # the infinite value's copy has a finite weight and score: it counts here
    all_w, all_s = np.append(w, stream[1]["inclusion_weight"]), np.append(scores, scores[1])
    assert d["weighted_n"] == pytest.approx(all_w.sum(), rel=1e-12)
    assert d["mean_score"] == pytest.approx(np.sum(all_w * all_s) / all_w.sum(), rel=1e-9)
    assert d["decline_rate"] == pytest.approx(all_w[all_s >= 0.4].sum() / all_w.sum(), rel=1e-12)
    assert d["adverse_rate"] == pytest.approx(d["decline_rate"], rel=1e-12)  # labels follow the threshold here
    assert d["reference_decline"] == pytest.approx(model.input_reference.decline)
    edges = model.input_reference.score_edges
    p = np.maximum(np.bincount(np.searchsorted(edges, all_s, side="right") - 1, weights=all_w, minlength=10)
                   / all_w.sum(), 1e-4)
    q = np.maximum(model.input_reference.score_hist, 1e-4)
    assert d["score_psi"] == pytest.approx(np.sum((p - q) * np.log(p / q)), rel=1e-9)


def test_a_shifted_input_shows_value_drift_and_the_others_do_not(db, model):
    client, database = db
    references.register_reference(client, model, database)
    rng = np.random.default_rng(9)
    t0, calm, _ = weighted_stream(model, rng, minutes=2, per_minute=5000, prefix="calm")
    explanation_rows.insert_explanations(client, calm, database)
    calm_rows = {r["feature"]: r for r in input_drift.input_drift(client, model.name, t0, t0 + 2 * MINUTE_MS,
                                                                  database)}
    assert all(r["value_psi"] < 0.05 for r in calm_rows.values()), calm_rows
    t1 = t0 + 2 * MINUTE_MS
    _, moved, _ = weighted_stream(model, rng, minutes=2, per_minute=5000, shift=1.0, prefix="moved")
    moved = [dict(e, event_time=e["event_time"] + 2 * MINUTE_MS) for e in moved]
    explanation_rows.insert_explanations(client, moved, database)
    rows = {r["feature"]: r for r in input_drift.input_drift(client, model.name, t1, t1 + 2 * MINUTE_MS, database)}
    assert rows["x0"]["value_psi"] > 0.2
    assert rows["x2"]["value_psi"] < 0.05 and rows["x3"]["value_psi"] < 0.05
    shifted = input_drift.decision_drift(client, model.name, t1, t1 + 2 * MINUTE_MS, database)[0]
    before = input_drift.decision_drift(client, model.name, t0, t1, database)[0]
    assert shifted["decline_rate"] > before["decline_rate"] + 0.05  # x0 drives the score: more declines
    assert shifted["score_psi"] > before["score_psi"]


def test_the_same_token_counts_once_in_the_input_views(db, model):
    client, database = db
    references.register_reference(client, model, database)
    _, stream, _ = weighted_stream(model, np.random.default_rng(11), minutes=1, per_minute=400)
    for _ in range(3):
        explanation_rows.insert_explanations(client, stream, database, token="input-batch-1")
    counts = query_rows(client, f"""SELECT
        (SELECT sum(n) FROM {database}.input_hist) AS inputs,
        (SELECT sum(n) FROM {database}.decision_stats) AS decisions,
        (SELECT sum(n) FROM {database}.score_hist) AS scores""")[0]
    assert counts == {"inputs": 3 * len(stream), "decisions": len(stream), "scores": len(stream)}  # x1 redacted


def test_explanations_before_the_reference_are_binned_once(db, model):
    client, database = db
    _, stream, _ = weighted_stream(model, np.random.default_rng(12), minutes=1, per_minute=300)
    explanation_rows.insert_explanations(client, stream, database)
    assert query_rows(client, f"SELECT count() AS c FROM {database}.input_hist")[0]["c"] == 0
    assert references.register_input_reference(client, model, database) is True
    assert references.register_input_reference(client, model, database) is False
    counts = query_rows(client, f"""SELECT (SELECT sum(n) FROM {database}.input_hist) AS inputs,
                                        (SELECT sum(n) FROM {database}.score_hist) AS scores""")[0]
    assert len(stream) > 50
    assert counts == {"inputs": 3 * len(stream), "scores": len(stream)}


def test_a_version_registered_before_input_references_says_so(db, model, tmp_path, stack):
    from typer.testing import CliRunner

    from whystream.cli import app

    client, database = db
    # a registry version as written before this change: no input_reference.npz
    old_root = tmp_path / "registry"
    import shutil
    shutil.copytree(model.path.parent.parent, old_root)
    (old_root / model.name / model.version / input_reference.FILE).unlink()
    old = ModelRegistry(old_root).load(model.name, model.version)
    assert old.input_reference is None
    t0, stream, _ = weighted_stream(model, np.random.default_rng(13), minutes=2, per_minute=300)
    stream = [dict(e, model_name="fraud") for e in stream]
    references.register_reference(client, _renamed(old, "fraud"), database)
    explanation_rows.insert_explanations(client, stream, database)
    assert input_drift.input_drift(client, "fraud", t0, t0 + 2 * MINUTE_MS, database) == []
    assert input_drift.decision_drift(client, "fraud", t0, t0 + 2 * MINUTE_MS, database)[0]["score_psi"] is None \
        or np.isnan(input_drift.decision_drift(client, "fraud", t0, t0 + 2 * MINUTE_MS, database)[0]["score_psi"])

    flags = ["--clickhouse-dsn", stack.clickhouse_dsn, "--home", str(tmp_path)]
    result = CliRunner().invoke(app, [*flags, "drift", "--model", "fraud", "--window", "2h", "--database", database],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "input drift unavailable" in result.output and "registered before" in " ".join(result.output.split())
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, [*flags, "report", "--out", str(out), "--model", "fraud", "--window", "2h",
                                      "--database", database])
    assert result.exit_code == 0, result.output
    assert "Input drift unavailable" in out.read_text()

    # registering the same model with its reference rows again adds the input reference, same version
    again = ModelRegistry(old_root).register(model.name, model.booster, 0.4, draw(np.random.default_rng(1), 2000),
                                             redact=["x1"])
    assert again.version == model.version and again.input_reference is not None
    assert json.loads((old_root / model.name / model.version / "meta.json").read_text())["version"] == model.version


def _renamed(model, name):
    from dataclasses import replace
    return replace(model, name=name)


def test_the_drift_table_and_report_show_input_drift(db, model, tmp_path, stack):
    from typer.testing import CliRunner

    from whystream.cli import app

    client, database = db
    fraud = _renamed(model, "fraud")
    references.register_reference(client, fraud, database)
    now = base_minute(0) - 2 * MINUTE_MS  # the data ends before the window the drift table judges, whatever the second
    rng = np.random.default_rng(21)
    _, stream, _ = weighted_stream(fraud, rng, minutes=2, per_minute=5000, shift=1.0)
    shift = now - 2 * MINUTE_MS - stream[0]["event_time"] // MINUTE_MS * MINUTE_MS
    explanation_rows.insert_explanations(client, [dict(e, event_time=e["event_time"] + shift) for e in stream], database)
    flags = ["--clickhouse-dsn", stack.clickhouse_dsn, "--home", str(tmp_path)]
    result = CliRunner().invoke(app, [*flags, "drift", "--model", "fraud", "--window", "10m",
                                      "--database", database], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "value PSI" in result.output and "decline rate" in result.output
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:]]
             for line in result.output.splitlines() if line.count("│") > 3}
    header = next([c.strip() for c in line.split("┃")[1:]] for line in result.output.splitlines() if "┃ feature" in line)
    value_psi = header.index("value PSI")
    assert float(lines["x0"][value_psi]) > 0.2 and float(lines["x3"][value_psi]) < 0.05
    assert lines["x1"][value_psi] == "-"  # redacted: no values to bin
    missing = lines["x2"][header.index("missing (ref)")]
    now, ref = (float(p.strip("()%")) for p in missing.split())
    assert ref == pytest.approx(100 * model.input_reference.missing[2], abs=0.05) and abs(now - ref) < 5
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, [*flags, "report", "--out", str(out), "--model", "fraud", "--window", "10m",
                                      "--history", "1h", "--database", database])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "Input drift beside attribution drift" in page and "reference decline rate" in page


def test_non_finite_or_non_positive_weights_never_enter_the_input_aggregates(db, model):
    client, database = db
    references.register_reference(client, model, database)
    # attribution_stats_mv refuses a non-finite weight for the whole insert (its t-digest wants integers);
    # without it the insert lands and the input views must leave such rows out themselves
    client.command(f"DROP VIEW {database}.attribution_stats_mv")
    _, stream, _ = weighted_stream(model, np.random.default_rng(14), minutes=1, per_minute=300)
    weird = [dict(stream[i], prediction_id=f"weird-{i}", inclusion_weight=w)
             for i, w in enumerate([float("nan"), float("inf"), -float("inf"), 0.0, -2.0])]
    explanation_rows.insert_explanations(client, stream + weird, database)
    assert query_rows(client, f"SELECT count() AS c FROM {database}.explanations")[0]["c"] == len(stream) + 5
    sums = query_rows(client, f"""SELECT
        (SELECT sum(n) FROM {database}.input_hist) AS inputs, (SELECT sum(weight) FROM {database}.input_hist) AS w,
        (SELECT sum(n) FROM {database}.decision_stats) AS decisions,
        (SELECT sum(weight) FROM {database}.decision_stats) AS dw,
        (SELECT sum(n) FROM {database}.score_hist) AS scores""")[0]
    total = sum(e["inclusion_weight"] for e in stream)
    assert (sums["inputs"], sums["decisions"], sums["scores"]) == (3 * len(stream), len(stream), len(stream))
    assert sums["w"] == pytest.approx(3 * total) and sums["dw"] == pytest.approx(total)
