"""Exactly once without Redis: what a replay must not publish again, read back
from the output topics themselves.

A worker commits a partition's offset only up to the first candidate of its
oldest open reservoir window, and at most once a second, so after kill -9 (or
a rebalance) the new owner replays events whose explanation or dead letter is
already on the broker. Redis dedup catches most of them, but Redis may be
down, slow or flushed. Measured on the embedded broker (Tansu 0.6.0, see
README "Exactly once"): it keeps no offset-commit metadata (a committed
"handled position" comes back as None), and its transactions commit and fence
but do not hide aborted records from read_committed consumers (the output of a
killed worker's open transaction would stay visible), so neither carries the
guarantee. What the broker does keep is the outputs:

- every ExplanationEvent is keyed by its prediction_id;
- every DeadLetter names the partition and offset of the message it replaces.

So when partitions are assigned, the guard reads `explanations` and
`predictions.dlq` from shortly before the first replayed message was written
(its broker timestamp minus `slack_s`, located with offsets_for_times) up to
their current ends, and remembers the prediction_ids explained and the
(partition, offset)s dead-lettered since. The engine skips those while
replaying. The guard forgets everything once each guarded partition has been
handled past the end it had at scan time: from there on nothing can have been
published before. A replayed reservoir window is rebuilt from the same events
and selects the same prediction_ids, so its samples are skipped alike.

Not covered: a worker evicted from the group that keeps publishing after the
new owner's scan (a zombie; Kafka's fencing needs the transactions this broker
lacks), and a producer that re-sends a decision under a new offset long after
(Redis dedup, within its TTL, is the only guard there).
"""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from whystream.config import Settings
from whystream.streams.codec import codec_for

log = logging.getLogger("whystream.replay_guard")


class ReplayGuard:
    def __init__(self, settings: Settings, slack_s: float = 60.0, timeout_s: float = 30.0):
        self.settings = settings
        self.slack_ms = int(slack_s * 1000)
        self.timeout_s = timeout_s
        self.explained: set[str] = set()
        self.dead: set[tuple[int, int]] = set()
        self._until: dict[int, int] = {}  # guarded partition -> its end offset at scan time
        self.dlq_codec = codec_for("DeadLetter", settings.schema_registry_url, settings.topic("predictions.dlq"))

    # -- what the engine asks ---------------------------------------------------

    def active(self) -> bool:
        return bool(self._until)

    def handled(self, partition: int, next_offset: int) -> None:
        """The engine handled `partition` up to `next_offset`; forget the guard once nothing is left to replay."""
        until = self._until.get(partition)
        if until is not None and next_offset >= until:
            del self._until[partition]
            if not self._until:
                self.explained.clear()
                self.dead.clear()

    def forget(self, partitions) -> None:
        for p in partitions:
            self._until.pop(p, None)
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
        start_ms = None
        for tp in committed:
            low, high = consumer.get_watermark_offsets(TopicPartition(source, tp.partition), timeout=self.timeout_s)
            offset = tp.offset if tp.offset >= 0 else low
            if offset >= high:
                continue  # nothing to replay
            self._until[tp.partition] = max(high, self._until.get(tp.partition, 0))
            written = self._timestamp(source, tp.partition, offset)
            start_ms = written if start_ms is None or written is None else min(start_ms, written)
            if written is None:
                start_ms = 0
                break
        if not self._until:
            return
        found = self._read_outputs(max((start_ms or 0) - self.slack_ms, 0))
        log.info("replay guard for partitions %s: %d explanations and %d dead letters already published (%.1f s)",
                 sorted(partitions), len(self.explained), len(self.dead), time.monotonic() - began)
        return found

    def _consumer(self) -> Consumer:
        return Consumer(self.settings.kafka(**{"group.id": f"whystream-guard-{uuid.uuid4().hex[:8]}",
                                               "enable.auto.commit": False, "enable.partition.eof": True}))

    def _timestamp(self, topic: str, partition: int, offset: int) -> int | None:
        """Broker timestamp (ms) of one message, or None if it cannot be read."""
        consumer = self._consumer()
        try:
            consumer.assign([TopicPartition(topic, partition, offset)])
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                m = consumer.poll(0.2)
                if m is not None and m.error() is None:
                    kind, ms = m.timestamp()
                    return ms if ms > 0 else None
            return None
        finally:
            consumer.close()

    def _read_outputs(self, since_ms: int) -> int:
        """Add what `explanations` and `predictions.dlq` hold from since_ms to their ends; returns the count."""
        consumer = self._consumer()
        count = 0
        try:
            wanted = []
            for name in ("explanations", "predictions.dlq"):
                topic = self.settings.topic(name)
                meta = consumer.list_topics(topic, timeout=self.timeout_s).topics[topic]
                for p in meta.partitions:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout_s)
                    if high > low:
                        wanted.append((topic, p, low, high))
            if not wanted:
                return 0
            starts = consumer.offsets_for_times([TopicPartition(t, p, since_ms) for t, p, _, _ in wanted],
                                                timeout=self.timeout_s)
            ends = {}
            assignment = []
            for (topic, p, low, high), tp in zip(wanted, starts):
                start = tp.offset if tp.offset >= 0 else high  # -1: nothing written since
                start = min(max(start, low), high)
                if start < high:
                    ends[(topic, p)] = high
                    assignment.append(TopicPartition(topic, p, start))
            if not assignment:
                return 0
            consumer.assign(assignment)
            dlq = self.settings.topic("predictions.dlq")
            deadline = time.monotonic() + self.timeout_s
            while ends and time.monotonic() < deadline:
                for m in consumer.consume(1000, timeout=0.2):
                    if m.error() is not None:
                        continue
                    where = (m.topic(), m.partition())
                    if m.topic() == dlq:
                        try:
                            letter = self.dlq_codec.decode(m.value())
                            self.dead.add((letter["partition"], letter["offset"]))
                        except Exception:  # not ours to judge: a replay publishes it again at worst
                            pass
                    elif m.key() is not None:
                        self.explained.add(m.key().decode("utf-8", "replace"))
                    count += 1
                    if where in ends and m.offset() + 1 >= ends[where]:
                        del ends[where]
            if ends:
                log.warning("replay guard: outputs not read to their end in %gs; a replay may publish twice",
                            self.timeout_s)
            return count
        finally:
            consumer.close()
