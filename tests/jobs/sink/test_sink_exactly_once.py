"""The sink never stalls and writes exactly once: real broker (Tansu), real chDB.
Seams used: the sink's own client factory (to hold two sinks at the same point
of their work) and its decode step (to hand ClickHouse a row it refuses)."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from test_sink import counts, produce, raw_messages, wait_for

from support.chdb import base_minute, stream, synthetic_model
from whystream.jobs.clickhouse import connection as ch
from whystream.jobs.clickhouse import references as model_reference
from whystream.jobs.clickhouse.sql import lit
from whystream.jobs.clickhouse.sql import rows as query_rows
from whystream.jobs.sink import explanation_rows
from whystream.jobs.sink.columns import INSERT_COLUMNS, encode_rows
from whystream.jobs.sink.consumer import run_sink
from whystream.jobs.sink.ledger import BLOCK
from whystream.jobs.sink.pipeline import SinkPipeline
from whystream.jobs.sink.rows import decode_messages, rows_of
from whystream.jobs.sink.sink import Sink
from whystream.kafka.messages import RawMessage
from whystream.wire.codecs import codec_for


def events_with_ids(model, n: int, seed: int, id_length: int) -> list[dict]:
    events, _ = stream(model, base_minute(), minutes=max(1, n // 300), per_minute=1500, seed=seed, k=300)
    events = events[:n]
    for i, e in enumerate(events):
        stem = f"{seed}-{i}-"
        e["prediction_id"] = stem + "x" * (id_length - len(stem))
    return events


def dead_letters(settings, expected: int, timeout: float = 30.0) -> list[dict]:
    topic = settings.topic("explanations.dlq")
    codec = codec_for("DeadLetter", None, topic)
    consumer = Consumer(settings.kafka(**{"group.id": f"read-{topic}", "auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    out = []
    try:
        wait_for(lambda: out.extend(codec.decode(m.value()) for m in consumer.consume(100, 0.2)
                                    if m.error() is None) or len(out) >= expected, timeout, "the dead letters")
    finally:
        consumer.close()
    return out


def sink_until(settings, database, sink, condition, timeout: float = 60.0) -> None:
    """run_sink (the real consumer loop) until `condition()` holds after a batch, then stop it."""
    stop = threading.Event()
    runner = threading.Thread(target=run_sink, args=(settings, stop),
                              kwargs={"batch_size": 5000, "flush_seconds": 0.3, "database": database, "sink": sink})
    runner.start()
    try:
        wait_for(condition, timeout, "the sink")
        wait_for(lambda: sink.stats.batches > 0, timeout, "a batch")
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()


@pytest.mark.parametrize("id_length", [64, 1000])
def test_ids_of_any_length_at_the_default_batch_size(stack, db, id_length):
    client, database = db
    model = synthetic_model(n_features=3, seed=31)
    model_reference.register_reference(client, model, database)
    events = events_with_ids(model, 5000, seed=32, id_length=id_length)
    codec = codec_for("ExplanationEvent", None, "explanations")
    sink = Sink(stack, database)
    batch = raw_messages(codec, events)
    assert sink.process(batch) == 5000
    assert sink.process(batch) == 0 and sink.stats.duplicates == 0  # read again: all in the ledger
    again = raw_messages(codec, events, first_offset=100_000)  # published again: at other offsets
    assert sink.process(again) == 0 and sink.stats.duplicates == 5000  # all found again, ids of that length
    assert counts(client, database) == {"raw": 5000, "ids": 5000, "hist": 15000, "stats": 15000, "engine": 5000}
    lengths = query_rows(client, f"SELECT min(length(prediction_id)) AS lo, max(length(prediction_id)) AS hi "
                              f"FROM {database}.explanations")[0]
    assert lengths == {"lo": id_length, "hi": id_length}


def test_non_finite_and_impossible_rows_are_set_aside_and_never_block(fresh_topics, db):
    client, database = db
    model = synthetic_model(n_features=3, seed=33)
    model_reference.register_reference(client, model, database)
    events, _ = stream(model, base_minute(), minutes=1, per_minute=1000, seed=34)
    bad = {3: ("inclusion_weight", math.nan), 10: ("inclusion_weight", -2.0), 20: ("base_value", math.inf),
           30: ("shap", -math.inf), 40: ("shap", math.nan), 50: ("value", math.inf)}
    for i, (name, value) in bad.items():
        if name in ("shap", "value"):
            events[i]["attributions"][1][name] = value
        else:
            events[i][name] = value
    codec = codec_for("ExplanationEvent", None, fresh_topics.topic("explanations"))
    batch = raw_messages(codec, events, topic=fresh_topics.topic("explanations"))
    batch.insert(60, RawMessage(b"\xc3\x01not avro", b"k", fresh_topics.topic("explanations"), 0, 77_777))
    sink = Sink(fresh_topics, database)
    good = len(events) - len(bad)
    assert sink.process(batch) == good
    assert sink.process(batch) == 0  # set aside again, never stored, never an error
    assert counts(client, database) == {"raw": good, "ids": good, "hist": 3 * good, "stats": 3 * good,
                                        "engine": good}
    assert not query_rows(client, f"SELECT prediction_id FROM {database}.explanations WHERE "
                               f"prediction_id IN {lit([events[i]['prediction_id'] for i in bad])}")
    assert sink.stats.set_aside == {"NON_FINITE_VALUE": 2 * 5, "BAD_FIELD": 2 * 1, "UNDECODABLE": 2 * 1}
    letters = dead_letters(fresh_topics, 2 * (len(bad) + 1))
    assert sorted(letter["offset"] for letter in letters) == sorted(2 * [*(batch[i].offset for i in bad), 77_777])
    first = {letter["offset"]: letter for letter in letters}
    weight = first[batch[3].offset]
    assert weight["reason_code"] == "NON_FINITE_VALUE" and "inclusion_weight" in weight["reason"]
    assert weight["original"] == batch[3].value and weight["prediction_id"] == events[3]["prediction_id"]
    assert first[batch[10].offset]["reason_code"] == "BAD_FIELD" and "inclusion_weight" in first[batch[10].offset]["reason"]
    assert "shap" in first[batch[30].offset]["reason"] and first[77_777]["reason_code"] == "UNDECODABLE"


def test_a_row_clickhouse_refuses_is_set_aside_and_the_rest_written(fresh_topics, db):
    """Real ClickHouse refusing a row (nested arrays of unequal length): split down to the row."""
    client, database = db
    model = synthetic_model(n_features=3, seed=35)
    model_reference.register_reference(client, model, database)
    events, _ = stream(model, base_minute(), minutes=1, per_minute=1000, seed=36)
    codec = codec_for("ExplanationEvent", None, fresh_topics.topic("explanations"))
    poison = events[17]["prediction_id"]

    def decode(messages, topic_ids):
        rows, aside = decode_messages(messages, codec, topic_ids)
        at = rows.prediction_ids.index(poison)
        event = next(e for e in events if e["prediction_id"] == poison)
        columns = rows_of([event], [rows.messages[at]], topic_ids)
        bad = [*explanation_rows.explanation_columns([event], [(rows.messages[at].partition, rows.messages[at].offset)]),
               [rows.messages[at].topic], [topic_ids[rows.messages[at].topic]]]
        shap = INSERT_COLUMNS.index("attributions.shap")
        bad[shap] = [bad[shap][0][:-1]]  # one SHAP value short of its features
        assert columns.payload != encode_rows(bad)[0]
        parts = [encode_rows(bad)[0] if i == at else rows.row(i) for i in range(len(rows))]
        rows.payload, rows.row_ends = b"".join(parts), np.cumsum([len(p) for p in parts])
        return rows, aside

    sink = Sink(fresh_topics, database, decode=decode)
    batch = raw_messages(codec, events, topic=fresh_topics.topic("explanations"))
    assert sink.process(batch) == len(events) - 1
    assert sink.stats.set_aside == {"BAD_FIELD": 1} and sink.stats.retries == 0
    assert counts(client, database)["raw"] == len(events) - 1
    [letter] = dead_letters(fresh_topics, 1)
    assert letter["prediction_id"] == poison and "refused" in letter["reason"]


class Gate:
    """Client factory for racing sinks: the first insert of every sink waits until all
    of them are about to insert (each looked at the ledger before any insert landed)."""

    def __init__(self, settings, database, parties: int):
        self.settings, self.database = settings, database
        self.barrier = threading.Barrier(parties, timeout=60)
        self.waited: set[int] = set()

    def __call__(self):
        gate = self

        class Client:
            def __init__(self):
                self.real = ch.connect(gate.settings, gate.database)

            def raw_insert(self, table, *args, **kwargs):
                me = threading.get_ident()
                if table == "explanations" and me not in gate.waited:
                    gate.waited.add(me)
                    gate.barrier.wait()
                return self.real.raw_insert(table, *args, **kwargs)

            def __getattr__(self, name):
                return getattr(self.real, name)

        return Client()


def test_two_sinks_racing_over_offsets_cut_differently_write_once(stack, db):
    """Sink A holds offsets 0..1199 of two partitions, sink B (which took over) 0..2999: both
    look at the ledger, then insert at the same moment. Every table and view counts each once."""
    client, database = db
    model = synthetic_model(n_features=4, seed=37)
    model_reference.register_reference(client, model, database)
    events, _ = stream(model, base_minute(), minutes=17, per_minute=2000, seed=38, k=300)
    codec = codec_for("ExplanationEvent", None, "explanations")
    everything = raw_messages(codec, events[:6000])  # partitions 0 and 1, offsets 0..5999 (3000 each)
    gate = Gate(stack, database, parties=2)
    sinks = [Sink(stack, database, client_factory=gate, topic_id=lambda t: "topic-id-1") for _ in range(2)]
    cuts = [everything[:2400], everything]
    results = {}

    def run(k):
        results[k] = sinks[k].process(cuts[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {0: 2400, 1: 6000}  # each looked before the other's rows landed: a real race
    assert counts(client, database) == {"raw": 6000, "ids": 6000, "hist": 24000, "stats": 24000, "engine": 6000}
    weights = query_rows(client, f"""SELECT
        (SELECT sum(inclusion_weight) FROM {database}.explanations) AS raw,
        (SELECT sum(weight) FROM {database}.engine_stats) AS engine""")[0]
    assert weights["raw"] == pytest.approx(weights["engine"], rel=1e-12)
    # a third sink re-reading everything, cut in yet other batches, adds nothing
    third = Sink(stack, database, topic_id=lambda t: "topic-id-1")
    assert sum(third.process(everything[b:b + 777]) for b in range(0, 6000, 777)) == 0
    assert counts(client, database)["raw"] == 6000


def test_units_never_span_an_offset_block(stack, db):
    client, database = db
    model = synthetic_model(n_features=2, seed=39)
    model_reference.register_reference(client, model, database)
    events, _ = stream(model, base_minute(), minutes=4, per_minute=2000, seed=40, k=300)
    codec = codec_for("ExplanationEvent", None, "explanations")
    batch = [RawMessage(codec.encode(e), None, "explanations", 0, BLOCK - 600 + i) for i, e in enumerate(events)]
    sink = Sink(stack, database, topic_id=lambda t: "")
    assert sink.process(batch) == len(events)
    parts = query_rows(client, f"""SELECT min(kafka_offset) AS lo, max(kafka_offset) AS hi FROM {database}.sink_ledger
                                GROUP BY intDiv(kafka_offset, {BLOCK}) ORDER BY lo""")
    assert [p["lo"] for p in parts] == [BLOCK - 600, BLOCK] and parts[-1]["hi"] == BLOCK - 600 + len(events) - 1


def test_a_recreated_topic_reusing_offsets_is_stored(fresh_topics, db):
    """Real topic ids (Tansu): the same offsets of a deleted and recreated topic are new rows."""
    client, database = db
    model = synthetic_model(n_features=3, seed=41)
    model_reference.register_reference(client, model, database)
    settings = fresh_topics
    topic = settings.topic("explanations")
    codec = codec_for("ExplanationEvent", None, topic)
    old, _ = stream(model, base_minute(), minutes=1, per_minute=1000, seed=42, prefix="old")
    new, _ = stream(model, base_minute(), minutes=1, per_minute=1000, seed=43, prefix="new")
    sink = Sink(settings, database)

    def drain(expected_written):
        sink_until(settings, database, sink, lambda: sink.stats.written >= expected_written)
        assert sink.stats.written == expected_written

    produce(settings, [(e["prediction_id"].encode(), codec.encode(e)) for e in old], {})
    drain(len(old))
    admin = AdminClient(settings.kafka())
    for future in admin.delete_topics([topic]).values():
        future.result(30)
    wait_for(lambda: topic not in admin.list_topics(timeout=10).topics, 30, "the topic to go")
    for future in admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)]).values():
        future.result(30)
    ends: dict[int, int] = {}
    produce(settings, [(e["prediction_id"].encode(), codec.encode(e)) for e in new], ends)
    sink.topic_id._known.clear()  # as after TOPIC_ID_REFRESH_S
    drain(len(old) + len(new))
    offsets = query_rows(client, f"SELECT uniqExact(kafka_topic_id) AS ids, count() AS n, "
                              f"uniqExact(kafka_partition, kafka_offset) AS positions FROM {database}.sink_ledger")[0]
    assert offsets["ids"] == 2 and offsets["n"] == len(old) + len(new)
    assert offsets["positions"] < offsets["n"]  # offsets were reused, and both rows are there
    assert counts(client, database)["stats"] == 3 * (len(old) + len(new))


def test_reused_offsets_without_topic_ids_are_told_apart_by_prediction_id(stack, db):
    client, database = db
    model = synthetic_model(n_features=2, seed=44)
    model_reference.register_reference(client, model, database)
    old, _ = stream(model, base_minute(), minutes=1, per_minute=1000, seed=45, prefix="old")
    new, _ = stream(model, base_minute(), minutes=1, per_minute=1000, seed=46, prefix="new")
    codec = codec_for("ExplanationEvent", None, "explanations")
    sink = Sink(stack, database, topic_id=lambda t: "")  # a broker without topic ids
    assert sink.process(raw_messages(codec, old)) == len(old)
    assert sink.process(raw_messages(codec, new)) == len(new)  # same offsets, other explanations
    assert sink.process(raw_messages(codec, new)) == 0
    assert counts(client, database)["raw"] == len(old) + len(new)


def test_committed_offsets_follow_what_is_stored(fresh_topics, db):
    """A batch with rows set aside still commits: the partition moves on."""
    client, database = db
    model = synthetic_model(n_features=2, seed=47)
    model_reference.register_reference(client, model, database)
    events, _ = stream(model, base_minute(), minutes=1, per_minute=1000, seed=48)
    events[5]["inclusion_weight"] = math.nan
    topic = fresh_topics.topic("explanations")
    codec = codec_for("ExplanationEvent", None, topic)
    ends: dict[int, int] = {}
    produce(fresh_topics, [(e["prediction_id"].encode(), codec.encode(e)) for e in events], ends)
    sink = Sink(fresh_topics, database)
    sink_until(fresh_topics, database, sink, lambda: sink.stats.written >= len(events) - 1)
    assert sink.stats.written == len(events) - 1 and sink.stats.set_aside == {"NON_FINITE_VALUE": 1}
    consumer = Consumer(fresh_topics.kafka(**{"group.id": f"{fresh_topics.topic_prefix}whystream-sink"}))
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in ends], timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == ends
    finally:
        consumer.close()


def test_the_pipeline_writes_batches_in_order_while_decoding_the_next(stack, db):
    client, database = db
    model = synthetic_model(n_features=2, seed=49)
    model_reference.register_reference(client, model, database)
    events, _ = stream(model, base_minute(), minutes=3, per_minute=1000, seed=50)
    codec = codec_for("ExplanationEvent", None, "explanations")
    messages = raw_messages(codec, events)
    batches = [messages[b:b + 200] for b in range(0, len(messages), 200)]
    pipeline = SinkPipeline(Sink(stack, database, topic_id=lambda t: ""), overlap=True)
    done = []
    try:
        for batch in batches:
            done += pipeline.push(batch)
            assert done == batches[:len(done)] and len(done) == batches.index(batch)  # the one before is written
        done += pipeline.drain()
    finally:
        pipeline.close()
    assert done == batches
    assert counts(client, database)["raw"] == len(events)


def test_a_view_that_failed_mid_insert_gets_the_rows_after_a_restart_and_none_twice(stack, db):
    """Finding 6 of issue 23: materialized-view pushes are not atomic. The table (and some views)
    took the block, one view did not (its target table gone: a transient error, retried); the sink
    is stopped there and a new one reads the batch again. It must complete the view, under the same
    deduplication token, not skip the rows because the table (or `explanation_ids`) has them."""
    client, database = db
    model = synthetic_model(n_features=3, seed=43)
    model_reference.register_reference(client, model, database)
    events, _ = stream(model, base_minute(), minutes=1, per_minute=600, seed=44)
    codec = codec_for("ExplanationEvent", None, "explanations")
    batch = raw_messages(codec, events)
    client.command(f"""CREATE TABLE {database}.gated (prediction_id String) ENGINE = MergeTree
                       ORDER BY prediction_id SETTINGS non_replicated_deduplication_window = 1000""")
    client.command(f"CREATE TABLE {database}.gate (open UInt8) ENGINE = MergeTree ORDER BY open")
    # Divides by the rows of `gate`: while it is empty the view fails as it runs (ILLEGAL_DIVISION,
    # not the rows' fault, so the sink retries), after the table took the block.
    client.command(f"""CREATE MATERIALIZED VIEW {database}.gated_mv TO {database}.gated AS
                       SELECT prediction_id FROM {database}.explanations
                       WHERE sleepEachRow(0.005) = 0
                         AND intDiv(1, (SELECT count() FROM {database}.gate) + length(prediction_id) * 0) = 1""")

    first = Sink(stack, database, backoff=(0.05, 0.05), topic_id=lambda t: "topic-id-1")
    stopped = []

    def run():
        try:
            first.process(batch)
        except Exception as exc:  # SinkStopped: as if the sink were killed while retrying
            stopped.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: first.stats.retries >= 1, 60, "the failing insert to be retried")
    first.stop_event.set()
    thread.join(60)
    assert stopped and counts(client, database)["raw"] > 0  # the table took the block of the insert that failed

    client.command(f"INSERT INTO {database}.gate VALUES (1)")  # the view works again; a new sink reads the batch
    again = Sink(stack, database, topic_id=lambda t: "topic-id-1")
    again.process(batch)
    n = len(events)
    assert counts(client, database) == {"raw": n, "ids": n, "hist": 3 * n, "stats": 3 * n, "engine": n}
    views = query_rows(client, f"""SELECT (SELECT count() FROM {database}.gated) AS gated,
        (SELECT count() FROM {database}.explanation_ids) AS ids,
        (SELECT count() FROM {database}.sink_ledger) AS ledger""")[0]
    assert views == {"gated": n, "ids": n, "ledger": n}
    # a third sink re-reading the batch adds nothing anywhere
    assert Sink(stack, database, topic_id=lambda t: "topic-id-1").process(batch) == 0
    assert query_rows(client, f"SELECT count() AS c FROM {database}.gated")[0]["c"] == n
