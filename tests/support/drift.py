"""A drift monitor driven minute by minute over a seeded stream in ClickHouse, and the
alerts it published."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from support.chdb import MINUTE_MS, base_minute, stream, synthetic_model
from whystream.config import Settings
from whystream.jobs.analytics.drift import DriftMonitor
from whystream.jobs.clickhouse import references as model_reference
from whystream.jobs.sink import explanation_rows
from whystream.wire.codecs import codec_for

LOCAL = Settings()  # monitors given a client and publish=False need no broker
DRIFTED = 2  # feature_2's attributions move: x -> x + 2 * scale


def load_stream(client, database, phases: list[tuple[int, bool]], seed: int = 31):
    """Insert consecutive phases of (minutes, drifted?); return (model, first minute)."""
    model = synthetic_model(n_features=6, seed=seed)
    model_reference.register_reference(client, model, database)
    t0 = base_minute(1.5)
    minute = 0
    for i, (minutes, drifted) in enumerate(phases):
        drift = {DRIFTED: (1.0, 2.0 * model.scales[DRIFTED])} if drifted else None
        events, _ = stream(model, t0 + minute * MINUTE_MS, minutes, per_minute=2000, seed=seed * 100 + i,
                           drift=drift, prefix=f"s{i}m")
        explanation_rows.insert_explanations(client, events, database)
        minute += minutes
    return model, t0


def run_ticks(monitor: DriftMonitor, t0: int, minutes: range) -> list[tuple[int, dict]]:
    return [(m, alert) for m in minutes for alert in monitor.tick(t0 + m * MINUTE_MS)]


def consume_alerts(settings, expected: int) -> list[dict]:
    topic = settings.topic("drift-alerts")
    codec = codec_for("DriftAlert", settings.schema_registry_url, topic)
    consumer = Consumer(settings.kafka(**{"group.id": "drift-test", "enable.auto.commit": False}))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        found: list[dict] = []
        for _ in range(20):
            for message in consumer.consume(expected, timeout=0.5):
                if message.error() is None:
                    found.append(codec.decode(message.value()))
            if len(found) >= expected:
                break
        return found
    finally:
        consumer.close()
