"""`whystream dlq`: what is in the dead-letter topic.

`listing` lists the dead letters of `predictions.dlq` one by one: where each lies in
`predictions.dlq`, the decision's id, where its original lay in `predictions`, when
and by which worker it failed, and the full reason (what to fix); the command counts
them by reason code. Sending them back (`whystream dlq replay`) is
whystream/kafka/redrive.py's: after the model version was registered, or the
producer fixed, they are explained like any event.
"""

from __future__ import annotations

from whystream.config import Settings
from whystream.kafka.redrive import as_millis, letters
from whystream.wire.codecs import load_schema


def reason_codes() -> list[str]:
    """The reason codes a dead letter can carry (DeadLetter.avsc's enum)."""
    field_ = next(f for f in load_schema("DeadLetter")["fields"] if f["name"] == "reason_code")
    return list(field_["type"]["symbols"])


def listing(settings: Settings, since_ms: int | None = None, reason: str | None = None) -> list[dict]:
    """Every dead letter (of `reason`, since `since_ms`), oldest first: its own
    partition and offset there, the decision's id, the original's topic, partition, offset,
    size and key, when and by which worker it failed, and the full reason (no original bytes)."""
    out = []
    for partition, offset, letter in letters(settings):
        failed_at = as_millis(letter["failed_at"])
        if (since_ms is not None and failed_at < since_ms) or (reason and letter["reason_code"] != reason):
            continue
        key = letter["original_key"]
        out.append({"dlq_partition": partition, "dlq_offset": offset, "reason_code": letter["reason_code"],
                    "prediction_id": letter["prediction_id"], "topic": letter["topic"],
                    "partition": letter["partition"], "offset": letter["offset"], "failed_at_ms": failed_at,
                    "worker": letter["worker"], "original_size": letter["original_size"],
                    "original_truncated": letter["original_truncated"],
                    "original_key": None if key is None else key.decode("utf-8", "replace"),
                    "reason": letter["reason"]})
    return sorted(out, key=lambda d: (d["failed_at_ms"], d["dlq_partition"], d["dlq_offset"]))

