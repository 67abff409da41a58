"""Fault injection: a stateful hypothesis machine drives the real engine on the real
embedded stack (broker, Redis, consumer-group commits) through the worker loop's steps
(handle and publish, checkpoint, commit, tick) with random interleavings of valid
events, garbage of every kind, duplicates, batches, idle ticks, and faults between any
two steps: crashes (the engine is dropped after publishing, after checkpointing but
before committing, after a tick, and a new one replays from the committed offsets),
rebalances (a partition revoked and replayed from its commit, also mid-replay), slow
read-backs (the guard cannot finish: the partition waits for a retry), the
`predictions` topic deleted and created again, producers with clocks hours off,
Redis flushes, outages and returns, explain-on-demand answers and a challenger's
shadows on `explanations`. `check` states the invariants (docs/exactly-once.md):
each valid priority decision explained exactly once, each bad message dead-lettered
exactly once, the reservoir weights adding up to the distinct candidates, nothing
escaping the engine."""

from __future__ import annotations

import math
import time
import uuid

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from support.events import make_records
from support.kafka_time import kafka_time_semantics  # noqa: F401 (a fixture)
from whystream.infra.stack import free_port
from whystream.kafka.clients import admin
from whystream.kafka.messages import RawMessage
from whystream.kafka.reader import read_all
from whystream.kafka.topics import ensure_topics, topic_id
from whystream.streams.assembly import build_engine
from whystream.streams.engine import EngineConfig
from whystream.streams.sampling.config import SamplingConfig
from whystream.streams.store import RedisStore
from whystream.wire.codecs import codec_for

PARTITIONS = 2
BAND = 0.02
CODEC = codec_for("PredictionEvent")
EXPLANATIONS = codec_for("ExplanationEvent")
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
        self.producer = self._producer()
        self.group = Consumer(self.settings.kafka(**{"group.id": f"{self.settings.topic_prefix}whystream-worker",
                                                     "enable.auto.commit": False}))
        self.log = {p: [] for p in range(PARTITIONS)}  # what the broker holds: RawMessages per partition
        self.position = {p: 0 for p in range(PARTITIONS)}  # next index of log[p] to hand to the engine
        self.valid, self.bad = {}, set()  # prediction_id -> record; (topic id, partition, offset) of bad messages
        self.raw = {}  # prediction_id -> its message value (for answers and shadows)
        self.stalled = set()  # partitions whose read-back failed: not handled until a retry succeeds
        self.topic_id = topic_id(self.settings, self.settings.topic("predictions"))
        self.next_record, self.now = 0, 1_800_000_000_000
        self.dead_port = free_port()  # nothing listens here: a Redis outage
        self.redis_down = False  # outlives a crash: the next worker meets the same Redis
        self.engine = self._engine()

    def _producer(self):
        return Producer(self.settings.kafka(**{"message.max.bytes": 4 * 1024 * 1024}))

    def _engine(self):
        engine = build_engine(self.settings, EngineConfig(SamplingConfig(new_version_events=0, budget=3, window_ms=2_000,
                                                                   idle_close_ms=3_000, max_open_ms=6_000)))
        if self.redis_down:
            engine.store = engine.location_store = RedisStore(f"redis://127.0.0.1:{self.dead_port}/0",
                                                              socket_timeout_s=0.2)
        assert not engine.guard(self.group, list(range(PARTITIONS)))
        self.stalled.clear()
        return engine

    def _send(self, partition, key, value, skew_ms=0):
        delivered = []
        self.producer.produce(self.settings.topic("predictions"), value, key, partition=partition,
                              timestamp=int(time.time() * 1000) + skew_ms if skew_ms else 0,
                              on_delivery=lambda err, m: delivered.append(m))
        assert self.producer.flush(30) == 0 and delivered[0].error() is None
        m = delivered[0]
        self.log[partition].append(RawMessage(m.value(), m.key(), m.topic(), m.partition(), m.offset()))
        return m.offset()

    @rule(partition=st.integers(0, PARTITIONS - 1), n=st.integers(1, 30), twice=st.booleans(),
          step=st.integers(0, 400), skew_ms=st.sampled_from([0, 0, -3_600_000, 3_600_000]))
    def send_valid(self, partition, n, twice, step, skew_ms=0):
        """Valid decisions; `skew_ms`: the producer's clock is that far off (its CreateTime)."""
        for _ in range(n):
            r = dict(self.pool[self.next_record % len(self.pool)])
            self.next_record += 1
            r["event_time"] = self.now
            self.now += step
            self.valid[r["prediction_id"]] = r
            self.raw[r["prediction_id"]] = CODEC.encode(r)
            for _ in range(2 if twice else 1):  # the same decision sent again right away
                self._send(partition, r["prediction_id"].encode(), self.raw[r["prediction_id"]], skew_ms)

    @rule(partition=st.integers(0, PARTITIONS - 1), kind=st.sampled_from(sorted(GARBAGE)))
    def send_garbage(self, partition, kind):
        r = {**self.pool[0], "prediction_id": f"bad-{uuid.uuid4().hex[:6]}", "event_time": self.now}
        offset = self._send(partition, b"bad", GARBAGE[kind](r))
        self.bad.add((self.topic_id, partition, offset))

    @rule(size=st.integers(1, 40), then=st.sampled_from(["commit", "nothing", "checkpoint"]))
    def handle(self, size, then="nothing"):
        """One batch (explained and published), then the loop's next step: checkpoint and commit,
        nothing, or the checkpoint alone (a crash that follows falls between the two)."""
        batch = []
        for p in range(PARTITIONS):
            if p in self.stalled:
                continue
            take = self.log[p][self.position[p]:self.position[p] + size]
            self.position[p] += len(take)
            batch += take
        if batch:
            self.engine.process(batch, now_ms=self.now)
        if then != "nothing":
            self._commit(then == "commit")

    @rule(ms=st.integers(0, 8_000), commit=st.booleans())
    def tick(self, ms, commit=True):
        """Idle windows close (their resets recorded before their samples go out); then maybe a commit."""
        self.now += ms
        self.engine.tick(now_ms=self.now)
        if commit:
            self._commit()

    def _commit(self, commit=True):
        """What the worker does: record the commit points, then commit them."""
        owned = [p for p in range(PARTITIONS) if p not in self.stalled]
        points = self.engine.commit_points({p: self.log[p][self.position[p] - 1].offset + 1 if self.position[p] else 0
                                            for p in owned})
        self.engine.checkpoint(points)
        if commit and points:
            self.group.commit(offsets=[TopicPartition(self.settings.topic("predictions"), p, offset)
                                       for p, (offset, _) in points.items()], asynchronous=False)

    @rule()
    def crash(self):
        """kill -9: the engine's memory is gone; a new one replays from the committed offsets."""
        self.engine.close()
        committed = self.group.committed([TopicPartition(self.settings.topic("predictions"), p)
                                          for p in range(PARTITIONS)], timeout=10)
        for tp in committed:
            self._rewind(tp.partition, tp.offset)
        self.engine = self._engine()

    def _rewind(self, partition, committed):
        offsets = [m.offset for m in self.log[partition]]
        self.position[partition] = offsets.index(committed) if committed in offsets else \
            (0 if committed < 0 else len(offsets))

    @rule()
    def flush_redis(self):
        redis.Redis.from_url(self.settings.redis_url).flushdb()

    @rule(down=st.booleans())
    def redis_outage(self, down):
        """Redis stops answering (a real client against a port nobody listens on), or comes back."""
        url = f"redis://127.0.0.1:{self.dead_port}/0" if down else self.settings.redis_url
        self.redis_down = down
        self.engine.store = self.engine.location_store = RedisStore(url, socket_timeout_s=0.2)

    @rule(partition=st.integers(0, PARTITIONS - 1))
    def rebalance(self, partition):
        """The partition is revoked (the engine commits what it may and drops its windows) and
        assigned again: it is replayed from the committed offset, as a new owner would."""
        if partition not in self.stalled:
            self._commit()
        self.engine.revoke({partition})
        tp = self.group.committed([TopicPartition(self.settings.topic("predictions"), partition)], timeout=10)[0]
        self._rewind(partition, tp.offset)
        self.stalled.discard(partition)
        assert not self.engine.guard(self.group, [partition])

    @rule(partition=st.integers(0, PARTITIONS - 1))
    def slow_read_back(self, partition):
        """A rebalance whose read-back cannot finish in time (the broker slow): the partition is
        not handled (the worker pauses it) until `retry_read_back` gets through."""
        if partition not in self.stalled:
            self._commit()
        self.engine.revoke({partition})
        tp = self.group.committed([TopicPartition(self.settings.topic("predictions"), partition)], timeout=10)[0]
        self._rewind(partition, tp.offset)
        guard, patience = self.engine.replay_guard, self.engine.replay_guard.timeout_s
        guard.timeout_s = 1e-4
        try:
            self.stalled |= self.engine.guard(self.group, [partition])
        finally:
            guard.timeout_s = patience

    @rule()
    def retry_read_back(self):
        self.stalled = self.engine.guard(self.group, sorted(self.stalled)) if self.stalled else set()
        assert not self.stalled

    @rule(pick=st.integers(0, 10**6), shadow=st.booleans())
    def answer_or_shadow(self, pick, shadow):
        """An explain-on-demand answer for a decision sent (request_id set, ON_DEMAND), or a
        challenger's shadow of it (role CHALLENGER), on `explanations` under its prediction_id:
        neither stands for the decision's own explanation."""
        if not self.raw:
            return
        pid = sorted(self.raw)[pick % len(self.raw)]
        now = {**self.valid[pid], "event_time": int(time.time() * 1000)}  # the answer's own time: not the point
        event = self.engine.on_demand.compute(pid, CODEC.encode(now))
        if shadow:
            event = {**event, "prediction_id": f"{pid}~challenger", "role": "CHALLENGER",
                     "champion_prediction_id": pid, "sampling_reason": "RESERVOIR"}
        else:
            event = {**event, "sampling_reason": "ON_DEMAND", "request_id": f"rq-{uuid.uuid4().hex[:8]}"}
        self.producer.produce(self.settings.topic("explanations"), EXPLANATIONS.encode(event), pid.encode())
        assert self.producer.flush(30) == 0

    @rule()
    def recreate_topic(self):
        """`predictions` deleted and created again (offsets start at 0, the group's commits are gone),
        after everything sent so far was handled and its windows closed; the worker restarts."""
        self.retry_read_back()
        self.drain()
        self.engine.close()
        topic = self.settings.topic("predictions")
        client = admin(self.settings)  # held: a client gone mid-call fails its futures
        for future in client.delete_topics([topic]).values():
            future.result(30)
        deadline = time.monotonic() + 30
        while True:
            try:
                ensure_topics(self.settings, partitions=PARTITIONS)
                fresh = topic_id(self.settings, topic)
                if fresh and fresh != self.topic_id:
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline, "predictions not created again"
            time.sleep(0.2)
        self.topic_id = fresh
        self.producer.flush(10)
        self.producer = self._producer()
        self.log = {p: [] for p in range(PARTITIONS)}
        self.position = {p: 0 for p in range(PARTITIONS)}
        self.engine = self._engine()

    def drain(self):
        """Handle everything sent, and close every window (an idle reset), committing."""
        while any(self.position[p] < len(self.log[p]) for p in range(PARTITIONS)):
            self.handle(500, "commit")
        self.now += 10**6
        self.engine.tick(now_ms=self.now)
        self._commit()

    def teardown(self):
        if not hasattr(self, "engine"):
            return
        self.retry_read_back()
        self.drain()
        self.engine.close()
        self.group.close()
        check(self.settings, self.valid, self.bad)


def check(settings, valid, bad):
    """The invariants: every valid priority decision explained exactly once, none twice; every
    bad message dead-lettered exactly once; the reservoir weights add up to the distinct
    candidates. Answers and shadows are not the stream's explanations."""
    found = read_all(settings, settings.topic("explanations"), "ExplanationEvent")
    published = [e for e in found if e["role"] == "CHAMPION" and e["sampling_reason"] != "ON_DEMAND"]
    letters = read_all(settings, settings.topic("predictions.dlq"), "DeadLetter")
    ids = [e["prediction_id"] for e in published]
    twice = sorted(i for i in set(ids) if ids.count(i) > 1)
    assert not twice, f"explanations published twice: {twice}"
    priority = {i for i, r in valid.items() if is_priority(r)}
    explained = {e["prediction_id"] for e in published if e["sampling_reason"] != "RESERVOIR"}
    assert priority == explained, f"lost: {sorted(priority - explained)}; not due: {sorted(explained - priority)}"
    positions = [(d["topic_id"], d["partition"], d["offset"]) for d in letters]
    assert sorted(positions) == sorted(bad), "a bad message not dead-lettered exactly once"
    weights = sum(e["inclusion_weight"] for e in published if e["sampling_reason"] == "RESERVOIR")
    assert weights == pytest.approx(len(valid) - len(priority)), "reservoir weights against the candidates"


def test_the_engine_under_random_interleavings(world):
    EngineMachine.world = world
    machine = EngineMachine.TestCase
    machine.settings = settings(max_examples=12, stateful_step_count=20, deadline=None,
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
    m.handle(then="commit", size=21)  # the batch ends between the two copies of one decision
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


# Each finding of issue 23 as the sequence that reproduced it (each failed before the fix).

def test_a_recreated_topic_is_not_vouched_for_by_the_old_incarnations_checkpoints(world):
    """Finding 1: the old topic's COMMIT (live_from 16) made the new topic's first 16 messages
    look handled, and their priority decisions were never explained."""
    EngineMachine.world = world
    m = EngineMachine()
    m.start()
    m.send_valid(partition=0, n=24, twice=False, step=100)
    m.send_garbage(partition=0, kind="UNDECODABLE")
    m.recreate_topic()  # handled, windows closed and committed first; then deleted and created
    m.send_valid(partition=0, n=24, twice=False, step=100)
    m.send_garbage(partition=0, kind="UNDECODABLE")  # the same (partition, offset) as the old one
    m.crash()  # a worker takes the new topic over: nothing of it committed, the old checkpoints there
    m.teardown()


def test_answers_and_shadows_do_not_hide_the_decisions_own_explanations(world):
    """Finding 2: an explain-on-demand answer (or a challenger's shadow) under a reservoir
    candidate's prediction_id made the replay skip that candidate's own sample."""
    EngineMachine.world = world
    m = EngineMachine()
    m.start()
    m.send_valid(partition=0, n=12, twice=False, step=50)  # one window, still open
    m.handle(size=40, then="commit")
    for pick in range(12):  # every decision answered on demand or shadowed
        m.answer_or_shadow(pick=pick, shadow=pick % 2 == 1)
    m.send_valid(partition=0, n=1, twice=False, step=0)
    m.now += 2_500
    m.send_valid(partition=0, n=1, twice=False, step=0)  # of the next window: closes the first one
    m.crash()  # the replay rebuilds the open window and closes it while it is guarded
    m.teardown()


def test_producer_clocks_hours_off_do_not_make_a_replay_publish_twice(world, kafka_time_semantics):
    """Finding 3: the read-back began at the replayed message's CreateTime minus 60 s; a producer
    clock an hour ahead put that after the worker's own outputs. With the broker answering
    offsets_for_times as Apache Kafka does (the seam), and Redis down."""
    EngineMachine.world = world
    m = EngineMachine()
    m.start()
    m.redis_outage(down=True)
    m.send_valid(partition=0, n=40, twice=False, step=60, skew_ms=3_600_000)  # two windows: samples out too
    m.send_garbage(partition=0, kind="NON_FINITE_VALUE")
    m.handle(size=40, then="nothing")  # explained and dead-lettered, never committed
    m.crash()
    m.teardown()


def test_an_idle_reset_then_a_crash_before_the_commit_publishes_each_sample_once(world):
    """Finding 4: the tick's reset at the partition's end was recorded and its samples published;
    killed before the next commit, the replay never made that reset (no candidate reaches it)
    and the successor's own idle reset published the samples again."""
    EngineMachine.world = world
    m = EngineMachine()
    m.start()
    m.redis_outage(down=True)
    m.send_valid(partition=0, n=10, twice=False, step=50)
    m.handle(size=40, then="commit")
    m.tick(ms=4_000, commit=False)  # idle: RESET recorded, samples out; then kill -9
    m.crash()
    m.teardown()


def test_a_read_back_that_cannot_finish_holds_the_partition_until_a_retry(world):
    """Finding 5: a read-back cut short (ReadTimeout) was logged and the replay went on, publishing
    again what was out already. Now the partition waits, and is handled once a retry gets through."""
    EngineMachine.world = world
    m = EngineMachine()
    m.start()
    m.redis_outage(down=True)
    m.send_valid(partition=1, n=15, twice=False, step=50)
    m.send_garbage(partition=1, kind="MISSING_ID")
    m.handle(size=40, then="nothing")
    m.slow_read_back(partition=1)
    assert m.stalled == {1}
    waiting = m.position[1]
    m.handle(size=40, then="commit")  # the stalled partition is not handled
    assert m.position[1] == waiting
    m.retry_read_back()
    m.teardown()


def test_offsets_for_times_answers_as_apache_kafka_does_under_the_seam(engine_settings, kafka_time_semantics):
    """The seam itself: the first offset stamped at or after the time, -1 past the last."""
    from whystream.kafka.clients import consumer
    from whystream.kafka.reader import find_by_key

    topic = engine_settings.topic("predictions")
    producer = Producer(engine_settings.kafka())
    for i in range(5):
        producer.produce(topic, b"x", f"k{i}".encode(), partition=0, timestamp=1_000_000 + 1000 * i)
    assert producer.flush(10) == 0
    peek = consumer(engine_settings)
    try:
        found = peek.offsets_for_times([TopicPartition(topic, 0, t) for t in (0, 1_002_500, 1_004_000, 1_009_000)],
                                       timeout=10)
    finally:
        peek.close()
    assert [tp.offset for tp in found] == [0, 3, 4, -1]
    # find_by_key's margin reaches back to k1's time, not to k0's: only k1 and later are found
    assert set(find_by_key(engine_settings, topic, {b"k0": 1_001_000, b"k3": 1_001_000}, margin_ms=0)) == {b"k3"}
