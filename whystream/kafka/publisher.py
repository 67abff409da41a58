"""Publishing with a confirmation per message: what the engine writes reaches the
broker, or the worker keeps trying; it never dies of one message.

The engine acknowledges offsets only after `Publisher.flush()` returned, so
everything produced before it must be on the broker by then (the commit rule).
Each message is tracked on its own:

- a message the producer refuses outright (`produce()` raising, e.g.
  MSG_SIZE_TOO_LARGE above the producer's message.max.bytes) or that the broker
  rejects as too large is handed to its `shrink` callback, which returns a
  smaller value (a dead letter with less of the original) or None (nothing
  smaller exists: the message is logged and dropped; explanations are small
  and never get there);
- any other failed delivery is produced again after a back-off (0.1 s doubling
  up to 5 s) until the broker takes it: a broker that refuses everything stalls
  the worker visibly (logged, offsets not committed) instead of losing output.

`flush()` returns only when nothing is outstanding; it raises only if the
producer itself reports a fatal error (idempotence broken), which no retry can
mend.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from confluent_kafka import KafkaError, KafkaException, Producer

from whystream.errors import WhystreamError

log = logging.getLogger("whystream.publish")

TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE}  # local and broker refusals
MAX_BACKOFF_S = 5.0


@dataclass
class _Pending:
    topic: str
    value: bytes
    key: bytes | None
    headers: list | None
    shrink: Callable[[bytes], bytes | None] | None
    attempts: int = 0


class Publisher:
    """A producer wrapper that confirms every message (see the module docstring)."""

    def __init__(self, producer: Producer):
        self.producer = producer
        self._pending: dict[int, _Pending] = {}
        self._failed: list[tuple[int, KafkaError]] = []
        self._next = 0
        self.dropped = 0  # messages given up on (too large even when shrunk to nothing)
        self.retried = 0
        # (topic, partition) -> the offset after the last message of ours the broker confirmed there:
        # a position nothing published from now on can lie before (the replay's read-back starts).
        self.ends: dict[tuple[str, int], int] = {}

    def produce(self, topic: str, value: bytes, key: bytes | None = None, headers: list | None = None,
                shrink: Callable[[bytes], bytes | None] | None = None) -> None:
        """Queue one message; `shrink(value)` gives a smaller stand-in if it is too large."""
        ticket, self._next = self._next, self._next + 1
        self._pending[ticket] = _Pending(topic, value, key, headers, shrink)
        self._send(ticket)

    def _send(self, ticket: int) -> None:
        item = self._pending[ticket]
        item.attempts += 1
        while True:
            try:
                self.producer.produce(item.topic, value=item.value, key=item.key, headers=item.headers,
                                      on_delivery=lambda err, msg, ticket=ticket: self._delivered(ticket, err, msg))
                return
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.05)
            except KafkaException as exc:  # refused before sending (too large, unknown topic...)
                self._failed.append((ticket, exc.args[0]))
                return

    def _delivered(self, ticket: int, err, msg) -> None:
        if err is None:
            self._pending.pop(ticket, None)
            where, after = (msg.topic(), msg.partition()), msg.offset() + 1
            if after > self.ends.get(where, 0):
                self.ends[where] = after
        else:
            self._failed.append((ticket, err))

    def flush(self) -> None:
        """Return once the broker confirmed every message produced so far."""
        backoff = 0.1
        while True:
            while self.producer.flush(5.0):
                log.warning("broker slow to confirm %d messages; still waiting", len(self.producer))
            if not self._failed:
                if self._pending:  # cannot happen with a working client: neither confirmed nor failed
                    raise WhystreamError(f"{len(self._pending)} messages neither confirmed nor failed")
                return
            failed, self._failed = self._failed, []
            again = []
            for ticket, err in failed:
                if err.fatal():
                    raise WhystreamError(f"the producer failed for good: {err}")
                item = self._pending[ticket]
                if err.code() not in TOO_LARGE:
                    log.warning("delivery to %s failed (%s, attempt %d); sending it again", item.topic, err,
                                item.attempts)
                    again.append(ticket)
                    continue
                smaller = item.shrink(item.value) if item.shrink else None
                if smaller is None or len(smaller) >= len(item.value):
                    log.error("dropped a %d-byte message to %s: %s, and it has no smaller form",
                              len(item.value), item.topic, err)
                    del self._pending[ticket]
                    self.dropped += 1
                    continue
                item.value = smaller
                self._send(ticket)
            if again:
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                self.retried += len(again)
                for ticket in again:
                    self._send(ticket)

    def __len__(self) -> int:
        return len(self._pending)
