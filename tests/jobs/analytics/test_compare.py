"""The champion vs challenger views (migration 041) on a hand-checked case, in chDB."""

from __future__ import annotations

import pytest

from support.chdb import base_minute
from whystream.jobs.analytics.compare import comparison
from whystream.jobs.clickhouse.sql import rows
from whystream.jobs.sink import explanation_rows


def explanation(pid, version, shap, score, role="CHAMPION", champion=None, features=("a", "b", "c")):
    """An ExplanationEvent record with these attributions (top reasons: the positive ones, largest first)."""
    t = base_minute()
    attributions = [{"feature": f, "value": 1.0, "shap": s} for f, s in zip(features, shap)]
    top = sorted((a for a in attributions if a["shap"] > 0), key=lambda a: -a["shap"])
    return {"prediction_id": pid, "model_name": "m", "model_version": version, "explainer": "whystream-treeshap",
            "explainer_version": "1", "event_time": t, "explained_at": t + 5, "output_space": "raw_margin",
            "base_value": 0.0, "raw_score": sum(shap), "attributions": attributions, "top_reasons": top,
            "score": score, "decision": "decline", "threshold": 0.5, "sampling_reason": "ADVERSE",
            "inclusion_weight": 1.0, "stratum": "", "source": "LIVE", "redis_available": True, "latency_ms": 5.0,
            "worker": "w", "role": role, "champion_prediction_id": champion}


def test_comparison_views_on_a_hand_checked_case(db):
    client, database = db
    events = [
        # decision p1: both say "a" first; scores 0.8 vs 0.6
        explanation("p1", "v1", [2.0, 1.0, -1.0], 0.8),
        explanation("p1~v2", "v2", [0.5, 1.0, 0.0], 0.6, "CHALLENGER", "p1", features=("b", "a", "c")),
        # decision p2: champion says "b", the challenger "a"; scores 0.7 vs 0.9
        explanation("p2", "v1", [1.0, 3.0, 0.0], 0.7),
        explanation("p2~v2", "v2", [-2.0, 4.0, 1.0], 0.9, "CHALLENGER", "p2", features=("b", "a", "c")),
        # decision p3: no challenger explanation, not in the comparison
        explanation("p3", "v1", [5.0, 5.0, 5.0], 0.99),
    ]
    explanation_rows.insert_explanations(client, events, database)
    got = comparison(client, "m", database)
    [summary] = got.summaries
    assert (summary["champion_version"], summary["challenger_version"], summary["decisions"]) == ("v1", "v2", 2)
    assert summary["top_reason_agreement"] == pytest.approx(0.5)
    assert summary["mean_score_difference"] == pytest.approx(((0.6 - 0.8) + (0.9 - 0.7)) / 2)  # 0
    assert summary["mean_abs_score_difference"] == pytest.approx(0.2)
    assert summary["max_abs_score_difference"] == pytest.approx(0.2)
    by_feature = {r["feature"]: r for r in got.features}
    assert set(by_feature) == {"a", "b", "c"} and all(r["decisions"] == 2 for r in got.features)
    # champion a: 2, 1 -> 1.5; challenger a (the second column of its own order): 1, 4 -> 2.5
    assert by_feature["a"]["champion_mean_shap"] == pytest.approx(1.5)
    assert by_feature["a"]["challenger_mean_shap"] == pytest.approx(2.5)
    # champion b: 1, 3 -> 2; challenger b (its first column): 0.5, -2 -> -0.75, |.|: 1.25
    assert by_feature["b"]["champion_mean_shap"] == pytest.approx(2.0)
    assert by_feature["b"]["challenger_mean_shap"] == pytest.approx(-0.75)
    assert by_feature["b"]["challenger_mean_abs_shap"] == pytest.approx(1.25)
    assert by_feature["c"]["champion_mean_shap"] == pytest.approx(-0.5)
    assert by_feature["c"]["challenger_mean_shap"] == pytest.approx(0.5)
    assert comparison(client, "other", database).summaries == []


def test_the_old_cached_column_reads_redis_available(db):
    client, database = db
    explanation_rows.insert_explanations(client, [{**explanation("p1", "v1", [1.0, 0, 0], 0.5), "redis_available": False},
                                    explanation("p2", "v1", [1.0, 0, 0], 0.5)], database)
    got = rows(client, f"SELECT prediction_id, cached, redis_available, role, request_id "
                          f"FROM {database}.explanations ORDER BY prediction_id")
    assert [(r["cached"], r["redis_available"], r["role"], r["request_id"]) for r in got] == [
        (False, False, "CHAMPION", ""), (True, True, "CHAMPION", "")]
    # engine_stats_mv (migration 005) still counts `NOT cached`: now the alias of redis_available
    [stats] = rows(client, f"SELECT sum(n) AS n, sum(uncached) AS uncached FROM {database}.engine_stats")
    assert (stats["n"], stats["uncached"]) == (2, 1)


def test_the_report_shows_the_comparison(db):
    from whystream.errors import ModelNotFound
    from whystream.jobs.console.report import build_report

    client, database = db
    explanation_rows.insert_explanations(client, [explanation("p1", "v1", [2.0, 1.0, -1.0], 0.8),
                                    explanation("p1~v2", "v2", [0.5, 1.0, 0.0], 0.6, "CHALLENGER", "p1",
                                                features=("b", "a", "c"))], database)
    html = build_report(client, "m", base_minute(0) + 60_000, 3 * 3600, 6 * 3600, database)
    section = html[html.index("m: champion vs challenger"):]
    assert "<td>v1</td><td>v2</td><td class='n'>1</td><td class='n'>100.0%</td>" in section
    explanation_rows.insert_explanations(client, [dict(explanation("q1", "v1", [1.0, 0, 0], 0.5), model_name="other")],
                                         database)
    assert "No challenger shadowed this model" in build_report(client, "other", base_minute(0), 3600, 3600, database)
    with pytest.raises(ModelNotFound, match="unknown model 'nosuch'"):
        build_report(client, "nosuch", base_minute(0), 3600, 3600, database)
