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
