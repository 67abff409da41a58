"""A test seam: consumers that answer `offsets_for_times` as Apache Kafka does.

The embedded broker (Tansu 0.6.0) answers ListOffsets for a timestamp with the
partition's start, whatever the time (measured: five messages stamped 1000 s,
1001 s, ... and a query for 1002.5 s gives offset 0), so code that locates a stretch
of a topic by time reads the whole topic there and never meets what Apache Kafka
answers: the first offset whose timestamp is at or after the time, or -1 (the end)
where there is none. `kafka_time_semantics` makes every consumer whystream creates
(whystream/kafka/clients.py) answer that way, from the real timestamps on the
broker, so the time-based paths are exercised in `make test`.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition


class KafkaTimeConsumer(Consumer):
    """A real consumer whose offsets_for_times follows Apache Kafka (see the module docstring)."""

    def __init__(self, config: dict):
        super().__init__(config)
        self._config = {k: v for k, v in config.items() if k not in ("on_commit", "error_cb", "stats_cb")}

    def offsets_for_times(self, partitions, timeout=None):
        return [TopicPartition(tp.topic, tp.partition, self._first_at_or_after(tp, timeout or 10.0))
                for tp in partitions]

    def _first_at_or_after(self, tp: TopicPartition, timeout: float) -> int:
        reader = Consumer({**self._config, "group.id": "kafka-time-seam", "enable.partition.eof": True,
                           "enable.auto.commit": False})
        try:
            reader.assign([TopicPartition(tp.topic, tp.partition, -2)])  # from the beginning
            while True:
                m = reader.poll(timeout)
                if m is None:
                    raise TimeoutError(f"{tp.topic}[{tp.partition}] not read in {timeout}s")
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        return -1
                    continue
                if m.timestamp()[1] >= tp.offset:
                    return m.offset()
        finally:
            reader.close()


@pytest.fixture
def kafka_time_semantics(monkeypatch):
    """Every consumer made by whystream answers offsets_for_times as Apache Kafka does."""
    import whystream.kafka.clients as clients

    monkeypatch.setattr(clients, "Consumer", KafkaTimeConsumer)
    return KafkaTimeConsumer
