"""Prediction events for the engine tests: seeded records of a registered model, as
in-process messages or on the topic."""

from __future__ import annotations

from whystream.jobs.simulation.generator import TransactionGenerator
from whystream.jobs.simulation.produce import prediction_events
from whystream.kafka.messages import RawMessage
from whystream.wire.codecs import codec_for

PARTITIONS = 4  # of the test topics (conftest's fresh_topics)


def make_records(model, count, seed=3, run_id="r", start=0):
    gen = TransactionGenerator(seed)
    return [r for chunk in prediction_events(model, gen, start, count, run_id, seed) for r in chunk]


def as_messages(records, topic="predictions", codec=None, first_offset=0):
    codec = codec or codec_for("PredictionEvent")
    return [RawMessage(codec.encode(r), r["prediction_id"].encode(), topic, i % PARTITIONS,
                       first_offset + i // PARTITIONS) for i, r in enumerate(records)]


def on_the_topic(settings, records, codec=None):
    """Produce the records to `predictions` (partition i % PARTITIONS) and return them as the
    RawMessages a consumer would hand over, with the offsets the broker gave them."""
    from confluent_kafka import Producer

    codec = codec or codec_for("PredictionEvent")
    topic, delivered = settings.topic("predictions"), []
    producer = Producer(settings.kafka())
    for i, r in enumerate(records):
        producer.produce(topic, codec.encode(r), r["prediction_id"].encode(), partition=i % PARTITIONS,
                         on_delivery=lambda err, m: delivered.append(m))
    assert producer.flush(30) == 0 and all(m.error() is None for m in delivered)
    return [RawMessage(m.value(), m.key(), m.topic(), m.partition(), m.offset())
            for m in sorted(delivered, key=lambda m: (m.offset(), m.partition()))]


NOW = 1_800_000_000_000  # the broker timestamp the in-process messages carry


def message(record, partition=0, offset=0, timestamp=NOW, codec=codec_for("PredictionEvent")):
    return RawMessage(codec.encode(record), record["prediction_id"].encode(), "predictions", partition, offset,
                      timestamp)
