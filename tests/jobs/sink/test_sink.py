"""The ClickHouse sink: real broker (Tansu), real ClickHouse engine (chDB).
The only stand-in is the sink's own client-factory seam, used to make
ClickHouse "unavailable" and to lose the answer of an insert that landed."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from clickhouse_connect.driver.exceptions import OperationalError
from confluent_kafka import Consumer, Producer, TopicPartition

from support.chdb import (
    base_minute,
    events_for,
    stream,
    synthetic_model,
    tiny_registered_model,
)
from whystream.errors import ConfigError
from whystream.jobs.clickhouse import connection as ch
from whystream.jobs.clickhouse import references as model_reference
from whystream.jobs.clickhouse.query_port import SinkQueryClient, open_query_client
from whystream.jobs.clickhouse.sql import rows
from whystream.jobs.sink.consumer import run_sink
from whystream.jobs.sink.sink import Sink, SinkStopped
from whystream.kafka.messages import RawMessage
from whystream.wire.codecs import codec_for


class Outage:
    """The sink's client factory, with a switch: while `down`, connecting fails
    and the clients handed out before fail too. `lose_answers` inserts into
    `explanations` land and then raise, as if the connection broke before the
    answer came back."""

    def __init__(self, settings, database, lose_answers: int = 0):
        self.settings, self.database = settings, database
        self.down = False
        self.lose_answers = lose_answers
        self.refused = 0

    def __call__(self):
        if self.down:
            self.refused += 1
            raise ConfigError("WHYSTREAM_CLICKHOUSE_DSN", "ClickHouse is down (test outage)")
        return _Client(ch.connect(self.settings, self.database), self)


class _Client:
    def __init__(self, real, outage: Outage):
        self.real, self.outage = real, outage

    def _check(self):
        if self.outage.down:
            raise OperationalError("connection refused (test outage)")

    def query(self, *args, **kwargs):
        self._check()
        return self.real.query(*args, **kwargs)

    def insert(self, table, *args, **kwargs):
        self._check()
        result = self.real.insert(table, *args, **kwargs)
        if table == "explanations" and self.outage.lose_answers > 0:
            self.outage.lose_answers -= 1
            raise OperationalError("connection reset before the answer (test)")
        return result

    def raw_insert(self, table, *args, **kwargs):
        self._check()
        result = self.real.raw_insert(table, *args, **kwargs)
        if table == "explanations" and self.outage.lose_answers > 0:
            self.outage.lose_answers -= 1
            raise OperationalError("connection reset before the answer (test)")
        return result

    def __getattr__(self, name):
        return getattr(self.real, name)


def counts(client, database) -> dict:
    return rows(client, f"""SELECT
        (SELECT count() FROM {database}.explanations) AS raw,
        (SELECT uniqExact(prediction_id) FROM {database}.explanations) AS ids,
        (SELECT sum(n) FROM {database}.attribution_hist) AS hist,
        (SELECT sum(n) FROM {database}.attribution_stats) AS stats,
        (SELECT sum(n) FROM {database}.engine_stats) AS engine""")[0]


def model_events(model, n: int, seed: int, prefix: str) -> list[dict]:
    rng = np.random.default_rng(seed)
    shap = rng.laplace(size=(n, len(model.feature_names))) * 0.2
    weights = np.where(rng.random(n) < 0.1, 1.0, 8.0)
    reasons = ["ADVERSE" if w == 1 else "RESERVOIR" for w in weights]
    sources = list(rng.choice(["LIVE", "CACHE", "FALLBACK"], size=n, p=[0.7, 0.25, 0.05]))
    return events_for(model, shap, weights, reasons, base_minute(0.2), prefix, rng, sources)


def produce(settings, payloads: list[tuple[bytes, bytes]], ends: dict[int, int]) -> None:
    """Send to `explanations`; `ends` gets one past the last offset written per partition."""
    producer = Producer(settings.kafka(**{"linger.ms": 5}))

    def delivered(err, msg):
        assert err is None, err
        ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    for key, value in payloads:
        producer.produce(settings.topic("explanations"), key=key, value=value, on_delivery=delivered)
    assert producer.flush(30) == 0


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sink_survives_clickhouse_outage_without_loss_or_doubles(fresh_topics, db, tmp_path):
    client, database = db
    model = tiny_registered_model(tmp_path / "registry")
    settings = fresh_topics.with_(registry=tmp_path / "registry")
    codec = codec_for("ExplanationEvent", settings.schema_registry_url, settings.topic("explanations"))
    first = model_events(model, 1200, seed=1, prefix="a")
    second = model_events(model, 1200, seed=2, prefix="b")
    encode = [(e["prediction_id"].encode(), codec.encode(e)) for e in first + second]

    outage = Outage(settings, database, lose_answers=1)
    sink = Sink(settings, database, client_factory=outage, backoff=(0.05, 0.2))
    stop = threading.Event()
    runner = threading.Thread(target=run_sink, args=(settings, stop),
                              kwargs={"batch_size": 500, "flush_seconds": 0.3, "database": database, "sink": sink})
    runner.start()
    ends: dict[int, int] = {}
    try:
        produce(settings, encode[:1200] + [(b"x", b"not an explanation")], ends)
        wait_for(lambda: sink.stats.written == 1200, 60, "the first half")
        outage.down = True
        # the second half, a redelivered stretch of the first, and one more undecodable message
        produce(settings, encode[1200:] + encode[:200] + [(b"y", b"\xc3\x01garbage")], ends)
        wait_for(lambda: outage.refused >= 3, 30, "the sink to hit the outage")
        assert sink.stats.written == 1200
        outage.down = False
        wait_for(lambda: sink.stats.written == 2400 and sink.stats.consumed == 2400 + 200 + 2, 60, "the rest")
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()

    assert sink.stats.written == 2400 and sink.stats.undecodable == 2 and sink.stats.duplicates == 200
    assert sink.stats.retries >= 3
    n_features = len(model.feature_names)
    exact = sum(e["source"] != "FALLBACK" for e in first + second)  # fallback attributions stay out of drift
    assert counts(client, database) == {"raw": 2400, "ids": 2400, "hist": exact * n_features,
                                        "stats": exact * n_features, "engine": 2400}
    # the sink registered the model's reference from the registry
    assert model_reference.has_reference(client, model.name, model.version, database)
    # every offset is committed: a restarted sink starts at the end
    consumer = Consumer(settings.kafka(**{"group.id": f"{settings.topic_prefix}whystream-sink"}))
    try:
        topic = settings.topic("explanations")
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        # (Tansu's reported high watermarks lag behind; the delivery reports give the ends)
        assert {tp.partition: tp.offset for tp in committed} == ends
    finally:
        consumer.close()


def raw_messages(codec, events, first_offset: int = 0, topic: str = "explanations") -> list[RawMessage]:
    return [RawMessage(codec.encode(e), e["prediction_id"].encode(), topic, i % 2, first_offset + i)
            for i, e in enumerate(events)]


def test_redelivered_explanations_are_not_counted_twice(stack, db):
    client, database = db
    model = synthetic_model(n_features=4, seed=21)
    model_reference.register_reference(client, model, database)
    events, _ = stream(model, base_minute(), minutes=2, per_minute=1000, seed=22)
    codec = codec_for("ExplanationEvent", None, "explanations")
    sink = Sink(stack, database)
    batch = raw_messages(codec, events)
    assert sink.process(batch) == len(events)
    before = counts(client, database)
    assert before["hist"] == 4 * len(events)
    assert sink.process(batch) == 0  # the same batch again (read again after a crash before the commit)
    assert sink.process(raw_messages(codec, events[:50], first_offset=10_000)) == 0  # re-published
    assert sink.process(raw_messages(codec, events[:5] * 3, first_offset=20_000)) == 0
    assert counts(client, database) == before
    # the batch read again is found in the ledger (stored in every view); the rest are duplicates
    assert sink.stats.duplicates == 50 + 15


class BrokenRegistry:
    """The sink's registry seam: a registry that cannot load anything (unreadable files, none
    configured), raising what such a registry raises, not ModelNotFound."""

    def __init__(self):
        self.loads = 0

    def load(self, name, version):
        self.loads += 1
        raise OSError(f"cannot read {name}/{version}/model.txt")


def test_a_registry_that_cannot_load_a_version_never_stalls_the_sink(stack, db):
    """Not a ClickHouse failure, so never retried as one: the rows are stored without histogram
    rows, the version counts as unreferenced, and the registry is asked again only after a while."""
    client, database = db
    model = synthetic_model(n_features=3, seed=25)  # no reference registered in ClickHouse
    events, _ = stream(model, base_minute(), minutes=1, per_minute=400, seed=26)
    registry = BrokenRegistry()
    sink = Sink(stack, database, registry=registry, backoff=(0.01, 0.05))
    codec = codec_for("ExplanationEvent", None, "explanations")
    assert sink.process(raw_messages(codec, events)) == len(events)
    assert sink.process(raw_messages(codec, events[:1], first_offset=50_000)) == 0  # a duplicate, same version
    assert sink.stats.retries == 0 and sink.stats.unreferenced == len(events)
    assert registry.loads == 1  # the second batch did not ask again within the minute
    found = counts(client, database)
    assert found["raw"] == len(events) and found["hist"] == 0


def test_a_retried_batch_is_written_once(stack, db):
    """The first insert lands but its answer is lost: the retry (same rows, same
    token) is deduplicated by ClickHouse in the table and in every view."""
    client, database = db
    model = synthetic_model(n_features=3, seed=23)
    model_reference.register_reference(client, model, database)
    events, _ = stream(model, base_minute(), minutes=1, per_minute=1000, seed=24)
    outage = Outage(stack, database, lose_answers=2)
    sink = Sink(stack, database, client_factory=outage, backoff=(0.01, 0.05))
    assert sink.process(raw_messages(codec_for("ExplanationEvent", None, "explanations"), events)) == len(events)
    assert sink.stats.retries == 2
    assert counts(client, database) == {"raw": len(events), "ids": len(events), "hist": 3 * len(events),
                                        "stats": 3 * len(events), "engine": len(events)}


def test_undecodable_messages_are_skipped_and_counted(stack, db):
    client, database = db
    model = synthetic_model(n_features=2, seed=25)
    events, _ = stream(model, base_minute(), minutes=1, per_minute=300, seed=26)
    batch = raw_messages(codec_for("ExplanationEvent", None, "explanations"), events)
    batch.insert(3, RawMessage(b"junk", None, "explanations", 0, 99_999))
    batch.append(RawMessage(b"", None, "explanations", 1, 99_998))
    sink = Sink(stack, database)
    assert sink.process(batch) == len(events)
    assert sink.stats.undecodable == 2
    assert counts(client, database)["raw"] == len(events)
    # no reference was registered for this version: rows and statistics, no histogram yet
    assert counts(client, database)["hist"] == 0 and sink.stats.unreferenced == len(events)


def test_stop_during_an_outage_leaves_the_batch_unwritten(stack, db):
    _, database = db
    model = synthetic_model(n_features=2, seed=27)
    events, _ = stream(model, base_minute(), minutes=1, per_minute=300, seed=28)
    outage = Outage(stack, database)
    outage.down = True
    stop = threading.Event()
    sink = Sink(stack, database, client_factory=outage, stop_event=stop, backoff=(0.05, 0.1))
    threading.Timer(0.5, stop.set).start()
    with pytest.raises(SinkStopped):
        sink.process(raw_messages(codec_for("ExplanationEvent", None, "explanations"), events))
    assert sink.stats.written == 0 and outage.refused >= 2


def test_whystream_sink_command_serves_queries_while_it_owns_chdb(fresh_topics, tmp_path):
    """`whystream sink` in its own process owns a chDB directory; this process reads
    through its query port (it must not open the directory) and stops it with SIGINT."""
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    home = tmp_path / "home"
    dsn = f"chdb://{tmp_path / 'chdb'}"
    env = {**os.environ, **fresh_topics.with_(clickhouse_dsn=dsn, home=home).as_env(), "COLUMNS": "200"}
    cli = str(Path(sys.executable).with_name("whystream"))
    sink = subprocess.Popen([cli, "sink", "--no-drift", "--flush", "0.2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        settings = fresh_topics.with_(clickhouse_dsn=dsn, home=home)
        wait_for(lambda: (home / ch.PORT_FILE).exists() or sink.poll() is not None, 60, "the query port")
        assert sink.poll() is None, sink.stdout.read()
        model = synthetic_model(n_features=3, seed=71)
        events, _ = stream(model, base_minute(0.5), 1, per_minute=300, seed=72)
        codec = codec_for("ExplanationEvent", None, settings.topic("explanations"))
        produce(settings, [(e["prediction_id"].encode(), codec.encode(e)) for e in events], {})
        reader = open_query_client(settings)
        assert isinstance(reader, SinkQueryClient)

        def written():
            return rows(reader, "SELECT count() AS c FROM explanations")[0]["c"]

        wait_for(lambda: written() == len(events), 60, "the rows")
        done = subprocess.run([cli, "sql", "SELECT sampling_reason, count() AS n FROM explanations GROUP BY 1"],
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "RESERVOIR" in done.stdout, done.stdout + done.stderr
        assert json.loads((home / ch.PORT_FILE).read_text())["pid"] == sink.pid
    finally:
        sink.send_signal(signal.SIGINT)
        output = sink.communicate(timeout=60)[0]
    assert sink.returncode == 0, output
    assert "sink stopped" in output and not (home / ch.PORT_FILE).exists()
