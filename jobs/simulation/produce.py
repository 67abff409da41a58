"""A realistic producer: card transactions scored by the registered model, sent
as PredictionEvents to `predictions` at a steady rate.

Decisions: `decline` at or above the model's threshold, `review` within the
review band below it, `approve` otherwise. A small, seeded fraction of events
carries the producer's priority flag (a case was opened).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from whystream.config import Settings
from whystream.errors import WhystreamError
from whystream.jobs.simulation.generator import DriftSpec, TransactionGenerator
from whystream.kafka.clients import producer
from whystream.kafka.topics import ensure_topics
from whystream.models.registry import ModelRegistry, RegisteredModel
from whystream.wire.codecs import topic_codec

CHUNK = 500
REVIEW_BAND = 0.8  # scores in [0.8 * threshold, threshold) are sent to review
FLAGGED_FRACTION = 0.002


@dataclass(frozen=True)
class ProduceReport:
    sent: int
    seconds: float
    topic: str
    declined: int
    flagged: int


def decide(scores: np.ndarray, threshold: float) -> np.ndarray:
    decisions = np.full(scores.shape, "approve", dtype=object)
    decisions[scores >= REVIEW_BAND * threshold] = "review"
    decisions[scores >= threshold] = "decline"
    return decisions


def prediction_events(model: RegisteredModel, generator: TransactionGenerator, start: int, count: int,
                      run_id: str, seed: int, replay: tuple[int, float] | None = None) -> Iterator[list[dict]]:
    """Chunks of PredictionEvent records for events start .. start+count-1.

    Event time is the wall clock, or with `replay` = (first_ms, step_ms) the
    i-th event's time is first_ms + i * step_ms (a fast replay of history)."""
    names = model.feature_names
    for offset in range(start, start + count, CHUNK):
        n = min(CHUNK, start + count - offset)
        batch = generator.sample(n, start=offset)
        scores = model.booster.predict(batch.X)
        decisions = decide(scores, model.threshold)
        flagged = np.random.default_rng([seed, offset, 7]).random(n) < FLAGGED_FRACTION
        now = int(time.time() * 1000)
        records = []
        times = ([int(replay[0] + (offset - start + i) * replay[1]) for i in range(n)] if replay else [now] * n)
        for i in range(n):
            row = batch.X[i]
            records.append({
                "prediction_id": f"{run_id}-{batch.index[i]:09d}",
                "model_name": model.name,
                "model_version": model.version,
                "event_time": times[i],
                "features": {name: (None if math.isnan(v) else float(v)) for name, v in zip(names, row.tolist())},
                "score": float(scores[i]),
                "decision": decisions[i],
                "threshold": float(model.threshold),
                "segment": {"country": str(batch.country[i]), "channel": str(batch.channel[i])},
                "priority": bool(flagged[i]),
            })
        yield records


def produce(settings: Settings, count: int, rate: float = 0.0, model_name: str = "fraud",
            model_version: str | None = None, seed: int = 1, start: int = 0,
            drift: Sequence[DriftSpec] = (), run_id: str | None = None, progress=None,
            replay_seconds: float = 0.0) -> ProduceReport:
    """Send `count` prediction events at `rate` events/s (0 = as fast as possible).

    With replay_seconds > 0 the events' times are spread evenly over the
    replay_seconds that end now, as if that stretch of history were replayed."""
    model = ModelRegistry(settings.registry).load(model_name, model_version)
    ensure_topics(settings)  # also fails fast, naming WHYSTREAM_BROKER, when the broker is unreachable
    topic = settings.topic("predictions")
    codec = topic_codec(settings, "predictions")
    sender = producer(settings, "bulk")
    failures: list[str] = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(str(err))

    run_id = run_id or format(int(time.time() * 1000), "x")
    generator = TransactionGenerator(seed, drift)
    replay = None
    if replay_seconds > 0:
        step_ms = replay_seconds * 1000 / count
        replay = (time.time() * 1000 - replay_seconds * 1000, step_ms)
    began = time.monotonic()
    sent = declined = flagged = 0
    for records in prediction_events(model, generator, start, count, run_id, seed, replay):
        for record in records:
            value = codec.encode(record)
            while True:
                try:
                    sender.produce(topic, value=value, key=record["prediction_id"].encode(), on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let librdkafka drain it
                    sender.poll(0.05)
            declined += record["decision"] == "decline"
            flagged += record["priority"]
        sent += len(records)
        sender.poll(0)
        if failures:
            raise WhystreamError(f"WHYSTREAM_BROKER: delivery to {topic} failed: {failures[0]}")
        if progress:
            progress(len(records))
        if rate > 0:  # steady pacing: sleep until this chunk's scheduled time
            ahead = sent / rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
    remaining = sender.flush(30)
    if remaining or failures:
        reason = failures[0] if failures else f"{remaining} messages still queued after 30 s"
        raise WhystreamError(f"WHYSTREAM_BROKER: delivery to {topic} failed: {reason}")
    return ProduceReport(sent, time.monotonic() - began, topic, declined, flagged)
