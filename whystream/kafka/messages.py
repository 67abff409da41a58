"""Kafka messages as whystream's engines see them, whatever the transport: one
message (`RawMessage`), or a batch as columns (`Inbound`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class RawMessage:
    """One Kafka message as the engine sees it, whatever the transport."""

    value: bytes
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: int = -1  # broker (or producer) timestamp, ms; -1 if the transport has none


class Inbound:
    """A batch of raw messages as columns, whatever the transport: the values,
    partitions and offsets, and each whole message on demand (for dead letters)."""

    def __init__(self, values: list[bytes], partitions: np.ndarray, offsets: np.ndarray,
                 message: Callable[[int], RawMessage], timestamps: np.ndarray | None = None):
        self.values = values
        self.partitions = np.asarray(partitions, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.message = message
        # Broker timestamps (ms, -1 where unknown); None: the transport has none at all.
        self.timestamps = None if timestamps is None else np.asarray(timestamps, dtype=np.int64)

    @classmethod
    def of(cls, messages: list[RawMessage]) -> "Inbound":
        n = len(messages)
        return cls([m.value for m in messages], np.fromiter((m.partition for m in messages), np.int64, n),
                   np.fromiter((m.offset for m in messages), np.int64, n), messages.__getitem__,
                   np.fromiter((m.timestamp for m in messages), np.int64, n))

    def __len__(self) -> int:
        return len(self.values)

    @cached_property
    def read_to(self) -> dict[int, int]:
        """Per partition of the batch, the offset after its highest message (computed once: the
        engine and the loop that commits both need it)."""
        if not len(self):
            return {}
        order = np.lexsort((self.offsets, self.partitions))
        partitions, offsets = self.partitions[order], self.offsets[order]
        last = np.append(partitions[1:] != partitions[:-1], True)  # the highest offset of each partition
        return dict(zip(partitions[last].tolist(), (offsets[last] + 1).tolist()))
