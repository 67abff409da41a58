"""Dead letters: a message that cannot be handled, with the reason a person can act on
and its original bytes, for `predictions.dlq` (the worker) and `explanations.dlq` (the sink).

`DeadLetterWriter.write` encodes a DeadLetter keeping at most `original_cap` bytes
of the original (with the reason and key it stays under the producer's
message.max.bytes, 1 MB by default) and produces it, keyed by the message's own key
cut to KEY_LIMIT bytes (`original_key` keeps it whole), through a confirming
Publisher: should the broker still refuse it as too large, it is sent again with a
quarter as much of the original each time, down to none. The caller flushes the
publisher, with its other messages, before it commits the offsets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from whystream.kafka.messages import RawMessage
from whystream.kafka.publisher import Publisher
from whystream.logsafe import printable

REASON_LIMIT = 1000  # characters of a reason
KEY_LIMIT = 1024  # bytes of a dead message's key used as its dead letter's key
ORIGINAL_CAP = 512 * 1024  # bytes of a dead message's value kept in its dead letter, by default


@dataclass
class DeadLetterRecord:
    reason_code: str
    reason: str
    message: RawMessage
    prediction_id: str | None = None

    def __post_init__(self) -> None:
        # Reasons quote the producer (feature and model names): logged and shown, so made safe once here.
        self.reason = printable(self.reason, REASON_LIMIT)

    def to_avro(self, worker: str, cap: int | None = None, topic_id: str | None = None) -> dict:
        """The DeadLetter record; `original` keeps at most `cap` bytes of the value (None: all),
        with the value's size and whether it was cut; `topic_id`: the incarnation of the message's topic."""
        m = self.message
        original = m.value if cap is None or len(m.value) <= cap else m.value[:max(cap, 0)]
        key = m.key if cap is None or m.key is None or len(m.key) <= cap else m.key[:max(cap, 0)]
        return {"reason_code": self.reason_code, "reason": self.reason, "original": original,
                "original_size": len(m.value), "original_truncated": len(original) < len(m.value),
                "original_key": key, "topic": m.topic, "partition": m.partition, "offset": m.offset,
                "prediction_id": self.prediction_id, "failed_at": int(time.time() * 1000), "worker": worker,
                "topic_id": topic_id or None}


class DeadLetterWriter:
    """Produces DeadLetters to one topic through `publisher` (see the module docstring);
    `worker` names the process in each letter."""

    def __init__(self, publisher: Publisher, codec, topic: str, worker: str, original_cap: int = ORIGINAL_CAP):
        self.publisher, self.codec, self.topic, self.worker = publisher, codec, topic, worker
        self.original_cap = original_cap
        self.topic_id: str | None = None  # of the topic the letters' messages come from, where known

    def write(self, letter: DeadLetterRecord) -> None:
        """Produce one dead letter (confirmed by the publisher's next flush)."""
        m = letter.message
        caps = [min(self.original_cap, len(m.value))]

        def shrink(_) -> bytes | None:
            if caps[0] == 0:
                return None
            caps[0] //= 4  # the broker refused it: keep a quarter as much of the original
            return self.codec.encode(letter.to_avro(self.worker, caps[0], self.topic_id))

        key = m.key if m.key is None or len(m.key) <= KEY_LIMIT else m.key[:KEY_LIMIT]
        self.publisher.produce(self.topic, self.codec.encode(letter.to_avro(self.worker, self.original_cap, self.topic_id)), key,
                               shrink=shrink)
