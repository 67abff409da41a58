"""Reading topics to their end (whystream/kafka/reader.py) on the embedded broker, whose high
watermark falls short of the last record batch."""

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from whystream.infra.stack import free_port
from whystream.kafka.messages import RawMessage
from whystream.kafka.reader import (
    ReadTimeout,
    message_count,
    partition_bounds,
    read_all,
    read_to_end,
)
from whystream.streams.assembly import build_engine

pytestmark = pytest.mark.integration


def batches(settings, topic, sizes, partition=0, value=b"x" * 100):
    """Produce batches of these many records (compressed, lingering: one record batch each)."""
    producer = Producer(settings.kafka(**{"linger.ms": 50, "compression.type": "lz4"}))
    for size in sizes:
        for _ in range(size):
            producer.produce(topic, value, partition=partition)
        assert producer.flush(10) == 0


def test_every_record_of_the_last_batch_is_read(fresh_topics):
    topic = fresh_topics.topic("predictions")
    batches(fresh_topics, topic, [10, 10, 10])
    probe = Consumer(fresh_topics.kafka(**{"group.id": "probe"}))
    _, high = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    probe.close()
    bounds = partition_bounds(fresh_topics, topic, [0, 1])
    assert bounds == {0: (0, 30), 1: (0, 0)}, f"the broker's high watermark says {high}"
    assert message_count(fresh_topics, topic) == 30
    offsets = [m.offset() for m in read_to_end(fresh_topics, {(topic, 0): 25, (topic, 1): 0})]
    assert offsets == [25, 26, 27, 28, 29]


def test_a_read_that_cannot_reach_the_end_says_so(fresh_topics):
    gone = fresh_topics.with_(broker=f"127.0.0.1:{free_port()}")
    with pytest.raises(ReadTimeout, match=r"predictions\[0\] not read to the end in 1s"):
        list(read_to_end(gone, {(gone.topic("predictions"), 0): 0}, timeout=1))


def test_a_replay_is_guarded_to_the_end_of_the_last_batch(engine_settings):
    """Events sent together are one record batch, whose end the broker's watermark does not
    tell: the replay guard must stay on until the replay has passed all of it."""
    topic = engine_settings.topic("predictions")
    producer, delivered = Producer(engine_settings.kafka()), []
    for i in range(5):
        producer.produce(topic, b"\x00junk", b"bad", partition=0, on_delivery=lambda err, m: delivered.append(m))
    assert producer.flush(10) == 0
    messages = [RawMessage(m.value(), m.key(), m.topic(), m.partition(), m.offset()) for m in delivered]

    first = build_engine(engine_settings)
    first.process(messages)  # dead-lettered, never committed: then the worker dies
    first.close()
    group = Consumer(engine_settings.kafka(**{"group.id": f"{engine_settings.topic_prefix}whystream-worker"}))
    second = build_engine(engine_settings)
    second.guard(group, [0, 1, 2, 3])
    for m in messages:  # the replay, cut into batches of one
        second.process([m])
    second.close()
    group.close()

    letters = read_all(engine_settings, engine_settings.topic("predictions.dlq"), "DeadLetter")
    assert sorted(d["offset"] for d in letters) == [m.offset for m in messages]
