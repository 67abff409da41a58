"""Look at a topic without joining a consumer group: message counts and a peek."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, TopicPartition

from whystream.config import Settings
from whystream.streams.codec import codec_for


def _consumer(settings: Settings) -> Consumer:
    # A throwaway group id; we only assign partitions, never subscribe or commit.
    return Consumer(settings.kafka(**{"group.id": f"whystream-peek-{uuid.uuid4().hex[:8]}",
                                      "enable.auto.commit": False}))


def message_count(settings: Settings, topic: str, timeout: float = 10.0) -> int:
    """Messages currently held by `topic`, summed over its partitions."""
    consumer = _consumer(settings)
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        total = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            total += high - low
        return total
    finally:
        consumer.close()


def peek(settings: Settings, topic: str, schema: str, n: int = 3, timeout: float = 10.0) -> list[dict]:
    """Decode the first `n` messages of partition 0.. of `topic` with schema `schema`."""
    consumer = _consumer(settings)
    codec = codec_for(schema, settings.schema_registry_url, topic)
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[dict] = []
        for message in consumer.consume(n, timeout=timeout):
            if message.error() is None:
                records.append(codec.decode(message.value()))
        return records[:n]
    finally:
        consumer.close()


def read_all(settings: Settings, topic: str, schema: str, timeout: float = 10.0, idle: float = 1.0) -> list[dict]:
    """Decode every message now in `topic` (all partitions, from the start).

    Stops when the end of every partition is reached, or after `idle` seconds
    without a message, or at `timeout`."""
    import time

    consumer = _consumer(settings)
    codec = codec_for(schema, settings.schema_registry_url, topic)
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[dict] = []
        seen = {p: 0 for p in partitions}
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while any(seen[p] < ends[p] for p in partitions) and time.monotonic() < deadline:
            batch = consumer.consume(1000, timeout=0.2)
            if not batch and time.monotonic() - last > idle:
                break
            for message in batch:
                if message.error() is None:
                    last = time.monotonic()
                    seen[message.partition()] = message.offset() + 1
                    records.append(codec.decode(message.value()))
        return records
    finally:
        consumer.close()
