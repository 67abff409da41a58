"""Answers to explain requests (sampling_reason ON_DEMAND, request_id set: streams/control/plane.py) share
the `explanations` topic and the decision's prediction_id with the stream's own explanations. They are
replies for the requester, not samples: the sink stores none of them, in `explanations` or in any
aggregate, and an answer published before the decision's own explanation never stops that one being
stored with its inclusion weight. Real broker (Tansu), real chDB; no stand-ins."""

from __future__ import annotations

import threading
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from test_sink import raw_messages, wait_for

from support.chdb import base_minute, stream, synthetic_model
from whystream.jobs.clickhouse import connection as ch
from whystream.jobs.clickhouse import references as model_reference
from whystream.jobs.clickhouse.sql import lit
from whystream.jobs.clickhouse.sql import rows as query_rows
from whystream.jobs.sink.consumer import run_sink
from whystream.jobs.sink.explanation_rows import insert_explanations
from whystream.jobs.sink.sink import Sink
from whystream.wire.codecs import codec_for

CODEC = codec_for("ExplanationEvent", None, "explanations")
FOUR = ("attribution_hist", "attribution_stats", "engine_stats", "decision_stats")


def answer_of(event: dict, request_id: str) -> dict:
    """What the control plane publishes for an ExplainRequest about `event`'s decision."""
    return {**event, "sampling_reason": "ON_DEMAND", "inclusion_weight": 1.0, "request_id": request_id,
            "explained_at": event["explained_at"] - 1}


def sampled_stream(seed: int):
    """(model, events): a minute of a sampled stream whose first 20 reservoir samples weigh 12.5."""
    model = synthetic_model(n_features=3, seed=seed)
    events, _ = stream(model, base_minute(), minutes=1, per_minute=1000, seed=seed + 1)
    for e in [e for e in events if e["sampling_reason"] == "RESERVOIR"][:20]:
        e["inclusion_weight"] = 12.5
    return model, events


def aggregates(client, database: str) -> dict[str, tuple[int, float]]:
    """(Σ n, Σ weight) of every table that has both: the aggregates the views fill."""
    tables = [r["table"] for r in query_rows(client, f"""
        SELECT table FROM system.columns WHERE database = {lit(database)} AND name IN ('n', 'weight')
        GROUP BY table HAVING count() = 2 ORDER BY table""")]
    return {t: tuple(query_rows(client, f"SELECT toUInt64(sum(n)) AS n, sum(weight) AS w FROM {database}.{t}")[0].values())
            for t in tables}


def stored_answers(client, database: str) -> int:
    return query_rows(client, f"SELECT count() AS n FROM {database}.explanations "
                           f"WHERE request_id != '' OR sampling_reason = 'ON_DEMAND'")[0]["n"]


@pytest.fixture
def control_db(stack):
    """A second migrated database: the same stream stored without any answers."""
    database = f"t_{uuid.uuid4().hex[:10]}"
    client = ch.connect(stack, database)
    yield client, database
    client.command(f"DROP DATABASE IF EXISTS {database} SYNC")


@pytest.mark.parametrize("columnar", [True, False], ids=["compiled", "per-message"])
def test_answers_never_shadow_the_stream_and_stay_out_of_every_aggregate(stack, db, control_db, columnar):
    client, database = db
    model, events = sampled_stream(seed=41)
    reservoir = [e for e in events if e["inclusion_weight"] == 12.5]
    early, paired = reservoir[:10], reservoir[10:]
    adverse = next(e for e in events if e["sampling_reason"] == "ADVERSE")
    rest = [e for e in events if e not in reservoir]
    # batch 1: answers to decisions still in a reservoir, then everything else of the stream;
    # batch 2: the reservoir's real explanations, answers right before their real explanation
    # (same batch), and an answer to a decision stored before it
    first = [answer_of(e, f"req-{i}") for i, e in enumerate(early)] + rest
    second = early + [x for i, e in enumerate(paired) for x in (answer_of(e, f"pair-{i}"), e)]
    second.append(answer_of(adverse, "req-adverse"))
    for c, d in (db, control_db):
        model_reference.register_reference(c, model, d)

    sink = Sink(stack, database, columnar=columnar)
    assert sink.process(raw_messages(CODEC, first)) == len(rest)
    assert sink.process(raw_messages(CODEC, second, first_offset=10_000)) == len(reservoir)
    assert sink.stats.answers == 10 + 10 + 1 and sink.stats.duplicates == 0
    assert "21 explain answers kept apart (21 new in explain_answers)" in sink.stats.line()

    assert stored_answers(client, database) == 0
    # the audit trail: every answer, once, in a table of its own, with its request_id
    audit = query_rows(client, f"SELECT request_id, prediction_id FROM {database}.explain_answers")
    assert sorted(r["request_id"] for r in audit) == sorted(
        [f"req-{i}" for i in range(10)] + [f"pair-{i}" for i in range(10)] + ["req-adverse"])
    stored = {r["id"]: (r["reason"], r["w"]) for r in query_rows(client, f"""
        SELECT prediction_id AS id, sampling_reason AS reason, inclusion_weight AS w FROM {database}.explanations""")}
    assert len(stored) == len(events)  # one row each: no answer collapsed into a real row
    assert {stored[e["prediction_id"]] for e in reservoir} == {("RESERVOIR", 12.5)}
    assert stored[adverse["prediction_id"]] == ("ADVERSE", 1.0)

    # every aggregate holds exactly what the stream alone gives
    control_client, control = control_db
    assert Sink(stack, control, columnar=columnar).process(raw_messages(CODEC, events)) == len(events)
    mine, expected = aggregates(client, database), aggregates(control_client, control)
    assert set(FOUR) <= set(expected) and all(expected[t][0] > 0 for t in FOUR)
    assert mine.keys() == expected.keys()
    for table in expected:
        assert mine[table][0] == expected[table][0], table
        assert mine[table][1] == pytest.approx(expected[table][1], rel=1e-12), table
    assert query_rows(client, f"SELECT count() AS n FROM {database}.engine_stats "
                           f"WHERE sampling_reason = 'ON_DEMAND'")[0]["n"] == 0


def test_an_answer_an_older_sink_stored_does_not_make_the_real_explanation_a_duplicate(stack, db):
    """Sinks before this one stored answers: such a row is not the decision's explanation."""
    client, database = db
    model, events = sampled_stream(seed=43)
    real = next(e for e in events if e["inclusion_weight"] == 12.5)
    model_reference.register_reference(client, model, database)
    insert_explanations(client, [answer_of(real, "stored-by-an-older-sink")], database)

    sink = Sink(stack, database)
    assert sink.process(raw_messages(CODEC, [real])) == 1 and sink.stats.duplicates == 0
    rows = query_rows(client, f"SELECT request_id AS r, inclusion_weight AS w FROM {database}.explanations "
                           f"WHERE prediction_id = {lit(real['prediction_id'])} ORDER BY r")
    assert rows == [{"r": "", "w": 12.5}, {"r": "stored-by-an-older-sink", "w": 1.0}]
    # the real one is what duplicates are found against now
    assert sink.process(raw_messages(CODEC, [real], first_offset=500)) == 0 and sink.stats.duplicates == 1


def test_the_consumer_commits_the_offsets_of_answers(fresh_topics, db):
    """Through the real consumer loop: answers are skipped, not retried; a partition that carries
    only answers is committed to its end like the others."""
    client, database = db
    settings = fresh_topics
    model, events = sampled_stream(seed=45)
    model_reference.register_reference(client, model, database)
    topic = settings.topic("explanations")
    producer = Producer(settings.kafka(**{"linger.ms": 5}))
    ends: dict[int, int] = {}

    def delivered(err, msg):
        assert err is None, err
        ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    answers = [answer_of(e, f"req-{i}") for i, e in enumerate(events[:40])]
    for i, e in enumerate(answers):  # answers first, on partition 3 and beside the stream on 0
        producer.produce(topic, value=CODEC.encode(e), key=e["prediction_id"].encode(), partition=3 if i % 4 else 0,
                         on_delivery=delivered)
    for i, e in enumerate(events):
        producer.produce(topic, value=CODEC.encode(e), key=e["prediction_id"].encode(), partition=i % 3,
                         on_delivery=delivered)
    assert producer.flush(30) == 0

    sink = Sink(settings, database)
    stop = threading.Event()
    runner = threading.Thread(target=run_sink, args=(settings, stop),
                              kwargs={"batch_size": 100, "flush_seconds": 0.3, "database": database, "sink": sink})
    runner.start()
    try:
        # both are counted in Sink.write, which the loop follows with the batch's commit
        wait_for(lambda: sink.stats.answers == len(answers) and sink.stats.written == len(events), 60, "the sink")
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()
    assert sink.stats.written == len(events) and sink.stats.answers == len(answers) and sink.stats.retries == 0
    assert stored_answers(client, database) == 0

    consumer = Consumer(settings.kafka(**{"group.id": f"{settings.topic_prefix}whystream-sink"}))
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == ends
    finally:
        consumer.close()
