"""Score consistency in ClickHouse (chDB): explanations flagged `score_mismatch` by the
workers are counted per version and minute (score_check_stats, migration 071), shown by
`whystream drift`, and raise one `score_mismatch` alert per episode once the window's
(weighted) rate passes the threshold; answers and shadows are not counted."""

from __future__ import annotations

import numpy as np

from support.chdb import MINUTE_MS, base_minute, stream, synthetic_model
from support.drift import LOCAL, run_ticks
from whystream.jobs.analytics import score_consistency
from whystream.jobs.analytics.drift import DriftMonitor
from whystream.jobs.clickhouse import references as model_reference
from whystream.jobs.sink import explanation_rows


def checked(events, rng, share: float):
    """The events with the workers' score check: `share` of them off by 0.3."""
    out = []
    for e in events:
        off = rng.random() < share
        out.append({**e, "model_score": e["score"] + (0.3 if off else 0.0), "score_mismatch": bool(off)})
    return out


def test_a_mismatch_rate_past_the_threshold_alerts_once_and_is_shown(stack, db, tmp_path):
    from typer.testing import CliRunner

    from whystream.cli import app

    client, database = db
    model = synthetic_model(n_features=3, seed=71, name="fraud")
    model_reference.register_reference(client, model, database)
    t0 = base_minute(1.0)
    rng = np.random.default_rng(5)
    honest, _ = stream(model, t0, 6, per_minute=600, seed=72, prefix="h")
    rescaled, _ = stream(model, t0 + 6 * MINUTE_MS, 6, per_minute=600, seed=73, prefix="x")
    events = checked(honest, rng, 0.0) + checked(rescaled, rng, 0.2)
    # an answer and a shadow with mismatches: not the stream's decisions, never counted
    extra = [{**events[0], "prediction_id": "answer", "sampling_reason": "ON_DEMAND", "request_id": "r1",
              "score_mismatch": True},
             {**events[1], "prediction_id": "shadow", "role": "CHALLENGER", "score_mismatch": True}]
    explanation_rows.insert_explanations(client, events + extra, database)

    found = score_consistency.score_consistency(client, "fraud", t0, t0 + 12 * MINUTE_MS, database)
    assert len(found) == 1
    assert found[0]["checked"] == len(events)
    assert found[0]["mismatched"] == sum(e["score_mismatch"] for e in events) > 0
    assert abs(found[0]["max_difference"] - 0.3) < 1e-9
    calm = score_consistency.score_consistency(client, "fraud", t0, t0 + 6 * MINUTE_MS, database)[0]
    assert calm["mismatched"] == 0 and calm["rate"] == 0.0

    monitor = DriftMonitor(LOCAL, database=database, client=client, publish=False)
    raised = [(m, a) for m, a in run_ticks(monitor, t0, range(5, 16)) if a["statistic"] == "score_mismatch"]
    assert len(raised) == 1  # one episode, one alert
    minute, alert = raised[0]
    assert minute in range(7, 10) and alert["feature"] == score_consistency.SCORE_FEATURE
    assert alert["value"] > alert["threshold"] == score_consistency.MAX_RATE
    assert alert["model_version"] == model.version

    flags = ["--clickhouse-dsn", stack.clickhouse_dsn, "--home", str(tmp_path)]
    result = CliRunner().invoke(app, [*flags, "drift", "--model", "fraud", "--window", "120m",
                                      "--database", database], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "producer scores off the model's own" in result.output
    assert f"{found[0]['mismatched']:,} of {len(events):,} checked" in " ".join(result.output.split())
