"""The worker's consume loop (streams/worker.py `Ingest`), step by step in this process, on the
embedded broker: what it takes across rebalances."""

import threading
import time

import pytest
from confluent_kafka import Consumer, Producer

from whystream.streams.assembly import build_engine
from whystream.streams.ingest import Ingest

pytestmark = pytest.mark.integration
PARTITIONS = set(range(4))  # conftest's fresh_topics


def wait_until(condition, step, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        step()


class AnotherMember:
    """A second consumer in the worker's group, polled on a thread of its own until it leaves."""

    def __init__(self, settings, group: str, topic: str):
        self.consumer = Consumer(settings.kafka(**{"group.id": group, "enable.auto.commit": False,
                                                   "session.timeout.ms": 6000}))
        self.assigned: set[int] = set()
        self.leaving = threading.Event()
        self.consumer.subscribe([topic], on_assign=lambda c, tps: self.assigned.update(tp.partition for tp in tps),
                                on_revoke=lambda c, tps: self.assigned.clear())
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        while not self.leaving.is_set():
            self.consumer.poll(0.1)
        self.consumer.close()  # leaves the group: one more rebalance

    def leave(self):
        self.leaving.set()
        self.thread.join(30)


class MemberComesAndGoesDuringConsume:
    """The worker's consumer, but during its next consume() another member joins the group and
    leaves it again: both rebalances are served inside that one call, as when a worker comes and
    goes between the loop's poll() and consume(). What the real calls in between return is dropped,
    as librdkafka drops what one call fetched before a rebalance it serves."""

    def __init__(self, ingest: Ingest, settings):
        self.ingest, self.settings, self.consumer = ingest, settings, ingest.consumer
        self.armed = True

    def __getattr__(self, name):
        return getattr(self.consumer, name)

    def consume(self, num_messages, timeout):
        if not self.armed:
            return self.consumer.consume(num_messages, timeout=timeout)
        self.armed = False
        ingest, last = self.ingest, []

        def step():  # keeps what the call that served the last assignment returned: fetched after it
            last[:] = self.consumer.consume(num_messages, timeout=0.2)

        other = AnotherMember(self.settings, self.settings.topic_prefix + "whystream-worker", ingest.topic)
        wait_until(lambda: other.assigned and ingest.assigned and not ingest.assigned & other.assigned,
                   step, what="the partitions to be shared")
        other.leave()
        wait_until(lambda: ingest.assigned == PARTITIONS, step, what="the partitions to come back")
        return last


def test_a_message_taken_before_a_rebalance_inside_consume_is_not_taken_twice(engine_settings):
    engine = build_engine(engine_settings)
    ingest = Ingest(engine)
    try:
        ingest.subscribe()
        wait_until(lambda: ingest.assigned == PARTITIONS, lambda: ingest.consumer.poll(0.2), what="the assignment")
        producer = Producer(engine_settings.kafka())
        sent = 400
        for i in range(sent):
            producer.produce(ingest.topic, f"message {i}".encode(), partition=i % 4)
        assert producer.flush(30) == 0

        ingest.consumer = MemberComesAndGoesDuringConsume(ingest, engine_settings)
        taken = []
        deadline = time.monotonic() + 60
        while len(taken) < sent and time.monotonic() < deadline:
            taken += [(m.partition(), m.offset()) for m in ingest._take()]
        assert not ingest.consumer.armed  # the rebalances did happen inside the first take
        # Nothing was handled, so every partition is fetched again from its start: each message once.
        twice = len(taken) - len(set(taken))
        assert twice == 0, f"{twice} messages taken twice"
        assert len(taken) == sent
        assert ingest.dropped_revoked == 1  # poll()'s message, from before the rebalances
    finally:
        ingest.consumer.close()
        engine.close()


def test_a_read_back_that_fails_pauses_the_partitions_until_a_retry_then_handles_each_message_once(engine_settings):
    """Finding 5 of issue 23, at the loop: the guard cannot finish (a broker too slow for its
    timeout): the assigned partitions are paused, what was fetched of them is dropped and fetched
    again after the retry succeeds; every message is handled once (here: dead-lettered once)."""
    from whystream.kafka.reader import read_all

    engine = build_engine(engine_settings)
    ingest = Ingest(engine, guard_retry_s=0.2)
    try:
        ingest.subscribe()
        wait_until(lambda: ingest.assigned == PARTITIONS, lambda: ingest.consumer.poll(0.2), what="the assignment")
        producer = Producer(engine_settings.kafka())
        sent = 40
        for i in range(sent):
            producer.produce(ingest.topic, b"\x00junk", f"k{i}".encode(), partition=i % 4)
        assert producer.flush(30) == 0
        patience, engine.replay_guard.timeout_s = engine.replay_guard.timeout_s, 1e-4
        wait_until(lambda: ingest.stalled, lambda: ingest._handle(ingest._take()),
                   what="a batch to meet the failing read-back")
        assert set(ingest.stalled) == PARTITIONS and not ingest.positions  # nothing of them handled
        assert engine.metrics.replay_stalled._value.get() == 4
        for _ in range(5):  # paused: nothing of theirs comes
            assert ingest._take() == []
        engine.replay_guard.timeout_s = patience
        ingest._guard(set(ingest.stalled))  # the loop's retry
        assert not ingest.stalled and engine.metrics.replay_stalled._value.get() == 0

        def handled():
            return sum(ingest.positions.values()) >= sent

        wait_until(handled, lambda: ingest._handle(ingest._take()), what="every message handled")
        offsets = sorted((d["partition"], d["offset"]) for d in
                         read_all(engine_settings, engine_settings.topic("predictions.dlq"), "DeadLetter"))
        assert offsets == sorted((p, o) for p in range(4) for o in range(sent // 4))
    finally:
        ingest.consumer.close()
        engine.close()
