"""Real worker processes (`whystream worker`) on the real embedded stack:
kill -9 in the middle of a stream loses nothing, two workers equal one, and
the web server answers /metrics, /health and /explain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
import redis

from support import REPO
from support.worker import (
    Worker,
    dedup,
    kill_mid_stream,
    priority_ids,
    records_for,
    send,
    stream_to_a_live_worker,
    wait_quiet,
)
from whystream.kafka.topics import ensure_topics
from whystream.wire.codecs import codec_for

pytestmark = pytest.mark.integration


def test_kill_minus_9_mid_stream_loses_no_due_explanation(engine_settings, small_model, tmp_path):
    records = records_for(small_model, 6000, seed=11, run_id="kill")
    for i, r in enumerate(records):  # event time advances 1 ms per event: 6 s of stream, 2 s windows
        r["event_time"] = 1_700_000_000_000 + i
    worker = Worker(engine_settings, tmp_path)
    worker.wait_ready()
    producer = stream_to_a_live_worker(engine_settings, send, records, 400.0)  # 14 s of sending
    replacement = kill_mid_stream(engine_settings, worker, tmp_path)
    producer.join()
    replacement.wait_ready()
    published = wait_quiet(engine_settings)
    replacement.kill(signal.SIGTERM)

    unique = dedup(published)
    due = priority_ids(records)
    explained_priority = {i for i, e in unique.items() if e["sampling_reason"] != "RESERVOIR"}
    assert len({unique[i]["worker"] for i in explained_priority}) == 2, "the kill did not land mid-stream"
    assert due == explained_priority
    sampled = [e for e in unique.values() if e["sampling_reason"] == "RESERVOIR"]
    # Every reservoir window was rebuilt whole: weights still add up to the candidates.
    assert sum(e["inclusion_weight"] for e in sampled) == pytest.approx(len(records) - len(due))


def test_two_workers_produce_what_one_produces(engine_settings, small_model, tmp_path):
    one = engine_settings
    base, _, db = one.redis_url.rpartition("/")
    two = one.with_(topic_prefix=one.topic_prefix + "two.", redis_url=f"{base}/{(int(db) % 15) + 1}")
    redis.Redis.from_url(two.redis_url).flushdb()
    ensure_topics(two, partitions=4)
    records = records_for(small_model, 4000, seed=5, run_id="scale")
    for i, r in enumerate(records):  # same event times in both runs: same windows
        r["event_time"] = 1_700_000_000_000 + i
    send(one, records)
    send(two, records)

    workers = [Worker(one, tmp_path), Worker(two, tmp_path), Worker(two, tmp_path)]
    for w in workers:
        w.wait_ready()
    alone, together = dedup(wait_quiet(one)), dedup(wait_quiet(two))
    shares = [json.loads(w.get("/health")[1]) for w in workers]
    consumed = [float(line.split()[-1]) for w in workers[1:]
                for line in w.get("/metrics")[1].decode().splitlines()
                if line.startswith("whystream_events_consumed_total")]
    for w in workers:
        w.kill(signal.SIGTERM)

    assert all(all(c["ok"] for c in s.values()) for s in shares)
    assert all(c > 0 for c in consumed), "both workers of the group got partitions"
    summary = lambda found: {(i, e["sampling_reason"], round(e["inclusion_weight"], 9)) for i, e in found.items()}
    assert summary(alone) == summary(together)


def test_worker_serves_metrics_health_and_on_demand_explanations(engine_settings, small_model, tmp_path):
    records = records_for(small_model, 500, seed=9, run_id="web")
    send(engine_settings, records)
    worker = Worker(engine_settings, tmp_path)
    worker.wait_ready()
    deadline = time.monotonic() + 120
    while "whystream_events_consumed_total 500.0" not in (text := worker.get("/metrics")[1].decode()):
        assert time.monotonic() < deadline, "the worker did not consume the 500 events"
        time.sleep(0.5)
    published = dedup(wait_quiet(engine_settings, quiet_s=5))
    assert "whystream_explanation_latency_seconds_bucket" in text and "whystream_consumer_lag" in text
    only = worker.get("/metrics?name[]=whystream_events_consumed_total")[1].decode()  # Prometheus's name[] filter
    assert "whystream_events_consumed_total 500.0" in only and "whystream_explanation_latency" not in only
    status, body = worker.get("/health")
    assert status == 200 and set(json.loads(body)) == {"broker", "redis", "registry"}

    quiet = next(r for r in records if r["prediction_id"] not in published)
    status, body = worker.get(f"/explain/{quiet['prediction_id']}")
    explanation = json.loads(body)
    assert status == 200 and explanation["sampling_reason"] == "ON_DEMAND"
    assert explanation["prediction_id"] == quiet["prediction_id"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        worker.get("/explain/no-such-id")
    assert missing.value.code == 404
    worker.kill(signal.SIGTERM)

    assert b"\x1b" not in Path(worker.log.name).read_bytes()  # a log file gets no terminal escape codes

    # `whystream explain` for a person (piped: whole lines, no escape codes); the JSON is tested in test_web_security
    cli = subprocess.run([sys.executable, "-m", "whystream", "explain", quiet["prediction_id"]],
                         env={**os.environ, **engine_settings.as_env(), "COLUMNS": "80"}, capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert f"decision {quiet['prediction_id']}: {quiet['decision']}" in cli.stdout
    assert "= probability 0." in cli.stdout and "ON_DEMAND" in cli.stdout and " UTC" in cli.stdout
    assert "\x1b" not in cli.stdout and "…" not in cli.stdout
    rows = [line.split("│") for line in cli.stdout.splitlines() if line.count("│") == 5]
    shown = [abs(float(r[3])) for r in rows if r[1].strip() in small_model.feature_names]
    assert len(shown) == len(small_model.feature_names) and shown == sorted(shown, reverse=True)


def test_readme_consumer_example_decodes_explanations_with_the_avsc_files_alone(engine_settings, small_model):

    from whystream.streams.assembly import build_engine

    engine = build_engine(engine_settings)
    records = records_for(small_model, 300, seed=4, run_id="readme")
    codec = codec_for("PredictionEvent")
    from whystream.kafka.messages import RawMessage
    engine.process([RawMessage(codec.encode(r), None, "predictions", 0, i) for i, r in enumerate(records)])
    engine.close()
    example = REPO / "examples" / "consume_explanations.py"
    result = subprocess.run([sys.executable, str(example), "--broker", engine_settings.broker,
                             "--topic", engine_settings.topic("explanations"), "--max", "5"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and all(line.startswith("readme-") for line in lines)
