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

- every data-plane ExplanationEvent is keyed by its prediction_id (answers to
  explain requests, `request_id` set, and a challenger's shadows, role
  CHALLENGER, share the key but are no sample: they are told apart by value and
  never count as one);
- every DeadLetter names the partition and offset of the message it replaces.

So when partitions are assigned, the guard reads, up to their current ends
(where the consumer reports partition EOF, not the high watermark, which falls
short on the embedded broker: whystream/kafka/reader.py):

1. `sampling-checkpoints`, backwards from its end, until it finds per partition
   the latest COMMIT checkpoint at or before the committed offset, of this
   incarnation of `predictions` (its Kafka topic id); that checkpoint says
   where, in each topic partition the workers write, nothing about the replayed
   messages lies before (`since`: positions, never clocks, so a producer's or a
   worker's skewed clock cannot make the read-back start too late);
2. `sampling-checkpoints` from there: per partition the highest `live_from` a
   COMMIT checkpoint at or after the committed offset vouches for (everything
   before it was handled, so the engine only rebuilds its reservoirs from those
   messages), and the RESETs and FORGETs after the committed offset (the
   engine's reservoirs repeat them: streams/sampling/);
3. `explanations` and `predictions.dlq` from there, and remembers the
   prediction_ids explained and the (partition, offset)s dead-lettered. The
   engine skips those while replaying.

Where no such checkpoint exists (nothing committed yet, a new incarnation, a
checkpoint gone with retention) everything is read from the start. A read-back
that cannot finish (the broker slow or gone) is never guessed past: the
partitions are reported back unguarded (`guard` returns them), and the worker
holds them, visibly, until a retry succeeds (streams/ingest.py).

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

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from whystream.config import Settings
from whystream.errors import WhystreamError
from whystream.kafka.reader import partition_bounds, partitions_of, peek_consumer, read_between, read_to_end
from whystream.kafka.topics import topic_id
from whystream.logsafe import printable
from whystream.streams.checkpointing.checkpoints import Positions
from whystream.streams.sampling.reservoirs import Reset
from whystream.wire.codecs import topic_codec

log = logging.getLogger("whystream.replay_guard")

OUTPUTS = ("explanations", "predictions.dlq")
FIRST_CHUNK = 1000  # checkpoints read per step backwards at first (doubling)


class ReplayGuard:
    def __init__(self, settings: Settings, timeout_s: float = 30.0):
        self.settings = settings
        self.timeout_s = timeout_s
        self.explained: set[str] = set()
        self.dead: set[tuple[int, int]] = set()
        self._until: dict[int, int] = {}  # guarded partition -> its end offset at scan time
        self.live_from: dict[int, int] = {}  # guarded partition -> where handling starts again
        self.resets: dict[int, list[Reset]] = {}  # guarded partition -> what its sampling did by wall clock
        # Every partition of the last guard(): (where handling starts, the positions a replay from there
        # reads back from), for the checkpoints the engine writes next (checkpoints.ReadBackStarts).
        self.resumed: dict[int, tuple[int, Positions]] = {}
        self.topic_id: str | None = None  # the incarnation of `predictions` assigned last
        self.floor: Positions = {}  # per topic partition written: at or before its end at the last guard()
        self.explanation_codec = topic_codec(settings, "explanations")
        self.dlq_codec = topic_codec(settings, "predictions.dlq")
        self.checkpoint_codec = topic_codec(settings, "sampling-checkpoints")
        self.checkpoint_topic = settings.topic("sampling-checkpoints")

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

    def guard(self, consumer: Consumer, partitions: list[int]) -> set[int]:
        """Read what was published since the first message `consumer` will replay of `partitions`.
        Returns the partitions it could not read back (the broker slow or gone): not to be
        handled until a later call succeeds for them."""
        if not partitions:
            return set()
        began = time.monotonic()
        try:
            start = self._scan(consumer, partitions)
        except (KafkaException, WhystreamError, TimeoutError) as exc:  # ReadTimeout included
            self.forget(partitions)
            log.warning("replay guard for partitions %s could not read back what was published (%s): they wait "
                        "for a retry", sorted(partitions), printable(exc))
            return set(partitions)
        if start:
            log.info("replay guard for partitions %s: %d explanations and %d dead letters already published, "
                     "handling resumes at %s (%.1f s)", sorted(partitions), len(self.explained), len(self.dead),
                     {p: (start[p], self.live_from[p]) for p in sorted(start)}, time.monotonic() - began)
        return set()

    def _scan(self, consumer: Consumer, partitions: list[int]) -> dict[int, int]:
        source = self.settings.topic("predictions")
        self.topic_id = topic_id(self.settings, source, self.timeout_s)
        self.floor = self._watermarks()
        committed = consumer.committed([TopicPartition(source, p) for p in partitions], timeout=self.timeout_s)
        bounds = partition_bounds(self.settings, source, partitions, self.timeout_s, complete=True)
        start: dict[int, int] = {}
        never: set[int] = set()  # nothing committed: no checkpoint can vouch for anything
        for tp in committed:
            if tp.error is not None:
                raise KafkaException(tp.error)
            low, end = bounds[tp.partition]
            offset = tp.offset if tp.offset >= 0 else low
            self.resumed[tp.partition] = (offset, self.floor)  # nothing to replay: all is to come
            if offset >= end:
                continue
            self._until[tp.partition] = max(end, self._until.get(tp.partition, 0))
            start[tp.partition] = offset
            if tp.offset < 0:
                never.add(tp.partition)
        if not start:
            return start
        since = self._find_since({p: o for p, o in start.items() if p not in never})
        for p in start:
            self.resumed[p] = (start[p], since.get(p, {}))
        self._read_checkpoints(start, since)
        live = [p for p in start if self.live_from[p] < self._until[p]]
        if live:
            self._read_outputs({p: since.get(p, {}) for p in live})
        return start

    def _watermarks(self) -> Positions:
        """Per partition of the topics the worker writes: its high watermark now (at or before its end:
        Tansu's falls short, never long)."""
        consumer = peek_consumer(self.settings)
        try:
            floor = {}
            for name in ("sampling-checkpoints", *OUTPUTS):
                topic = self.settings.topic(name)
                for p in partitions_of(consumer, topic, self.timeout_s, required=False):
                    floor[(topic, p)] = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                                       timeout=self.timeout_s)[1]
            return floor
        finally:
            consumer.close()

    def _checkpoints(self, m) -> dict | None:
        """A checkpoint of this incarnation of `predictions`, else None. One without a topic id
        (written before they were recorded, or where the broker has none) is taken as this one's."""
        try:
            checkpoint = self.checkpoint_codec.decode(m.value())
        except Exception:  # not ours to judge: without it a replay only does more work
            return None
        return checkpoint if (checkpoint.get("topic_id") or self.topic_id) == self.topic_id else None

    def _find_since(self, start: dict[int, int]) -> dict[int, Positions]:
        """Per replayed partition, the `since` of its latest COMMIT at or before its committed offset,
        read backwards from the end of `sampling-checkpoints`; absent where there is none."""
        found: dict[int, Positions] = {}
        if not start:
            return found
        topic = self.checkpoint_topic
        bounds = self._ck_bounds()  # checkpoint partition -> (low, end)
        upto = {cp: end for cp, (_, end) in bounds.items()}  # read already from here on
        chunk = FIRST_CHUNK
        while upto and len(found) < len(start):
            ranges = {(topic, cp): (max(stop - chunk, bounds[cp][0]), stop) for cp, stop in upto.items()}
            latest: dict[int, Positions] = {}  # in this stretch: a later checkpoint replaces an earlier one
            for m in read_between(self.settings, ranges, self.timeout_s):
                checkpoint = self._checkpoints(m)
                if checkpoint is None or checkpoint["kind"] != "COMMIT":
                    continue
                p = checkpoint["partition"]
                if p in start and p not in found and checkpoint["offset"] <= start[p]:
                    latest[p] = {(t["topic"], t["partition"]): t["offset"] for t in checkpoint["since"]}
            found.update(latest)  # stretches further back are older: what was found stays
            upto = {cp: low for (_, cp), (low, _) in ranges.items() if low > bounds[cp][0]}
            chunk *= 2
        return found

    def _ck_bounds(self) -> dict[int, tuple[int, int]]:
        consumer = peek_consumer(self.settings)
        try:
            partitions = partitions_of(consumer, self.checkpoint_topic, self.timeout_s, required=False)
        finally:
            consumer.close()
        bounds = partition_bounds(self.settings, self.checkpoint_topic, partitions, self.timeout_s, complete=True)
        return {cp: (low, end) for cp, (low, end) in bounds.items() if end > low}

    def _starts(self, names, since: dict[int, Positions]) -> dict[tuple[str, int], int]:
        """Where to read each partition of these topics from: the earliest position any replayed
        partition needs (its start where one has none)."""
        consumer = peek_consumer(self.settings)
        try:
            starts = {}
            for name in names:
                topic = self.settings.topic(name)
                for tp in partitions_of(consumer, topic, self.timeout_s, required=False):
                    where = (topic, tp)
                    starts[where] = min((s.get(where, OFFSET_BEGINNING) for s in since.values()),
                                        default=OFFSET_BEGINNING)
            return starts
        finally:
            consumer.close()

    def _read_checkpoints(self, committed: dict[int, int], since: dict[int, Positions]) -> None:
        """live_from and the resets of each replayed partition, from `sampling-checkpoints`."""
        for p, offset in committed.items():
            self.live_from[p] = max(offset, self.live_from.get(p, offset))
            self.resets.setdefault(p, [])
        starts = self._starts(["sampling-checkpoints"], {p: since.get(p, {}) for p in committed})
        for m in read_to_end(self.settings, starts, self.timeout_s):
            checkpoint = self._checkpoints(m)
            if checkpoint is None:
                continue
            p = checkpoint["partition"]
            if p not in committed or checkpoint["offset"] < committed[p]:
                continue
            if checkpoint["kind"] in ("RESET", "FORGET") and checkpoint["offset"] > committed[p]:
                self.resets[p].append(Reset(p, checkpoint["offset"], forget=checkpoint["kind"] == "FORGET"))
            elif checkpoint["kind"] == "COMMIT" and checkpoint["live_from"] is not None:
                self.live_from[p] = max(self.live_from[p], checkpoint["live_from"])

    def _read_outputs(self, since: dict[int, Positions]) -> None:
        """Add the data-plane explanations and the dead letters `explanations` and `predictions.dlq`
        hold from where the replayed partitions need to their ends."""
        dlq = self.settings.topic("predictions.dlq")
        for m in read_to_end(self.settings, self._starts(OUTPUTS, since), self.timeout_s):
            if m.topic() == dlq:
                try:
                    letter = self.dlq_codec.decode(m.value())
                except Exception:  # not ours to judge: a replay publishes it again at worst
                    continue
                if (letter.get("topic_id") or self.topic_id) == self.topic_id:  # of this incarnation
                    self.dead.add((letter["partition"], letter["offset"]))
            elif m.key() is not None and self._data_plane(m.value()):
                self.explained.add(m.key().decode("utf-8", "replace"))

    def _data_plane(self, value: bytes | None) -> bool:
        """A sample or priority explanation of the stream, not an answer to an explain request
        nor a challenger's shadow (those share its key but stand for no sample)."""
        try:
            event = self.explanation_codec.decode(value)
        except Exception:  # not ours: no worker wrote it, so it hides nothing
            return False
        return event.get("request_id") is None and event.get("sampling_reason") != "ON_DEMAND" \
            and event.get("role", "CHAMPION") != "CHALLENGER"
