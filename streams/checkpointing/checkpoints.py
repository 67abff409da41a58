"""What a replay of a partition needs, recorded on `sampling-checkpoints` before it matters.

A worker commits a partition of `predictions` only as far as its reservoirs allow
(`Engine.commit_points`: the start of the dedup horizon, streams/sampling/), and a
successor that replays from there must sample the partition exactly as the worker
did. Three kinds of record (schemas/SamplingCheckpoint.avsc), each confirmed by the
broker before what depends on it happens:

- COMMIT (offset, live_from): before `offset` is committed; everything before
  `live_from` had been handled and its windows handed over;
- RESET (offset): a wall-clock reset of the partition's windows, before the
  samples of those windows are published;
- FORGET (offset): the partition forgot its dedup horizon after a long quiet.

The replay guard (`replay_guard`) reads them back when a partition is assigned.
"""

from __future__ import annotations

import time

from whystream.kafka.publisher import Publisher

KINDS = ("COMMIT", "RESET", "FORGET")


class Checkpoints:
    """Writes SamplingCheckpoint records to `topic` through a confirming publisher."""

    def __init__(self, publisher: Publisher, codec, topic: str, worker: str):
        self.publisher, self.codec, self.topic, self.worker = publisher, codec, topic, worker

    def record(self, records: list[tuple[int, str, int, int | None]]) -> None:
        """(partition, kind, offset, live_from) each; returns once the broker has them all."""
        if not records:
            return
        now = int(time.time() * 1000)
        for partition, kind, offset, live_from in records:
            value = self.codec.encode({"partition": partition, "kind": kind, "offset": offset,
                                       "live_from": live_from, "written_at": now, "worker": self.worker})
            self.publisher.produce(self.topic, value, str(partition).encode())
        self.publisher.flush()
