"""Look at a topic without joining a consumer group: count and decode messages,
read one message at a known offset.

Counts come from reading, not from watermark offsets: the embedded Tansu
broker (0.6.0) reports a high watermark that counts uncompressed record
batches rather than records, so `high - low` undercounts there.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Callable

from confluent_kafka import Consumer, Message, TopicPartition

from whystream.config import Settings
from whystream.streams.codec import codec_for


def _scan(settings: Settings, topic: str, on_message: Callable[[Message], None], timeout: float, idle: float) -> None:
    """Feed every message now in `topic` (all partitions, from the start) to on_message,
    until `idle` seconds pass without one, or `timeout`."""
    consumer = Consumer(settings.kafka(**{"group.id": f"whystream-peek-{uuid.uuid4().hex[:8]}",
                                          "enable.auto.commit": False}))
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < idle:
            for message in consumer.consume(1000, timeout=0.1):
                if message.error() is None:
                    last = time.monotonic()
                    on_message(message)
    finally:
        consumer.close()


def message_count(settings: Settings, topic: str, timeout: float = 60.0, idle: float = 1.0) -> int:
    """Messages currently held by `topic`, summed over its partitions."""
    seen = [0]
    _scan(settings, topic, lambda _: seen.__setitem__(0, seen[0] + 1), timeout, idle)
    return seen[0]


def read_all(settings: Settings, topic: str, schema: str, timeout: float = 60.0, idle: float = 1.0) -> list[dict]:
    """Decode every message now in `topic` with schema `schema`."""
    codec = codec_for(schema, settings.schema_registry_url, topic)
    records: list[dict] = []
    _scan(settings, topic, lambda m: records.append(codec.decode(m.value())), timeout, idle)
    return records


class OffsetReader:
    """Reads single messages of one topic at known offsets through one
    long-lived consumer (no group), one read at a time: explain-on-demand
    must not open a broker connection per request."""

    def __init__(self, settings: Settings, topic: str):
        self.settings = settings
        self.topic = topic
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()

    def read(self, partition: int, offset: int, timeout: float = 5.0) -> bytes | None:
        """The value at (partition, offset), or None if the topic no longer has it."""
        with self._lock:
            if self._consumer is None:
                self._consumer = Consumer(self.settings.kafka(**{
                    "group.id": f"whystream-peek-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False, "auto.offset.reset": "error"}))
            consumer = self._consumer
            consumer.assign([TopicPartition(self.topic, partition, offset)])
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                message = consumer.poll(0.1)
                if message is None:
                    continue
                if message.error() is not None:  # offset out of range: gone with retention
                    return None
                if message.partition() == partition and message.offset() == offset:
                    return message.value()
            return None

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


def find_by_key(settings: Settings, topic: str, wanted: dict[bytes, int], timeout: float = 30.0, idle: float = 2.0,
                margin_ms: int = 300_000) -> dict[bytes, bytes]:
    """The value of the first message with each key in `wanted` (key -> its event time, ms):
    every partition is read from `margin_ms` before the earliest event time (offsets_for_times)
    until all are found, `idle` seconds pass without a message, or `timeout`. Raises
    KafkaException when the broker or topic cannot be reached."""
    from confluent_kafka import KafkaException

    consumer = Consumer(settings.kafka(**{"group.id": f"whystream-peek-{uuid.uuid4().hex[:8]}",
                                          "enable.auto.commit": False, "auto.offset.reset": "earliest"}))
    found: dict[bytes, bytes] = {}
    try:
        meta = consumer.list_topics(topic, timeout=min(timeout, 10.0)).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise KafkaException(f"topic {topic} is not on the broker" + (f" ({meta.error})" if meta and meta.error
                                                                            else ""))
        since = max(min(wanted.values()) - margin_ms, 0)
        starts = consumer.offsets_for_times([TopicPartition(topic, p, since) for p in meta.partitions],
                                            timeout=min(timeout, 10.0))
        consumer.assign([TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else 0) for tp in starts
                         if tp.offset != -1])
        deadline, last = time.monotonic() + timeout, time.monotonic()
        while len(found) < len(wanted) and time.monotonic() < deadline and time.monotonic() - last < idle:
            for message in consumer.consume(1000, timeout=0.1):
                if message.error() is None:
                    last = time.monotonic()
                    if message.key() in wanted and message.key() not in found:
                        found[message.key()] = message.value()
    finally:
        consumer.close()
    return found
