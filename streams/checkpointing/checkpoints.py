"""What a replay of a partition needs, recorded on `sampling-checkpoints` before it matters.

A worker commits a partition of `predictions` only as far as its reservoirs allow
(`Engine.commit_points`: the start of the dedup horizon, streams/sampling/), and a
successor that replays from there must sample the partition exactly as the worker
did. Three kinds of record (schemas/SamplingCheckpoint.avsc), each confirmed by the
broker before what depends on it happens:

- COMMIT (offset, live_from, since): before `offset` is committed; everything
  before `live_from` had been handled and its windows handed over; `since`: where
  in `sampling-checkpoints`, `explanations` and `predictions.dlq` a replay from
  `offset` starts reading back (`ReadBackStarts`, below);
- RESET (offset): a wall-clock reset of the partition's windows, before the
  samples of those windows are published;
- FORGET (offset): the partition forgot its dedup horizon after a long quiet.

Each names the incarnation of `predictions` it is about (`topic_id`, Kafka's topic
id): a deleted and recreated topic's offsets start again at 0, and a checkpoint of
the old one must not vouch for them. The replay guard (`replay_guard`) reads them
back when a partition is assigned.
"""

from __future__ import annotations

import time

from whystream.kafka.publisher import Publisher

KINDS = ("COMMIT", "RESET", "FORGET")
Positions = dict[tuple[str, int], int]  # (topic, partition) -> offset


class Checkpoints:
    """Writes SamplingCheckpoint records to `topic` through a confirming publisher."""

    def __init__(self, publisher: Publisher, codec, topic: str, worker: str):
        self.publisher, self.codec, self.topic, self.worker = publisher, codec, topic, worker

    def record(self, records: list[tuple[int, str, int, int | None, Positions]], topic_id: str | None) -> None:
        """(partition, kind, offset, live_from, since) each, about the incarnation `topic_id` of
        `predictions`; returns once the broker has them all."""
        if not records:
            return
        now = int(time.time() * 1000)
        for partition, kind, offset, live_from, since in records:
            value = self.codec.encode({
                "partition": partition, "kind": kind, "offset": offset, "live_from": live_from, "written_at": now,
                "worker": self.worker, "topic_id": topic_id or None,
                "since": [{"topic": t, "partition": p, "offset": o} for (t, p), o in sorted(since.items())]})
            self.publisher.produce(self.topic, value, str(partition).encode())
        self.publisher.flush()


class ReadBackStarts:
    """Per partition of `predictions`: from which positions of the topics the worker writes a
    replay must read back, by where the replay starts. Kept as (first offset, positions) pairs:
    nothing about the partition's messages from `first offset` on lies before `positions`.

    A pair is taken when the worker has handled everything before `first offset` and none
    after (`mark`), from positions that lie at or before the ends of those topics then (its
    own confirmed deliveries, the broker's watermarks): no clock is involved. While a replay
    is under way the pair the worker resumed from stands, since the messages being replayed
    were handled by the worker before it."""

    def __init__(self):
        self._pairs: dict[int, list[tuple[int, Positions]]] = {}

    def resume(self, partition: int, first: int, positions: Positions) -> None:
        self._pairs[partition] = [(first, dict(positions))]

    def mark(self, partition: int, first: int, floor: Positions, delivered: Positions) -> None:
        """Nothing before `first` is left to handle and nothing from it on has been: the positions
        are the broker's watermarks at the last assignment (`floor`), or after the worker's last
        confirmed message in that topic partition (`delivered`) where that is further."""
        pairs = self._pairs.setdefault(partition, [])
        if pairs and first <= pairs[-1][0]:
            return
        positions = dict(floor)
        for where, end in delivered.items():
            if end > positions.get(where, 0):
                positions[where] = end
        pairs.append((first, positions))

    def since(self, partition: int, offset: int) -> Positions:
        """Positions for a replay from `offset` (the latest pair at or before it; older ones are
        dropped: a commit never goes back). Empty (read everything) if there is none."""
        pairs = self._pairs.get(partition, [])
        usable = [i for i, (first, _) in enumerate(pairs) if first <= offset]
        if not usable:
            return {}
        del pairs[:usable[-1]]
        return pairs[0][1]

    def drop(self, partition: int) -> None:
        self._pairs.pop(partition, None)
