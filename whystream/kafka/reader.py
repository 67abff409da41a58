"""The one way whystream reads a topic without joining a consumer group: partitions
read to their end, messages counted and decoded, one message read at a known
offset, messages found by key.

The end of a partition is where the consumer reports partition EOF, never the
high watermark: the embedded Tansu broker (0.6.0) answers ListOffsets(latest)
with the first offset of the partition's last record batch plus one (measured:
three batches of ten records, high watermark 21 for 30 records; fetching
reports EOF at 30), so reading up to the watermark misses the rest of that
batch, and `high - low` undercounts. Nor is a pause without messages an end:
a consumer's first fetch alone can take longer than any pause worth waiting
(0.6 s measured on an idle machine).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Iterable, Iterator

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from whystream.config import Settings
from whystream.errors import WhystreamError
from whystream.kafka.clients import check_broker
from whystream.kafka.clients import consumer as kafka_consumer
from whystream.wire.codecs import codec_for

log = logging.getLogger("whystream.topic_stats")


class ReadTimeout(WhystreamError):
    """Some partitions were not read to their end in time (the broker is slow or gone)."""

    def __init__(self, left: Iterable[tuple[str, int]], timeout: float):
        self.left = sorted(left)
        super().__init__(f"{', '.join(f'{t}[{p}]' for t, p in self.left)} not read to the end in {timeout:g}s")


# How long a reader waits for the broker before it says, in one line, that there is none.
BROKER_CHECK_S = 5.0


def peek_consumer(settings: Settings) -> Consumer:
    """A consumer outside any group (a throwaway group id, nothing committed) that reports
    partition EOF and starts a partition whose offset is gone at its earliest."""
    return kafka_consumer(settings, **{"enable.partition.eof": True, "auto.offset.reset": "earliest"})


def partitions_of(consumer: Consumer, topic: str, timeout: float, required: bool = True) -> list[int]:
    """The topic's partitions. Raises KafkaException when the broker cannot be reached, or
    the topic is not there and `required` (else there are none)."""
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        if not required:
            return []
        raise KafkaException(f"topic {topic} is not on the broker" + (f" ({meta.error})" if meta and meta.error
                                                                        else ""))
    return sorted(meta.partitions)


def read_to_end(settings: Settings, starts: dict[tuple[str, int], int], timeout: float = 60.0,
                consumer: Consumer | None = None) -> Iterator[Message]:
    """Every message from each (topic, partition)'s start offset up to the partition's end
    now (its EOF), in offset order per partition. Raises ReadTimeout once the rest is read
    if some partition did not reach its end within `timeout`."""
    own = consumer is None
    consumer = consumer or peek_consumer(settings)
    left = set(starts)
    try:
        if not left:
            return
        consumer.assign([TopicPartition(topic, p, offset) for (topic, p), offset in starts.items()])
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=0.2):
                error = m.error()
                if error is None:
                    yield m
                elif error.code() == KafkaError._PARTITION_EOF:
                    left.discard((m.topic(), m.partition()))
        if left:
            raise ReadTimeout(left, timeout)
    finally:
        if own:
            consumer.close()


def read_between(settings: Settings, ranges: dict[tuple[str, int], tuple[int, int]], timeout: float = 60.0,
                 consumer: Consumer | None = None) -> Iterator[Message]:
    """Every message of each (topic, partition) from `start` up to (not including) `stop`, in
    offset order per partition. Raises ReadTimeout if some partition did not get there (nor to its
    end) within `timeout`."""
    own = consumer is None
    consumer = consumer or peek_consumer(settings)
    left = {tp for tp, (start, stop) in ranges.items() if start < stop}
    try:
        if not left:
            return
        consumer.assign([TopicPartition(topic, p, ranges[(topic, p)][0]) for topic, p in left])
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=0.2):
                where, error = (m.topic(), m.partition()), m.error()
                if where not in left:
                    continue
                if error is None:
                    stop = ranges[where][1]
                    if m.offset() < stop:
                        yield m
                    if m.offset() >= stop - 1:
                        left.discard(where)
                elif error.code() == KafkaError._PARTITION_EOF:
                    left.discard(where)
        if left:
            raise ReadTimeout(left, timeout)
    finally:
        if own:
            consumer.close()


def partition_bounds(settings: Settings, topic: str, partitions: Iterable[int] | None,
                     timeout: float = 60.0, complete: bool = False) -> dict[int, tuple[int, int]]:
    """Per partition (None: every partition of the topic), (its low watermark, the offset
    after its last message now: what a high watermark should say), the end read from the
    watermark's last batch to EOF, since Tansu's watermark falls short. A partition not read
    to its end within `timeout` keeps what was read (at least its watermark), with a warning;
    with `complete`, ReadTimeout is raised instead (a caller that must not act on a short end)."""
    consumer = peek_consumer(settings)
    try:
        bounds, starts = {}, {}
        if partitions is None:
            partitions = partitions_of(consumer, topic, timeout)
        for p in partitions:
            bounds[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            low, high = bounds[p]
            if high > low:
                starts[(topic, p)] = high - 1
        try:
            for m in read_to_end(settings, starts, timeout, consumer):
                low, end = bounds[m.partition()]
                bounds[m.partition()] = (low, max(end, m.offset() + 1))
        except ReadTimeout as exc:
            if complete:
                raise
            log.warning("the ends of %s may be short: %s", topic, exc)
        return bounds
    finally:
        consumer.close()


def _broker_is_there(settings: Settings) -> None:
    """For the readers a command calls (`dlq`, `dlq replay`, `verify --from-topic`, the demo):
    an unreachable broker is a ConfigError naming it and WHYSTREAM_BROKER within
    BROKER_CHECK_S, not a minute of retries (a worker's own readers wait it out instead)."""
    check_broker(settings.kafka_config, settings.require("broker"), timeout=BROKER_CHECK_S)


def scan(settings: Settings, topic: str, timeout: float = 60.0) -> Iterator[Message]:
    """Every message now in `topic`, all partitions from their start (none if there is no such topic)."""
    _broker_is_there(settings)
    consumer = peek_consumer(settings)
    try:
        starts = {(topic, p): 0 for p in partitions_of(consumer, topic, timeout, required=False)}
        yield from read_to_end(settings, starts, timeout, consumer)
    finally:
        consumer.close()


def message_count(settings: Settings, topic: str, timeout: float = 60.0) -> int:
    """Messages currently held by `topic`, summed over its partitions."""
    return sum(1 for _ in scan(settings, topic, timeout))


def read_all(settings: Settings, topic: str, schema: str, timeout: float = 60.0) -> list[dict]:
    """Decode every message now in `topic` with schema `schema`."""
    codec = codec_for(schema, settings.schema_registry_url, topic, settings.schema_registry_properties)
    return [codec.decode(m.value()) for m in scan(settings, topic, timeout)]


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
                self._consumer = kafka_consumer(self.settings, **{"auto.offset.reset": "error"})
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


def find_by_key(settings: Settings, topic: str, wanted: dict[bytes, int], timeout: float = 30.0,
                margin_ms: int = 300_000) -> dict[bytes, bytes]:
    """The value of the first message with each key in `wanted` (key -> its event time, ms):
    every partition is read from `margin_ms` before the earliest event time (offsets_for_times)
    until all are found or every partition is read to its end. Raises KafkaException when the
    broker or topic cannot be reached, ReadTimeout when reading takes longer than `timeout`."""
    _broker_is_there(settings)
    consumer = peek_consumer(settings)
    found: dict[bytes, bytes] = {}
    try:
        partitions = partitions_of(consumer, topic, min(timeout, 10.0))
        since = max(min(wanted.values()) - margin_ms, 0)
        starts = consumer.offsets_for_times([TopicPartition(topic, p, since) for p in partitions],
                                            timeout=min(timeout, 10.0))
        for m in read_to_end(settings, {(topic, tp.partition): tp.offset for tp in starts if tp.offset >= 0},
                             timeout, consumer):
            if m.key() in wanted and m.key() not in found:
                found[m.key()] = m.value()
                if len(found) == len(wanted):
                    break
    finally:
        consumer.close()
    return found
