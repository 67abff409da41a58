"""The decision store through the real sink: real broker (Tansu), real chDB, a registered
model. Every valid decision of `predictions` lands in `decisions` once, across a sink that
crashed after writing and before committing; invalid ones are skipped and counted;
redacted features are never stored; the broker's receipt time is kept."""

from __future__ import annotations

import math

from test_sink_exactly_once import sink_until

from support.events import make_records
from whystream.jobs.clickhouse.sql import rows as query_rows
from whystream.jobs.sink.sink import Sink
from whystream.kafka.messages import RawMessage
from whystream.wire.codecs import codec_for


def produce_decisions(settings, records) -> list[RawMessage]:
    from confluent_kafka import Producer

    codec, topic, delivered = codec_for("PredictionEvent"), settings.topic("predictions"), []
    producer = Producer(settings.kafka())
    for i, r in enumerate(records):
        producer.produce(topic, codec.encode(r), r["prediction_id"].encode(), partition=i % 4,
                         on_delivery=lambda err, m: delivered.append(m))
    assert producer.flush(30) == 0
    return [RawMessage(m.value(), m.key(), m.topic(), m.partition(), m.offset(), m.timestamp()[1])
            for m in delivered]


def test_every_valid_decision_is_stored_once_across_a_sink_crash(fresh_topics, small_model, db):
    client, database = db
    settings = fresh_topics.with_(registry=small_model.path.parent.parent)
    good = make_records(small_model, 240, seed=21, run_id="ds")
    bad = [{**good[0], "prediction_id": "unknown-version", "model_version": "000000000000"},
           {**good[1], "prediction_id": "unknown-feature", "features": {**good[1]["features"], "shoe": 1.0}},
           {**good[2], "prediction_id": "non-finite", "score": math.nan},
           {**good[3], "prediction_id": "seconds", "event_time": good[3]["event_time"] // 1000}]
    messages = produce_decisions(settings, good + bad)

    # a sink writes the first half, then dies before committing anything
    crashed = Sink(settings, database, decisions=True, redact=frozenset({"amount"}))
    crashed.process([m for m in messages if m.offset < 30])
    assert crashed.stats.decisions == sum(1 for m in messages if m.offset < 30 and m.key.startswith(b"ds-"))
    # the next sink reads everything again from the last commit (none) with the real consumer loop
    sink = Sink(settings, database, decisions=True, redact=frozenset({"amount"}))
    sink_until(settings, database, sink, lambda: sink.stats.decisions + crashed.stats.decisions >= len(good))
    assert sink.stats.decisions + crashed.stats.decisions == len(good)
    skipped = {"UNKNOWN_VERSION": 1, "UNKNOWN_FEATURE": 1, "BAD_FIELD": 1, "EVENT_TIME": 1}  # as the workers judge
    assert sink.stats.decisions_skipped + crashed.stats.decisions_skipped == skipped

    stored = query_rows(client, f"SELECT count() AS n, uniqExact(prediction_id) AS ids FROM {database}.decisions")[0]
    assert (stored["n"], stored["ids"]) == (len(good), len(good))  # once each, without FINAL
    row = query_rows(client, f"""
        SELECT features, redacted_features, score, decision, model_version, segment,
               toUnixTimestamp64Milli(event_time) AS t, toUnixTimestamp64Milli(received_at) AS received
        FROM {database}.decisions WHERE prediction_id = {good[7]['prediction_id']!r}""")[0]
    sent = good[7]
    assert "amount" not in row["features"] and row["redacted_features"] == ["amount"]  # never in clear
    expected = {f: v for f, v in sent["features"].items() if f != "amount"}
    assert {f: (None if v is None else float(v)) for f, v in row["features"].items()} == expected
    assert (row["score"], row["decision"], row["model_version"], row["t"]) == \
        (sent["score"], sent["decision"], small_model.version, sent["event_time"])
    assert row["segment"] == sent["segment"]
    by_key = {m.key: m for m in messages}
    assert row["received"] == by_key[sent["prediction_id"].encode()].timestamp > 0
    amounts = query_rows(client, f"SELECT countIf(mapContains(features, 'amount')) AS n FROM {database}.decisions")
    assert amounts[0]["n"] == 0


def test_a_decision_is_explained_from_the_store_after_the_topic_and_redis_forgot_it(engine_settings, small_model, db):
    import redis
    from confluent_kafka.admin import AdminClient

    from whystream.jobs.clickhouse.decision_store import archive
    from whystream.streams.assembly import build_engine

    client, database = db
    records = make_records(small_model, 40, seed=23, run_id="old")
    approval = next(r for r in records if r["decision"] == "approve")
    messages = produce_decisions(engine_settings, records)
    sink = Sink(engine_settings, database, decisions=True)
    for p in range(4):
        sink.process([m for m in messages if m.partition == p])
    assert sink.stats.decisions == len(records)

    # the decision leaves `predictions` (retention: the topic is gone) and Redis (its location entry)
    topic = engine_settings.topic("predictions")
    admin = AdminClient(engine_settings.kafka())
    admin.delete_topics([topic])[topic].result(30)
    redis.Redis.from_url(engine_settings.redis_url).flushdb()

    engine = build_engine(engine_settings)
    try:
        assert engine.on_demand.explain(approval["prediction_id"]) is None  # nothing but the store knows it
        engine.on_demand.archive = archive(engine_settings, database, lambda: client)
        answer = engine.on_demand.explain(approval["prediction_id"])
    finally:
        engine.close()
    assert answer["features_source"] == "store" and answer["sampling_reason"] == "ON_DEMAND"
    assert answer["model_version"] == small_model.version  # the registered version it was scored by
    assert answer["score"] == approval["score"] and answer["decision"] == "approve"
    sent = {f: v for f, v in approval["features"].items()}
    assert {a["feature"]: a["value"] for a in answer["attributions"]} == sent
    X = [[float("nan") if sent[f] is None else sent[f] for f in small_model.feature_names]]
    assert abs(answer["model_score"] - small_model.booster.predict(X)[0]) < 1e-12 and not answer["score_mismatch"]
    assert abs(answer["base_value"] + sum(a["shap"] for a in answer["attributions"]) - answer["raw_score"]) < 1e-6
    assert answer["adverse_reasons"]  # what almost made this approval a decline
    assert engine.on_demand.archive("never-stored") is None

    # the user's way: `whystream explain ID` falls back to the store by itself
    import json

    from typer.testing import CliRunner

    from whystream.cli import app

    s = engine_settings
    flags = ["--broker", s.broker, "--redis-url", s.redis_url, "--registry", str(s.registry), "--topic-prefix",
             s.topic_prefix, "--clickhouse-dsn", s.clickhouse_dsn, "--home", str(s.home)]
    result = CliRunner().invoke(app, [*flags, "explain", approval["prediction_id"], "--database", database,
                                       "--format", "json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output[result.output.index("{"):])
    assert printed["features_source"] == "store" and printed["attributions"] == answer["attributions"]
    import csv
    import io

    as_csv = CliRunner().invoke(app, [*flags, "explain", approval["prediction_id"], "--database", database,
                                      "--format", "csv"])
    assert as_csv.exit_code == 0, as_csv.output
    read = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert sorted(r["feature"] for r in read) == sorted(a["feature"] for a in answer["attributions"])
    assert {r["prediction_id"] for r in read} == {approval["prediction_id"]} and read[0]["rank"] == "1"
    missing = CliRunner().invoke(app, [*flags, "explain", "never-stored", "--database", database])
    assert missing.exit_code != 0 and "decision store" in str(missing.exception)


def test_score_and_decline_rates_read_every_stored_decision(fresh_topics, small_model, db):
    import time

    import numpy as np

    from whystream.jobs.analytics.input_drift import decision_drift_all
    from whystream.jobs.clickhouse import references

    client, database = db
    settings = fresh_topics.with_(registry=small_model.path.parent.parent)
    records = make_records(small_model, 400, seed=25, run_id="all")
    sink = Sink(settings, database, decisions=True)
    codec = codec_for("PredictionEvent")
    sink.process([RawMessage(codec.encode(r), None, settings.topic("predictions"), 0, i) for i, r in enumerate(records)])
    references.register_reference(client, small_model, database)  # the score reference: bins, decline rate
    now = int(time.time() * 1000)
    [row] = decision_drift_all(client, small_model.name, now - 3_600_000, now + 60_000, database)
    scores = np.array([r["score"] for r in records])
    assert row["n"] == len(records) and row["model_version"] == small_model.version  # all of them, not a sample
    assert abs(row["mean_score"] - scores.mean()) < 1e-9
    assert abs(row["decline_rate"] - np.mean(scores >= small_model.threshold)) < 1e-9
    assert abs(row["adverse_rate"] - np.mean([r["decision"] in ("decline", "review") for r in records])) < 1e-9
    assert 0 <= row["score_psi"] < 10 and 0 < row["reference_decline"] < 1
