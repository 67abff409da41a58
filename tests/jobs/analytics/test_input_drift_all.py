"""Input, score and decline-rate drift over every decision (migrations 074, 076;
jobs/analytics/drift_source.py) through the real sink's decision store on chDB: decisions
the sampler left out move a feature; the store's figures equal numpy's on every decision
exactly, the sample's estimate does not; a copy sent twice counts once; redacted values
are never counted (and, property-based, any mix of values, NULLs, unsent names and
redacted features counts as numpy counts it); a window reaching back before the store falls back to the sample and
says so; `whystream drift --format json` and the drift page name the source."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from test_input_drift import draw, events, model  # noqa: F401 (model: the module's fixture)

from support.chdb import MINUTE_MS, base_minute
from whystream.jobs.analytics import drift_source, input_drift
from whystream.jobs.clickhouse import references
from whystream.jobs.clickhouse.sql import rows as query_rows
from whystream.jobs.sink import explanation_rows
from whystream.jobs.sink.sink import Sink
from whystream.kafka.messages import RawMessage
from whystream.wire.codecs import codec_for

PER_MINUTE, MINUTES, THRESHOLD = 1500, 3, 0.4
LOW_X0 = -4.0  # below every reference value of x0: the lowest bin


def decisions(model, rng, t0: int):  # noqa: F811
    """(X, scores, event times, PredictionEvents) of MINUTES minutes: 30% of the approvals have
    x0 at LOW_X0 (the sampler keeps few of them); every 50th decision sends no x3 at all."""
    X = draw(rng, PER_MINUTE * MINUTES)
    approve = model.booster.predict(X) < THRESHOLD
    X[approve & (rng.random(len(X)) < 0.3), 0] = LOW_X0
    scores = model.booster.predict(X)
    X[::50, 3] = np.nan
    times = t0 + np.repeat(np.arange(MINUTES), PER_MINUTE) * MINUTE_MS + rng.integers(0, MINUTE_MS, len(X))
    records = []
    for i, row in enumerate(X):
        features = {f: None if np.isnan(row[j]) else float(row[j]) for j, f in enumerate(model.feature_names)}
        if i % 50 == 0:
            del features["x3"]  # a name not sent: missing, as the workers read it
        records.append({"prediction_id": f"d-{i}", "model_name": model.name, "model_version": model.version,
                        "event_time": int(times[i]), "features": features, "score": float(scores[i]),
                        "decision": "decline" if scores[i] >= THRESHOLD else "approve", "threshold": THRESHOLD,
                        "segment": {}, "priority": False, "decision_class": None})
    return X, scores, times, records


def sampled(model, rng, X, scores, times):  # noqa: F811
    """The explanations the workers would store: adverse decisions always (weight 1), the others
    with probability 1/5 (weight 5)."""
    adverse = scores >= THRESHOLD
    keep = np.flatnonzero(adverse | (rng.random(len(X)) < 0.2))
    out = []
    for i in keep:
        [e] = events(model, X[i:i + 1], [1.0 if adverse[i] else 5.0], 0, f"d-{i}", rng)
        out.append(dict(e, prediction_id=f"d-{i}", event_time=int(times[i]), explained_at=int(times[i]) + 5))
    return out


def psi(counts: np.ndarray, reference: np.ndarray) -> float:
    p, q = np.maximum(counts / counts.sum(), 1e-4), np.maximum(reference, 1e-4)
    return float(np.sum((p - q) * np.log(p / q)))


def test_input_drift_counts_every_decision_and_the_sample_only_estimates_it(fresh_topics, db, model, tmp_path):  # noqa: F811
    client, database = db
    settings = fresh_topics.with_(registry=model.path.parent.parent)
    assert references.register_reference(client, model, database)
    rng = np.random.default_rng(17)
    t0 = base_minute(1.0)
    X, scores, times, records = decisions(model, rng, t0)
    codec, topic = codec_for("PredictionEvent"), settings.topic("predictions")
    messages = [RawMessage(codec.encode(r), None, topic, 0, i) for i, r in enumerate(records)]
    sink = Sink(settings, database, decisions=True)
    sink.process(messages)
    sink.process([RawMessage(codec.encode(records[5]), None, topic, 0, len(records))])  # sent again: one decision
    assert sink.stats.decisions == len(records) + 1  # both copies stored; the views count the decision once
    assert query_rows(client, f"SELECT count() AS n FROM {database}.decisions") == [{"n": len(records) + 1}]
    explanation_rows.insert_explanations(client, sampled(model, rng, X, scores, times), database)

    start, end = t0, t0 + MINUTES * MINUTE_MS
    assert drift_source.store_covers(client, model.name, start, end, database)
    every = {r["feature"]: r for r in drift_source.input_rows(client, model.name, start, end, database)}
    sample = {r["feature"]: r for r in input_drift.input_drift(client, model.name, start, end, database)}
    assert set(every) == set(sample) == {"x0", "x2", "x3"}  # x1 redacted (the model's list): never counted
    ref = model.input_reference
    for j in (0, 2, 3):
        row, present = every[f"x{j}"], ~np.isnan(X[:, j])
        counts = np.bincount(np.searchsorted(ref.value_edges[j], X[present, j], side="right") - 1,
                             minlength=len(ref.value_hist[j]))
        assert row["source"] == drift_source.ALL
        assert row["n"] == row["weighted_n"] == row["effective_n"] == len(X)  # every decision, once
        assert round(row["missing_rate"] * len(X)) == int((~present).sum())
        assert row["missing_rate"] == pytest.approx((~present).sum() / len(X), rel=1e-12)
        assert row["value_psi"] == pytest.approx(psi(counts, ref.value_hist[j]), rel=1e-9)
    # the decisions the sampler mostly left out move x0; the sample only estimates how far
    low = int(np.sum(X[:, 0] == LOW_X0))
    assert low > 800 and every["x0"]["value_psi"] > 0.2
    assert sample["x0"]["weighted_n"] != len(X)
    assert abs(sample["x0"]["value_psi"] - every["x0"]["value_psi"]) > 1e-3 * every["x0"]["value_psi"]

    [decided] = drift_source.decision_rows(client, model.name, start, end, database)
    assert decided["source"] == drift_source.ALL and decided["counted_over"] == f"all {len(X):,} decisions"
    assert decided["n"] == len(X) and decided["mean_score"] == pytest.approx(scores.mean(), rel=1e-12)
    assert decided["decline_rate"] == pytest.approx(np.mean(scores >= THRESHOLD), rel=1e-12)

    # `whystream drift --format json` says where each figure came from
    from typer.testing import CliRunner

    from whystream.cli import app

    flags = ["--clickhouse-dsn", settings.clickhouse_dsn, "--home", str(tmp_path)]
    result = CliRunner().invoke(app, [*flags, "drift", "--model", model.name, "--window", "90m",
                                      "--database", database, "--format", "json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    by_feature = {f["feature"]: f for f in found["features"]}
    assert by_feature["x0"]["input_source"] == drift_source.ALL
    assert by_feature["x0"]["value_psi"] == pytest.approx(every["x0"]["value_psi"], rel=1e-12)
    assert by_feature["x1"]["input_source"] is None and by_feature["x1"]["value_psi"] is None  # redacted
    assert [(d["source"], d["n"]) for d in found["decisions"]] == [(drift_source.ALL, len(X))]
    table = CliRunner().invoke(app, [*flags, "drift", "--model", model.name, "--window", "90m",
                                     "--database", database], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert f"input drift (value PSI, missing) counted over all {len(X):,} decisions" in " ".join(table.output.split())

    # explanations of a minute the store never saw: that window falls back to the sample, and says so
    early = [dict(e, prediction_id=f"early-{i}", event_time=e["event_time"] - 2 * MINUTE_MS)
             for i, e in enumerate(sampled(model, rng, X[:PER_MINUTE], scores[:PER_MINUTE], times[:PER_MINUTE]))]
    explanation_rows.insert_explanations(client, early, database)
    wider = start - 2 * MINUTE_MS
    assert not drift_source.store_covers(client, model.name, wider, end, database)
    rows = drift_source.input_rows(client, model.name, wider, end, database)
    assert {r["source"] for r in rows} == {drift_source.SAMPLE}
    assert rows == [dict(r, source=drift_source.SAMPLE)
                    for r in input_drift.input_drift(client, model.name, wider, end, database)]
    [decided] = drift_source.decision_rows(client, model.name, wider, end, database)
    assert decided["source"] == drift_source.SAMPLE and decided["counted_over"] == "explanations, weighted"

    # the drift page (console and report) names the source, for both windows
    from whystream.jobs.console.drift_page import drift_view
    from whystream.jobs.console.period import Period

    assert len(X) == 4500

    page = drift_view(client, model.name, Period(start, end, start, end, 60, 60), database)
    assert f"counted over all {len(X):,} decisions" in page and "count every decision in the window" in page
    assert "<td>all 4,500 decisions</td>" in page  # the scores table's "counted over"
    page = drift_view(client, model.name, Period(wider, end, wider, end, 60, 60), database)
    assert "inclusion-weighted estimates from the sample of explanations" in page
    assert "counted over the sample of explanations" in page and "all 4,500 decisions" not in page


class _Model:  # what register_input_reference reads of a RegisteredModel
    pass


class _Scores:  # a booster stand-in for the reference scores
    def predict(self, X):
        return np.full(len(X), 0.5)


def _reference_model(name: str) -> _Model:
    from whystream.models import input_reference as ir

    m = _Model()
    m.name, m.version, m.threshold, m.adverse_direction = name, "v1", 0.5, 1
    m.feature_names = ["a", "b", "c"]
    X = np.random.default_rng(3).normal(size=(500, 3))
    X[::7, 1] = np.nan
    m.input_reference = ir.compute(_Scores(), X, 0.5)
    return m


_CELL = st.sampled_from(["value", "value", "value", "null", "absent", "redacted"])


@hypothesis_settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.tuples(_CELL, _CELL, _CELL), min_size=1, max_size=40),
       values=st.lists(st.floats(-3, 3), min_size=120, max_size=120), resent=st.integers(0, 39))
def test_every_decision_is_counted_once_as_numpy_counts_it(db, cells, values, resent):
    """Whatever mix of values, NULLs, names not sent and redacted features the stored decisions
    hold, and a copy of one stored again by a later insert, input_drift_all equals numpy on the
    decisions: values in their bins, NULL and unsent as missing, redacted not counted."""
    import uuid

    client, database = db
    m = _reference_model(f"h{uuid.uuid4().hex[:8]}")
    references.register_input_reference(client, m, database)
    t0 = base_minute(1.0)
    records = []
    for i, row in enumerate(cells):
        features, redacted = {}, []
        for j, (f, cell) in enumerate(zip(m.feature_names, row)):
            if cell == "value":
                features[f] = values[3 * i + j]
            elif cell == "null":
                features[f] = None
            elif cell == "redacted":
                redacted.append(f)
        records.append((f"p{i}", t0 + 1000 * i, features, redacted))
    _insert(client, database, m, records)
    _insert(client, database, m, [records[resent % len(records)]])  # sent again, stored by another insert

    got = {r["feature"]: r for r in input_drift.input_drift_all(client, m.name, t0, t0 + MINUTE_MS, database)}
    for j, f in enumerate(m.feature_names):
        counted = [r[2].get(f) for r in records if f not in r[3]]
        if not counted:
            assert f not in got  # redacted in every decision: no input drift at all
            continue
        present = np.array([v for v in counted if v is not None])
        row = got[f]
        assert row["n"] == len(counted) and row["missing_rate"] == pytest.approx(1 - len(present) / len(counted))
        if len(present):
            counts = np.bincount(np.searchsorted(m.input_reference.value_edges[j], present, side="right") - 1,
                                 minlength=len(m.input_reference.value_hist[j]))
            assert row["value_psi"] == pytest.approx(psi(counts, m.input_reference.value_hist[j]), rel=1e-9)
        else:
            assert np.isnan(row["value_psi"])


def _insert(client, database: str, m, records) -> None:
    import datetime as dt

    names = ["prediction_id", "model_name", "model_version", "event_time", "features", "redacted_features",
             "score", "decision", "threshold", "segment", "priority", "kafka_topic", "kafka_topic_id",
             "kafka_partition", "kafka_offset"]
    client.insert("decisions", [[pid, m.name, m.version, dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc),
                                 features, redacted, 0.5, "approve", 0.5, {}, False, "predictions", "", 0, i]
                                for i, (pid, t, features, redacted) in enumerate(records)],
                  database=database, column_names=names)
