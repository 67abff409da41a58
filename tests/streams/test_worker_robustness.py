"""Real worker processes on the real embedded stack, fed what breaks workers:
a message larger than the dead-letter topic accepts, a registered version that
cannot be served, the same decision twice in one batch, and an event far in
the future on a busy partition. The worker stays up and everything ends
somewhere."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from support.worker import (
    BAND,
    Worker,
    kill_mid_stream,
    records_for,
    stream_to_a_live_worker,
    wait_quiet,
)
from whystream.infra.stack import free_port
from whystream.kafka.reader import read_all
from whystream.wire.codecs import codec_for

pytestmark = pytest.mark.integration
MB = 1024 * 1024


def produce(settings, values, partition=None, rate=0.0):
    """Send (key, value) pairs to `predictions`; with `rate`, that many per second."""
    producer = Producer(settings.kafka(**{"message.max.bytes": 8 * MB}))
    began = time.monotonic()
    for i, (key, value) in enumerate(values):
        kwargs = {} if partition is None else {"partition": partition}
        producer.produce(settings.topic("predictions"), value, key, **kwargs)
        if rate and i % 50 == 49:
            producer.poll(0)
            time.sleep(max(0.0, (i + 1) / rate - (time.monotonic() - began)))
    assert producer.flush(30) == 0


def encoded(records):
    codec = codec_for("PredictionEvent")
    return [(r["prediction_id"].encode(), codec.encode(r)) for r in records]


def is_priority(r):
    return r["decision"] != "approve" or r["priority"] or abs(r["score"] - r["threshold"]) <= BAND


def test_oversize_unservable_and_duplicated_inputs_leave_the_worker_running(broken_registry, small_model,  # noqa: F811
                                                                              tmp_path):
    settings, bad_version, _ = broken_registry
    records = records_for(small_model, 600, seed=21, run_id="rob")
    declined = next(r for r in records if r["decision"] == "decline")
    corrupt = [{**r, "prediction_id": f"corrupt-{i}", "model_version": bad_version} for i, r in enumerate(records[:30])]
    huge = b"\x00" + b"x" * (3 * MB)
    values = encoded(records[:300]) + [(b"huge", huge)] + encoded(corrupt) + encoded([declined]) * 2 \
        + encoded(records[300:])
    produce(settings, values, partition=0)  # one partition: the duplicate lands in the same batch

    worker = Worker(settings, tmp_path)
    worker.wait_ready()
    published = wait_quiet(settings)
    letters = read_all(settings, settings.topic("predictions.dlq"), "DeadLetter")
    alive = worker.process.poll() is None
    worker.kill(signal.SIGTERM)

    assert alive, "the worker died of its input"
    ids = [e["prediction_id"] for e in published]
    assert len(ids) == len(set(ids)), "something was published twice"
    assert {r["prediction_id"] for r in records if is_priority(r)} <= set(ids)
    by_code = {}
    for letter in letters:
        by_code.setdefault(letter["reason_code"], []).append(letter)
    assert set(by_code) == {"UNDECODABLE", "MODEL_UNAVAILABLE"}
    [oversize] = by_code["UNDECODABLE"]
    assert oversize["original_size"] == len(huge) and oversize["original_truncated"]
    assert huge.startswith(oversize["original"]) and len(oversize["original"]) < MB
    assert sorted(d["prediction_id"] for d in by_code["MODEL_UNAVAILABLE"]) == sorted(r["prediction_id"] for r in corrupt)
    assert all(bad_version in d["reason"] for d in by_code["MODEL_UNAVAILABLE"])


def committed(settings, partition):
    consumer = Consumer(settings.kafka(**{"group.id": f"{settings.topic_prefix}whystream-worker",
                                          "enable.auto.commit": False}))
    try:
        [tp] = consumer.committed([TopicPartition(settings.topic("predictions"), partition)], timeout=10)
        return tp.offset
    finally:
        consumer.close()


def test_an_event_far_ahead_does_not_stall_a_busy_partition(engine_settings, small_model, tmp_path):
    settings = engine_settings
    # A short dedup horizon: the commit trails the stream by two 2 s windows, not nine.
    worker = Worker(settings, tmp_path, "--max-open", "4", "--dedup-windows", "1")
    worker.wait_ready()
    warm_up = {**records_for(small_model, 1, seed=1, run_id="warm")[0], "decision": "decline"}
    produce(settings, encoded([warm_up]), partition=0)
    deadline = time.monotonic() + 90
    while not read_all(settings, settings.topic("explanations"), "ExplanationEvent", timeout=3):
        assert time.monotonic() < deadline, "the worker never got its partitions"
        time.sleep(0.5)
    records = records_for(small_model, 9000, seed=23, run_id="ahead")  # 18 s at 500/s, all on partition 0
    for r in records:
        r.update(decision="approve", priority=False, score=0.0, threshold=0.5)  # all candidates
    future = {**records[0], "prediction_id": "year-3000", "event_time": 32_503_680_000_000}
    ahead = {**records[0], "prediction_id": "four-minutes-ahead", "event_time": int(time.time() * 1000) + 240_000}
    stream = records[:500] + [future, ahead] + records[500:]
    started = time.monotonic()

    def send():
        at = 0
        for chunk in range(0, len(stream), 500):  # event time = when it is sent
            part = stream[chunk:chunk + 500]
            for r in part:
                if r["prediction_id"] not in ("year-3000", "four-minutes-ahead"):
                    r["event_time"] = int(time.time() * 1000)
            produce(settings, encoded(part), partition=0)
            at += len(part)
            time.sleep(max(0.0, at / 500 - (time.monotonic() - started)))

    sender = threading.Thread(target=send)
    sender.start()
    commits = []
    while sender.is_alive():
        commits.append(committed(settings, 0))
        time.sleep(1.0)
    sender.join()
    stream_end_ms = int(time.time() * 1000)
    published = [e for e in wait_quiet(settings) if e["prediction_id"] != warm_up["prediction_id"]]
    letters = read_all(settings, settings.topic("predictions.dlq"), "DeadLetter")
    worker.kill(signal.SIGTERM)

    assert [d["prediction_id"] for d in letters] == ["year-3000"] and letters[0]["reason_code"] == "EVENT_TIME"
    # The commit moved past the events ahead while the stream was still running.
    assert max(commits) > 503, commits  # the warm-up is offset 0; the events ahead are 501 and 502
    sampled = [e for e in published if e["sampling_reason"] == "RESERVOIR"]
    during = [e for e in sampled if e["event_time"] >= ahead["event_time"] - 240_000 + 8_000
              and e["explained_at"] < stream_end_ms]
    assert during, "reservoir samples stopped coming after the event ahead"
    assert sum(e["inclusion_weight"] for e in sampled) == pytest.approx(len(stream) - 1)


def garbage(records, every=150):
    """Bad messages interleaved with the records: (key, value) pairs, and how many are bad."""
    codec = codec_for("PredictionEvent")
    kinds = [lambda r: b"\x00not avro", lambda r: codec.encode({**r, "model_name": "nope"}),
             lambda r: codec.encode({**r, "prediction_id": " "}),
             lambda r: codec.encode({**r, "event_time": 32_503_680_000_000}),
             lambda r: codec.encode({**r, "score": float("nan")})]
    out, bad = [], 0
    for i, r in enumerate(records):
        out.append((r["prediction_id"].encode(), codec.encode(r)))
        if i % every == every - 1:
            out.append((f"bad-{i}".encode(), kinds[bad % len(kinds)]({**r, "prediction_id": f"bad-{i}"})))
            bad += 1
    return out, bad


def test_kill_minus_9_with_redis_down_publishes_nothing_twice(engine_settings, small_model, tmp_path):
    settings = engine_settings.with_(redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nobody listens there
    records = records_for(small_model, 6000, seed=31, run_id="noredis")
    for i, r in enumerate(records):  # event time advances 1 ms per event: 6 s of stream, 2 s windows
        r["event_time"] = int(time.time() * 1000) - 60_000 + i
    values, bad = garbage(records)
    worker = Worker(settings, tmp_path)
    worker.wait_ready()
    sender = stream_to_a_live_worker(settings, lambda s, part, rate: produce(s, part, None, rate), values, 400.0)
    replacement = kill_mid_stream(settings, worker, tmp_path, settle_s=1.5)  # Redis never there
    sender.join()
    replacement.wait_ready()
    published = wait_quiet(settings, quiet_s=10.0, timeout=180)
    letters = read_all(settings, settings.topic("predictions.dlq"), "DeadLetter")
    replacement.kill(signal.SIGTERM)

    assert len({d["worker"] for d in letters}) == 2, "the kill did not land mid-stream: nothing was replayed"

    ids = [e["prediction_id"] for e in published]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} explanations published twice"
    positions = [(d["partition"], d["offset"]) for d in letters]
    assert len(positions) == len(set(positions)), f"{len(positions) - len(set(positions))} dead letters twice"
    assert len(letters) == bad
    due = {r["prediction_id"] for r in records if is_priority(r)}
    assert due == {e["prediction_id"] for e in published if e["sampling_reason"] != "RESERVOIR"}
    sampled = [e for e in published if e["sampling_reason"] == "RESERVOIR"]
    assert sum(e["inclusion_weight"] for e in sampled) == pytest.approx(len(records) - len(due))
