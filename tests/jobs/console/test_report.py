"""`whystream report` and the views' honesty, without a browser: an unknown model fails in one
line and writes nothing; replayed event times are said to be a replay; text from producers
(feature names, reason texts, ids) cannot inject markup; the views build through a sink's query port."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from support.chdb import MINUTE_MS, base_minute, stream, synthetic_model
from whystream.cli import app
from whystream.errors import ModelNotFound
from whystream.jobs.clickhouse import references
from whystream.jobs.console.decision_page import decision_section
from whystream.jobs.console.overview import health_section
from whystream.jobs.console.period import fit
from whystream.jobs.console.queries import require_model
from whystream.jobs.sink import explanation_rows


def load(client, database, name: str = "fraud", replay: bool = False):
    model = synthetic_model(n_features=3, seed=71, name=name)
    references.register_reference(client, model, database)
    first = base_minute(0) - 20 * MINUTE_MS
    events, _ = stream(model, first, 20, per_minute=300, seed=72, k=30)
    if replay:  # twenty minutes of decisions explained within one: how `make demo` replays them
        done = first + 20 * MINUTE_MS + 30_000
        for i, e in enumerate(events):
            e["explained_at"] = done + i * 60_000 // len(events)
            e["latency_ms"] = float(e["explained_at"] - e["event_time"])
    explanation_rows.insert_explanations(client, events, database)
    return model, first


def test_an_unknown_model_is_one_line_and_no_file(stack, db, tmp_path):
    client, database = db
    flags = ["--clickhouse-dsn", stack.clickhouse_dsn, "--home", str(tmp_path)]
    out = tmp_path / "report.html"
    empty = CliRunner().invoke(app, [*flags, "report", "--out", str(out), "--database", database])
    assert empty.exit_code != 0 and "knows none yet" in str(empty.exception) and not out.exists()
    load(client, database)
    result = CliRunner().invoke(app, [*flags, "report", "--out", str(out), "--model", "nosuch", "--database", database])
    assert result.exit_code != 0 and not out.exists()
    assert isinstance(result.exception, ModelNotFound)  # a WhystreamError: main() prints it as one line, exit 2
    assert str(result.exception) == "unknown model 'nosuch': ClickHouse knows fraud"
    # no --model: the one model ClickHouse knows (the report itself: test_drift.py::test_cli_drift_table_and_report)
    assert require_model(client, None, database) == "fraud"
    explanation_rows.insert_explanations(client, [dict(e, model_name="other") for e in stream(
        synthetic_model(n_features=3, seed=73, name="other"), base_minute(0), 1, per_minute=50, k=5)[0]], database)
    two = CliRunner().invoke(app, [*flags, "report", "--out", str(out), "--database", database])
    assert isinstance(two.exception, ModelNotFound) and "name a model with --model" in str(two.exception)
    assert "fraud, other" in str(two.exception) and not out.exists()


def test_replayed_event_times_are_labelled_replay(db):
    client, database = db
    _, first = load(client, database, replay=True)
    period = fit(client, "fraud", first + 20 * MINUTE_MS, 3600, 3600, database)
    html = health_section(client, "fraud", period, database)
    assert "Replayed event times" in html and "latency (replay) p50" in html and "not the engine's latency" in html


def test_producer_text_cannot_inject_markup():
    evil = "<img src=x onerror=alert(1)>"
    row = {"prediction_id": "</h1><script>alert(2)</script>", "model_name": "m", "model_version": "v",
           "explainer": "whystream-treeshap", "explainer_version": "1", "event_time_ms": 0, "explained_at_ms": 5,
           "output_space": "raw_margin", "base_value": -1.0, "raw_score": 0.5, "features": [evil, "b"],
           "feature_values": [1.0, None], "shap": [1.2, 0.3], "reason_codes": ["R1"],
           "reason_texts": ["</td><script>alert(3)</script>"], "reason_features": [evil], "reason_values": [1.0],
           "reason_shap": [1.2], "reason_codes_version": "", "score": 0.62, "decision": "decline",
           "threshold": 0.5, "sampling_reason": "ADVERSE", "inclusion_weight": 1.0, "stratum": "", "source": "LIVE",
           "latency_ms": 5.0, "worker": "w", "explained_class": None, "redacted_features": [], "role": "CHAMPION",
           "champion_prediction_id": ""}
    html = decision_section(row)
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # shown, as text
    assert "\\u003cimg src=x" in html  # and inside the chart's JSON, escaped for a <script> block


def test_over_time_charts_fit_the_span_of_the_data_and_a_live_stream_is_no_replay(db):
    """Twenty minutes of data in a 24-hour history: a twenty-minute axis in one-minute buckets (the
    hand-drawn charts showed one dot per feature on an axis labelled 21:00 21:00 21:00 21:01)."""
    client, database = db
    _, first = load(client, database)
    now = first + 20 * MINUTE_MS
    period = fit(client, "fraud", now, 3600, 86400, database)
    html = health_section(client, "fraud", period, database)
    assert "Replayed event times" not in html and "latency from event time p50" in html  # no received_at here
    assert period.bucket_s == 60 and period.history_start_ms == first and period.history_end_ms == now
    buckets = period.drift_buckets()  # PSI over time: 2-minute windows covering the data, at most 12
    assert period.drift_bucket_s == 120 and len(buckets) in (10, 11)
    assert buckets[0][0] <= first < buckets[0][1] and buckets[-1][0] < now <= buckets[-1][1]
    # nothing in "now" (a window after the data): the last window of data stands in, and the page says so
    later = fit(client, "fraud", now + 3 * 3600_000, 600, 86400, database)
    assert later.end_ms == now and later.start_ms == now - 600_000 and "last 10 minutes with data" in later.note


def test_the_views_read_through_the_sinks_query_port(stack, db, tmp_path):
    """On embedded chDB the console reads through a running sink's query port: values come back as
    JSON types (times as numbers, NaN as null), and every view still builds."""
    from whystream.jobs.clickhouse.query_port import QueryServer, SinkQueryClient
    from whystream.jobs.console.server import Console

    client, database = db
    _, first = load(client, database)
    server = QueryServer(stack.with_(home=tmp_path), database).start()
    try:
        console = Console(lambda: SinkQueryClient(server.port, server.token, database), database,
                          now_ms=lambda: first + 20 * MINUTE_MS)
        overview = console.render("/model/fraud", {"window": "10m"})
        adverse = re.findall(r"href='/decision/([^']+)'", overview)
        assert len(adverse) == 50 and "Explanation health now" in overview
        assert "fig-hist-feature_2" in console.render("/model/fraud/drift", {"window": "10m"})
        assert "No challenger shadowed" in console.render("/model/fraud/compare", {})
        page = console.render(f"/decision/{adverse[0]}", {})
        assert f"Decision {adverse[0]}" in page and "fig-waterfall" in page
    finally:
        server.stop()
