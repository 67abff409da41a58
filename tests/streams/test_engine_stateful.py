"""A stateful hypothesis machine drives the real engine on the real embedded
stack (broker, Redis, consumer-group commits) with random interleavings of
valid events, garbage of every kind, duplicates, batches, idle ticks, crashes
(the engine is dropped, with or without committing its last batch, and a new
one replays from the committed offsets), rebalances (a partition revoked and
replayed from its commit), Redis flushes and Redis outages, then checks: each
valid priority decision explained exactly once, each bad message
dead-lettered exactly once, the reservoir weights adding up to the distinct
candidates, and nothing escaping the engine."""

from __future__ import annotations

import math
import uuid

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from support.events import make_records
from whystream.infra.stack import free_port
from whystream.kafka.messages import RawMessage
from whystream.kafka.reader import read_all
from whystream.kafka.topics import ensure_topics
from whystream.streams.assembly import build_engine
from whystream.streams.engine import EngineConfig
from whystream.streams.sampling.config import SamplingConfig
from whystream.streams.store import RedisStore
from whystream.wire.codecs import codec_for

PARTITIONS = 2
BAND = 0.02
CODEC = codec_for("PredictionEvent")
GARBAGE = {
    "UNDECODABLE": lambda r: b"\x00junk",
    "UNKNOWN_MODEL": lambda r: CODEC.encode({**r, "model_name": "nope"}),
    "MISSING_ID": lambda r: CODEC.encode({**r, "prediction_id": ""}),
    "NON_FINITE_VALUE": lambda r: CODEC.encode({**r, "score": math.nan}),
    "EVENT_TIME": lambda r: CODEC.encode({**r, "event_time": r["event_time"] * 1000}),
    "OVERSIZE": lambda r: b"\x00" + b"y" * (1100 * 1024),
}


def is_priority(r):
    return r["decision"] != "approve" or r["priority"] or abs(r["score"] - r["threshold"]) <= BAND


@pytest.fixture(scope="module")
def world(stack, small_model):
    return stack, small_model, make_records(small_model, 3000, run_id="sm")


class EngineMachine(RuleBasedStateMachine):
    world = None

    @initialize()
    def start(self):
        stack, self.model, self.pool = self.world
        self.settings = stack.with_(topic_prefix=f"sm{uuid.uuid4().hex[:8]}.", registry=self.model.path.parent.parent)
        ensure_topics(self.settings, partitions=PARTITIONS)
        base, _, _ = self.settings.redis_url.rpartition("/")
        self.settings = self.settings.with_(redis_url=f"{base}/15")
        redis.Redis.from_url(self.settings.redis_url).flushdb()
        self.producer = Producer(self.settings.kafka(**{"message.max.bytes": 4 * 1024 * 1024}))
        self.group = Consumer(self.settings.kafka(**{"group.id": f"{self.settings.topic_prefix}whystream-worker",
                                                     "enable.auto.commit": False}))
        self.log = {p: [] for p in range(PARTITIONS)}  # what the broker holds: RawMessages per partition
        self.position = {p: 0 for p in range(PARTITIONS)}  # next index of log[p] to hand to the engine
        self.valid, self.bad = {}, set()  # prediction_id -> record; (partition, offset) of bad messages
        self.next_record, self.now = 0, 1_800_000_000_000
        self.dead_port = free_port()  # nothing listens here: a Redis outage
        self.engine = self._engine()

    def _engine(self):
        engine = build_engine(self.settings, EngineConfig(SamplingConfig(new_version_events=0, budget=3, window_ms=2_000,
                                                                   idle_close_ms=3_000, max_open_ms=6_000)))
        engine.guard(self.group, list(range(PARTITIONS)))
        return engine

    def _send(self, partition, key, value):
        delivered = []
        self.producer.produce(self.settings.topic("predictions"), value, key, partition=partition,
                              on_delivery=lambda err, m: delivered.append(m))
        assert self.producer.flush(30) == 0 and delivered[0].error() is None
        m = delivered[0]
        self.log[partition].append(RawMessage(m.value(), m.key(), m.topic(), m.partition(), m.offset()))
        return m.offset()

    @rule(partition=st.integers(0, PARTITIONS - 1), n=st.integers(1, 30), twice=st.booleans(),
          step=st.integers(0, 400))
    def send_valid(self, partition, n, twice, step):
        for _ in range(n):
            r = dict(self.pool[self.next_record % len(self.pool)])
            self.next_record += 1
            r["event_time"] = self.now
            self.now += step
            self.valid[r["prediction_id"]] = r
            for _ in range(2 if twice else 1):  # the same decision sent again right away
                self._send(partition, r["prediction_id"].encode(), CODEC.encode(r))

    @rule(partition=st.integers(0, PARTITIONS - 1), kind=st.sampled_from(sorted(GARBAGE)))
    def send_garbage(self, partition, kind):
        r = {**self.pool[0], "prediction_id": f"bad-{uuid.uuid4().hex[:6]}", "event_time": self.now}
        offset = self._send(partition, b"bad", GARBAGE[kind](r))
        self.bad.add((partition, offset))

    @rule(size=st.integers(1, 40), commit=st.booleans())
    def handle(self, size, commit):
        batch = []
        for p in range(PARTITIONS):
            take = self.log[p][self.position[p]:self.position[p] + size]
            self.position[p] += len(take)
            batch += take
        if batch:
            self.engine.process(batch, now_ms=self.now)
        if commit:
            self._commit()

    @rule(ms=st.integers(0, 8_000))
    def tick(self, ms):
        self.now += ms
        self.engine.tick(now_ms=self.now)
        self._commit()

    def _commit(self):
        """What the worker does: record the commit points, then commit them."""
        points = self.engine.commit_points({p: self.log[p][self.position[p] - 1].offset + 1 if self.position[p] else 0
                                            for p in range(PARTITIONS)})
        self.engine.checkpoint(points)
        self.group.commit(offsets=[TopicPartition(self.settings.topic("predictions"), p, offset)
                                   for p, (offset, _) in points.items()], asynchronous=False)

    @rule()
    def crash(self):
        """kill -9: the engine's memory is gone; a new one replays from the committed offsets."""
        self.engine.close()
        committed = self.group.committed([TopicPartition(self.settings.topic("predictions"), p)
                                          for p in range(PARTITIONS)], timeout=10)
        for tp in committed:
            offsets = [m.offset for m in self.log[tp.partition]]
            self.position[tp.partition] = offsets.index(tp.offset) if tp.offset in offsets else \
                (0 if tp.offset < 0 else len(offsets))
        self.engine = self._engine()

    @rule()
    def flush_redis(self):
        redis.Redis.from_url(self.settings.redis_url).flushdb()

    @rule(down=st.booleans())
    def redis_outage(self, down):
        """Redis stops answering (a real client against a port nobody listens on), or comes back."""
        url = f"redis://127.0.0.1:{self.dead_port}/0" if down else self.settings.redis_url
        self.engine.store = self.engine.location_store = RedisStore(url, socket_timeout_s=0.2)

    @rule(partition=st.integers(0, PARTITIONS - 1))
    def rebalance(self, partition):
        """The partition is revoked (the engine commits what it may and drops its windows) and
        assigned again: it is replayed from the committed offset, as a new owner would."""
        self._commit()
        self.engine.revoke({partition})
        tp = self.group.committed([TopicPartition(self.settings.topic("predictions"), partition)], timeout=10)[0]
        offsets = [m.offset for m in self.log[partition]]
        self.position[partition] = offsets.index(tp.offset) if tp.offset in offsets else \
            (0 if tp.offset < 0 else len(offsets))
        self.engine.guard(self.group, [partition])

    def teardown(self):
        if not hasattr(self, "engine"):
            return
        while any(self.position[p] < len(self.log[p]) for p in range(PARTITIONS)):
            self.handle(500, True)
        self.now += 10**6
        self.engine.tick(now_ms=self.now)
        self.engine.close()
        self.group.close()
        published = read_all(self.settings, self.settings.topic("explanations"), "ExplanationEvent")
        letters = read_all(self.settings, self.settings.topic("predictions.dlq"), "DeadLetter")
        ids = [e["prediction_id"] for e in published]
        assert len(ids) == len(set(ids)), "an explanation published twice"
        priority = {i for i, r in self.valid.items() if is_priority(r)}
        assert priority == {e["prediction_id"] for e in published if e["sampling_reason"] != "RESERVOIR"}
        positions = [(d["partition"], d["offset"]) for d in letters]
        assert sorted(positions) == sorted(self.bad), "a bad message not dead-lettered exactly once"
        weights = sum(e["inclusion_weight"] for e in published if e["sampling_reason"] == "RESERVOIR")
        assert weights == pytest.approx(len(self.valid) - len(priority))


def test_the_engine_under_random_interleavings(world):
    EngineMachine.world = world
    machine = EngineMachine.TestCase
    machine.settings = settings(max_examples=15, stateful_step_count=20, deadline=None,
                                suppress_health_check=list(HealthCheck))
    machine("runTest").runTest()


def test_a_copy_sent_after_a_reset_is_counted_once_across_a_crash(world):
    """A sequence the machine once shrank to (weights 66 for 65 candidates): a decision's copy
    arrives after an idle reset closed its original's window, the commit passed the reset, and a
    crash lost the worker's memory of that window."""
    EngineMachine.world = world
    m = EngineMachine()
    m.start()
    m.crash()
    m.send_valid(n=27, partition=0, step=357, twice=True)
    for _ in range(5):
        m.crash()
    m.handle(commit=True, size=21)  # the batch ends between the two copies of one decision
    m.send_garbage(partition=0, kind="NON_FINITE_VALUE")
    m.send_garbage(partition=0, kind="UNDECODABLE")
    m.send_valid(n=13, partition=0, step=350, twice=False)
    m.tick(ms=3558)  # idle: the first copy's window closes by wall clock, and the commit moves on
    m.send_valid(n=13, partition=1, step=166, twice=False)
    m.redis_outage(down=False)
    m.send_valid(n=14, partition=0, step=170, twice=False)
    m.send_garbage(partition=1, kind="MISSING_ID")
    m.send_garbage(partition=1, kind="NON_FINITE_VALUE")
    m.tick(ms=490)
    m.crash()
    m.teardown()
