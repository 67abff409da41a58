"""Exactly once without Redis: what a replay must not publish again, read back
from the output topics themselves.

A worker commits a partition's offset only up to the start of its reservoirs'
dedup horizon (streams/sampling/), and at most once a second, so after kill -9 (or
a rebalance) the new owner replays events whose explanation or dead letter is
already on the broker. Redis dedup catches most of them, but Redis may be
down, slow or flushed. Measured on the embedded broker (Tansu 0.6.0, see
docs/exactly-once.md): it keeps no offset-commit metadata (a committed
"handled position" comes back as None), and its transactions commit and fence
but do not hide aborted records from read_committed consumers (the output of a
killed worker's open transaction would stay visible), so neither carries the
guarantee. What the broker does keep is the outputs:

- every ExplanationEvent is keyed by its prediction_id;
- every DeadLetter names the partition and offset of the message it replaces.

So when partitions are assigned, the guard reads, up to their current ends
(where the consumer reports partition EOF, not the high watermark, which falls
short on the embedded broker: whystream/kafka/reader.py):

1. `sampling-checkpoints` from shortly before the first replayed message was
   written (its broker timestamp minus `slack_s`, located with
   offsets_for_times): per partition the highest `live_from` a COMMIT
   checkpoint at or after the committed offset vouches for (everything before
   it was handled, so the engine only rebuilds its reservoirs from those
   messages), and the RESETs and FORGETs after the committed offset (the
   engine's reservoirs repeat them: streams/sampling/);
2. `explanations` and `predictions.dlq` from shortly before the first message
   after `live_from` was written, and remembers the prediction_ids explained
   and the (partition, offset)s dead-lettered since. The engine skips those
   while replaying.

The guard forgets a partition once it has been handled past the end it had at
scan time: from there on nothing can have been published before. A replayed
reservoir window is rebuilt from the same events and selects the same
prediction_ids, so its samples are skipped alike.

Not covered: a worker evicted from the group that keeps publishing after the
new owner's scan (a zombie; Kafka's fencing needs the transactions this broker
lacks), and a producer that re-sends a decision under a new offset long after
(Redis dedup, within its TTL, is the only guard there).
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, TopicPartition

from whystream.config import Settings
from whystream.kafka.reader import (
    ReadTimeout,
    partition_bounds,
    partitions_of,
    peek_consumer,
    read_to_end,
)
from whystream.streams.sampling.reservoirs import Reset
from whystream.wire.codecs import topic_codec

log = logging.getLogger("whystream.replay_guard")


class ReplayGuard:
    def __init__(self, settings: Settings, slack_s: float = 60.0, timeout_s: float = 30.0):
        self.settings = settings
        self.slack_ms = int(slack_s * 1000)
        self.timeout_s = timeout_s
        self.explained: set[str] = set()
        self.dead: set[tuple[int, int]] = set()
        self._until: dict[int, int] = {}  # guarded partition -> its end offset at scan time
        self.live_from: dict[int, int] = {}  # guarded partition -> where handling starts again
        self.resets: dict[int, list[Reset]] = {}  # guarded partition -> what its sampling did by wall clock
        self.dlq_codec = topic_codec(settings, "predictions.dlq")
        self.checkpoint_codec = topic_codec(settings, "sampling-checkpoints")

    # -- what the engine asks ---------------------------------------------------

    def active(self) -> bool:
        return bool(self._until)

    def guarding(self, partition: int) -> bool:
        return partition in self._until

    def handled(self, partition: int, next_offset: int) -> bool:
        """The engine handled `partition` up to `next_offset`; True when that ended its replay."""
        until = self._until.get(partition)
        if until is None or next_offset < until:
            return False
        self.forget([partition])
        return True

    def forget(self, partitions) -> None:
        for p in partitions:
            for table in (self._until, self.live_from, self.resets):
                table.pop(p, None)
        if not self._until:
            self.explained.clear()
            self.dead.clear()

    # -- the scan ---------------------------------------------------------------

    def guard(self, consumer: Consumer, partitions: list[int]) -> None:
        """Read what was published since the first message `consumer` will replay of `partitions`."""
        if not partitions:
            return
        began = time.monotonic()
        source = self.settings.topic("predictions")
        committed = consumer.committed([TopicPartition(source, p) for p in partitions], timeout=self.timeout_s)
        bounds = partition_bounds(self.settings, source, partitions, self.timeout_s)
        start: dict[int, int] = {}
        for tp in committed:
            low, end = bounds[tp.partition]
            offset = tp.offset if tp.offset >= 0 else low
            if offset >= end:
                continue  # nothing to replay
            self._until[tp.partition] = max(end, self._until.get(tp.partition, 0))
            start[tp.partition] = offset
        if not start:
            return
        self._read_checkpoints(self._since(source, start), start)
        live = {p: self.live_from[p] for p in start if self.live_from[p] < self._until[p]}
        found = self._read_outputs(self._since(source, live)) if live else 0
        log.info("replay guard for partitions %s: %d explanations and %d dead letters already published, "
                 "handling resumes at %s (%.1f s)", sorted(partitions), len(self.explained), len(self.dead),
                 {p: (start[p], self.live_from[p]) for p in sorted(start)}, time.monotonic() - began)
        return found

    def _since(self, source: str, offsets: dict[int, int]) -> int:
        """A broker time (ms) shortly before the first of these messages of `source` was written."""
        times = [self._timestamp(source, p, offset) for p, offset in offsets.items()]
        return 0 if not times or None in times else max(min(times) - self.slack_ms, 0)

    def _read_checkpoints(self, since_ms: int, committed: dict[int, int]) -> None:
        """live_from and the resets of each replayed partition, from `sampling-checkpoints`."""
        for p, offset in committed.items():
            self.live_from[p] = max(offset, self.live_from.get(p, offset))
            self.resets.setdefault(p, [])

        def note(m) -> None:
            try:
                checkpoint = self.checkpoint_codec.decode(m.value())
            except Exception:  # not ours to judge: without it a replay only does more work
                return
            p = checkpoint["partition"]
            if p not in committed or checkpoint["offset"] < committed[p]:
                return
            if checkpoint["kind"] in ("RESET", "FORGET") and checkpoint["offset"] > committed[p]:
                self.resets[p].append(Reset(p, checkpoint["offset"], forget=checkpoint["kind"] == "FORGET"))
            elif checkpoint["kind"] == "COMMIT" and checkpoint["live_from"] is not None:
                self.live_from[p] = max(self.live_from[p], checkpoint["live_from"])

        self._read(["sampling-checkpoints"], since_ms, note)

    def _timestamp(self, topic: str, partition: int, offset: int) -> int | None:
        """Broker timestamp (ms) of one message, or None if it cannot be read."""
        try:
            for m in read_to_end(self.settings, {(topic, partition): offset}, self.timeout_s):
                kind, ms = m.timestamp()
                return ms if ms > 0 else None
        except ReadTimeout:
            pass
        return None  # not there (any more), or not readable now

    def _read_outputs(self, since_ms: int) -> int:
        """Add what `explanations` and `predictions.dlq` hold from since_ms to their ends; returns the count."""
        dlq = self.settings.topic("predictions.dlq")

        def note(m) -> None:
            if m.topic() == dlq:
                try:
                    letter = self.dlq_codec.decode(m.value())
                    self.dead.add((letter["partition"], letter["offset"]))
                except Exception:  # not ours to judge: a replay publishes it again at worst
                    pass
            elif m.key() is not None:
                self.explained.add(m.key().decode("utf-8", "replace"))

        return self._read(["explanations", "predictions.dlq"], since_ms, note)

    def _read(self, names: list[str], since_ms: int, note) -> int:
        """Hand every message the topics hold from since_ms to their current ends to `note`; the count."""
        consumer = peek_consumer(self.settings)
        count = 0
        try:
            starts = {}
            for name in names:
                topic = self.settings.topic(name)
                partitions = partitions_of(consumer, topic, self.timeout_s, required=False)
                found = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in partitions],
                                                   timeout=self.timeout_s)
                starts.update({(topic, tp.partition): tp.offset for tp in found if tp.offset >= 0})  # -1: none since
            for m in read_to_end(self.settings, starts, self.timeout_s, consumer):
                note(m)
                count += 1
        except ReadTimeout as exc:
            log.warning("replay guard: %s; a replay may publish twice", exc)
        finally:
            consumer.close()
        return count
