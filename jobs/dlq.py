"""`whystream dlq`: what is in the dead-letter topic.

`summary` counts the dead letters of `predictions.dlq` by reason code, with
the newest reason of each (what to fix). Sending them back (`whystream dlq
replay`) is whystream/kafka/redrive.py's: after the model version was
registered, or the producer fixed, they are explained like any event.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from whystream.config import Settings
from whystream.kafka.redrive import as_millis, letters


@dataclass
class Summary:
    counts: Counter = field(default_factory=Counter)
    latest: dict = field(default_factory=dict)  # reason code -> newest dead letter


def summary(settings: Settings, since_ms: int | None = None) -> Summary:
    out = Summary()
    for _, _, letter in letters(settings):
        failed_at = as_millis(letter["failed_at"])
        if since_ms is not None and failed_at < since_ms:
            continue
        code = letter["reason_code"]
        out.counts[code] += 1
        if code not in out.latest or as_millis(out.latest[code]["failed_at"]) <= failed_at:
            out.latest[code] = letter
    return out


