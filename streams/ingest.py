"""The worker's data plane loop, on a thread of its own: `predictions` read with a
confluent-kafka (librdkafka) consumer in the consumer group `<prefix>whystream-worker`:

1. take what the client has fetched, up to `batch_size` messages, waiting only
   while nothing is there (a lone event is handled at once);
2. hand the batch to the Engine as columns (values, partitions, offsets);
3. commit, per partition, exactly what the engine allows (once a second, on
   revocation and on shutdown): the start of the reservoirs' dedup horizon
   (streams/sampling/), or else the next offset to read, each commit recorded
   on `sampling-checkpoints` first (streams/checkpointing/). A crash (even
   kill -9) replays from there: what the crashed worker had handled only
   rebuilds the reservoirs, nothing that was due is lost, and replayed events
   are recognised by prediction_id and not published twice;
4. once a second, close the windows of idle partitions and update the lag.

When partitions are revoked (another worker joins), the loop commits what is
allowed and drops their reservoirs: the new owner rebuilds them by replaying
from that offset. A newly assigned partition is first read back
(streams/checkpointing/replay_guard.py); one whose read-back cannot finish is
paused, not guessed past: logged, counted in `whystream_replay_stalled_partitions`,
and tried again every `guard_retry_s` until it succeeds. The engine is used by one thread at a time (`Ingest.lock`,
shared with the web handlers and the control plane).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from operator import itemgetter

import numpy as np
from confluent_kafka import KafkaException, Message, TopicPartition

from whystream.kafka.clients import consumer
from whystream.kafka.messages import Inbound, RawMessage
from whystream.streams.engine import Engine

log = logging.getLogger("whystream.worker")


# How the worker fetches `predictions` (the latency benchmark's broker-only consumer fetches alike).
FETCH_SETTINGS = {
    "fetch.wait.max.ms": 10,  # a quiet partition's next event is fetched within this (latency)
    # Prefetched and not yet taken: bounded under any backlog. A full queue pauses fetching for
    # fetch.queue.backoff.ms (default 1 s, which would starve the loop): resume soon after it drains.
    "queued.max.messages.kbytes": 16384,
    "fetch.queue.backoff.ms": 10,
}


_second = itemgetter(1)  # of a message's (timestamp type, timestamp)

# A partition's commit point is recorded on `sampling-checkpoints` when it moves, and at least this
# often: a successor reads that topic backwards to the latest one (streams/checkpointing/replay_guard.py).
CHECKPOINT_REFRESH_S = 60.0
GC_YOUNG_THRESHOLD = 50_000  # > the container objects a batch of batch_size keeps alive at once


def _settle_garbage_collector() -> None:
    """Once the models are loaded. A batch keeps a few thousand container objects alive while it
    is handled (the consumer's messages, the records) and frees them at its end; with Python's
    default gen-0 threshold (700) the collector ran ~3 times per batch to find no garbage (0.38 µs
    per event, measured in the ingest benchmark's worker). A threshold above a batch's worth
    lets them die by reference counting first. And what exists now (numba's, LightGBM's and
    Faust's objects, the modules: ~290,000) lives as long as the worker: frozen, so that a full
    collection (~0.1 s each while starting) no longer walks it."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


class Ingest:
    """The consume -> engine -> commit loop, on a thread of its own. `tune_gc`: the process is
    a worker's (`whystream worker`), so the loop may settle its garbage collector."""

    def __init__(self, engine: Engine, batch_size: int = 5000, session_timeout_s: float = 6.0,
                 commit_interval_s: float = 1.0, tick_interval_s: float = 1.0, poll_timeout_s: float = 0.1,
                 guard_retry_s: float = 5.0, tune_gc: bool = False):
        self.engine = engine
        self.lock = threading.Lock()  # one engine call at a time: this loop or a web handler
        self.topic = engine.settings.topic("predictions")
        self.batch_size = batch_size
        self.tune_gc = tune_gc
        self.commit_interval_s, self.tick_interval_s, self.poll_timeout_s = (commit_interval_s, tick_interval_s,
                                                                              poll_timeout_s)
        self.consumer = consumer(engine.settings, "worker", **{
            "client.id": engine.worker,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(session_timeout_s * 1000),
            "heartbeat.interval.ms": int(min(3.0, session_timeout_s / 3) * 1000),
            **FETCH_SETTINGS,
            "on_commit": self._on_commit,
        })
        self.assigned: set[int] = set()  # partitions this worker owns now (rebalance callbacks keep it)
        self._to_guard: set[int] = set()  # newly assigned: read what was published before replaying them
        # Assigned, but their read-back failed: paused until a retry succeeds; the first offset held back.
        self.stalled: dict[int, int | None] = {}
        self.guard_retry_s, self._retry_at = guard_retry_s, 0.0
        self._refresh_at = time.monotonic() + CHECKPOINT_REFRESH_S
        self.positions: dict[int, int] = {}  # partition -> next offset to read (after what the engine handled)
        self.committed: dict[int, int] = {}
        self.checkpointed: dict[int, tuple[int, int]] = {}  # the last commit point recorded, per partition
        self.dropped_revoked = 0  # messages fetched for a partition revoked before they were handled
        self._revoked_now: set[int] = set()  # partitions revoked (or lost) during the current _take
        self.stopping = threading.Event()
        self.crashed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="whystream-ingest", daemon=True)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self.stopping.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        try:
            with self.lock:
                loaded = self.engine.preload_latest()
                self.engine.connect_publisher()
            log.info("models ready: %s", ", ".join(loaded) or "none registered yet")
            if self.tune_gc:
                _settle_garbage_collector()
            self.subscribe()  # only now: a partition assigned to us is read at once, not after the kernels load
            next_commit = next_tick = time.monotonic()
            while not self.stopping.is_set():
                messages = self._take()
                if messages:
                    self._handle(messages)
                now = time.monotonic()
                if self.stalled and now >= self._retry_at:
                    self._guard(set(self.stalled))  # nothing of theirs is fetched: retried here
                if now >= next_tick:
                    next_tick = now + self.tick_interval_s
                    with self.lock:
                        self.engine.tick()
                    self._update_lag()
                if now >= next_commit:
                    next_commit = now + self.commit_interval_s
                    self._commit(self.positions, asynchronous=True)
        except BaseException as exc:  # publishing failed, the broker went away for good, a bug: stop the worker
            self.crashed = exc
            log.exception("ingest loop stopped")
        finally:
            try:
                if self.crashed is None:
                    self._commit(self.positions, asynchronous=False)
                self.consumer.close()  # leaves the group: the others take over now, not after a session timeout
            finally:
                self.engine.close()

    def subscribe(self) -> None:
        """Join the consumer group, with the rebalance callbacks below."""
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    # -- one batch ------------------------------------------------------------

    def _take(self) -> list:
        """Up to batch_size messages: wait for the first, then whatever else is already fetched."""
        first = self.consumer.poll(self.poll_timeout_s)
        if first is None:
            return []
        messages = [first]
        self._revoked_now.clear()
        if self.batch_size > 1:
            messages += self.consumer.consume(self.batch_size - 1, timeout=0)
        # A rebalance served inside consume() makes `first` stale if it revoked first's partition, even
        # when that partition came straight back: fetching starts again at the committed offset, so
        # `first` comes again (handling it now too would publish its outputs twice). librdkafka drops
        # what consume() itself had fetched before the rebalance; `first` it returned already.
        if first.error() is None and first.partition() in self._revoked_now:
            messages = messages[1:]
            self.dropped_revoked += 1
        # A partition revoked and not assigned back is another worker's now: what was fetched of it
        # is not ours to handle or commit.
        assigned = self.assigned
        errors = list(map(Message.error, messages))  # per message only C-level calls on the common path
        if errors.count(None) == len(messages) and assigned.issuperset(map(Message.partition, messages)):
            return messages
        good = [m for m, error in zip(messages, errors) if error is None and m.partition() in assigned]
        if len(good) != len(messages):
            for m in messages:
                if m.error() is not None:
                    log.warning("consumer: %s", m.error())
            self.dropped_revoked += sum(1 for m in messages if m.error() is None and m.partition() not in assigned)
        return good

    def _guard(self, partitions: set[int], messages: list = ()) -> list:
        """Read back what was published of these newly assigned partitions before replaying them;
        those whose read-back fails are paused and retried. Returns the messages left to handle."""
        partitions &= self.assigned
        with self.lock:
            stalled = self.engine.guard(self.consumer, sorted(partitions)) if partitions else set()
        for p in sorted((partitions - stalled) & set(self.stalled)):
            first = self.stalled[p]
            try:
                if first is not None:  # what was held back is fetched again
                    self.consumer.seek(TopicPartition(self.topic, p, first))
                self.consumer.resume([TopicPartition(self.topic, p)])
            except KafkaException as exc:  # stays paused; the next retry guards it again
                log.warning("partition %d not resumed yet: %s", p, exc)
                stalled.add(p)
                continue
            del self.stalled[p]
        if stalled:
            self.consumer.pause([TopicPartition(self.topic, p) for p in sorted(stalled)])
            for p in stalled:
                self.stalled.setdefault(p, None)
            self._retry_at = time.monotonic() + self.guard_retry_s
            log.warning("partitions %s wait for their read-back (retried in %g s)", sorted(self.stalled),
                        self.guard_retry_s)
        self.engine.metrics.replay_stalled.set(len(self.stalled))
        return self._hold_back(messages)

    def _hold_back(self, messages) -> list:
        """The messages of partitions not stalled; where the others start is kept for later."""
        if not self.stalled:
            return list(messages)
        kept = []
        for m in messages:
            p = m.partition()
            if p in self.stalled:
                first = self.stalled[p]
                self.stalled[p] = m.offset() if first is None else min(first, m.offset())
            else:
                kept.append(m)
        return kept

    def _handle(self, messages: list) -> None:
        if self._to_guard:
            guarded, self._to_guard = set(self._to_guard), set()
            messages = self._guard(guarded, messages)
        else:
            messages = self._hold_back(messages)
        if not messages:
            return
        n = len(messages)
        values = list(map(Message.value, messages))
        if None in values:  # a tombstone (no value) is undecodable input
            values = [value or b"" for value in values]
        partitions = np.fromiter(map(Message.partition, messages), dtype=np.int64, count=n)
        offsets = np.fromiter(map(Message.offset, messages), dtype=np.int64, count=n)
        timestamps = np.fromiter(map(_second, map(Message.timestamp, messages)), dtype=np.int64, count=n)

        def message(i: int) -> RawMessage:
            m = messages[i]
            return RawMessage(values[i], m.key(), m.topic(), m.partition(), m.offset(), int(timestamps[i]))

        inbound = Inbound(values, partitions, offsets, message, timestamps)
        with self.lock:
            self.engine.process_inbound(inbound)
        self.positions.update(inbound.read_to)

    # -- offsets --------------------------------------------------------------

    def _commit(self, partitions, asynchronous: bool) -> None:
        """Commit, for each of these partitions, as far as the engine allows, once the engine has
        recorded what a replay from there needs (also when only where handling resumes moved on)."""
        with self.lock:
            points = self.engine.commit_points({p: self.positions[p] for p in partitions if p in self.positions})
            # Unchanged points are recorded again now and then: a successor finds the latest nearby.
            refresh = time.monotonic() >= self._refresh_at
            moved = {p: point for p, point in points.items() if refresh or self.checkpointed.get(p) != point}
            if refresh:
                self._refresh_at = time.monotonic() + CHECKPOINT_REFRESH_S
            self.engine.checkpoint(moved)
        self.checkpointed.update(moved)
        offsets = [TopicPartition(self.topic, p, offset) for p, (offset, _) in points.items()
                   if self.committed.get(p) != offset]
        if offsets:
            self.committed.update({tp.partition: tp.offset for tp in offsets})
            try:
                self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
            except Exception as exc:  # the next commit tries again; a replay only redoes work
                for tp in offsets:
                    self.committed.pop(tp.partition, None)
                log.warning("commit failed: %s", exc)

    def _on_commit(self, error, partitions) -> None:
        """An asynchronous commit that failed is sent again by the next _commit."""
        for tp in partitions:
            if error is not None or tp.error is not None:
                self.committed.pop(tp.partition, None)

    def _update_lag(self) -> None:
        for p, position in list(self.positions.items()):
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            except Exception:
                continue
            if high is not None and high >= 0:
                self.engine.metrics.lag.labels(str(p)).set(max(high - position, 0))

    # -- rebalancing (called by the consumer, on this loop's thread) ----------

    def _on_assign(self, consumer, partitions) -> None:
        new = {tp.partition for tp in partitions if tp.topic == self.topic}
        self.assigned = self.assigned | new
        self._to_guard |= new  # before their first batch (outside this callback)
        log.info("assigned %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        """Commit what is allowed; the open windows are the new owner's to rebuild.
        After a failed batch nothing is committed: the engine's state is not to be trusted."""
        revoked = {tp.partition for tp in partitions if tp.topic == self.topic}
        self.assigned = self.assigned - revoked
        self._revoked_now |= revoked
        for p in revoked:
            self.stalled.pop(p, None)
        if self.crashed is None:
            self._commit(revoked, asynchronous=False)
        self._forget(revoked)

    def _on_lost(self, consumer, partitions) -> None:
        lost = {tp.partition for tp in partitions if tp.topic == self.topic}
        self.assigned = self.assigned - lost
        self._revoked_now |= lost
        for p in lost:
            self.stalled.pop(p, None)
        self._forget(lost)

    def _forget(self, partitions: set[int]) -> None:
        with self.lock:
            self.engine.revoke(partitions)
        for p in partitions:
            self.positions.pop(p, None)
            self.committed.pop(p, None)
            self.checkpointed.pop(p, None)
            try:
                self.engine.metrics.lag.remove(str(p))
            except KeyError:
                pass
