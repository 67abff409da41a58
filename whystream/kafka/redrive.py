"""Dead letters sent back: the originals of `predictions.dlq`'s dead letters of one
reason, back to `predictions` with their original key, each once however often asked
(`whystream dlq replay`, and the control plane once a version is announced).

Idempotent: each dead letter sent back is recorded, by its own position in
`predictions.dlq`, in the topic `<prefix>predictions.dlq.redriven`, after the
broker confirmed the resent event; a second replay skips what is recorded
there. (A replay killed between the two resends those few events once more;
the workers then skip decisions already explained by prediction_id.) A message
that fails again becomes a new dead letter, which a later replay may send
again. Dead letters whose original was truncated (larger than the DLQ
accepted) cannot be sent back whole: they are counted and left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from whystream.config import Settings
from whystream.kafka import reader
from whystream.kafka.clients import producer
from whystream.kafka.topics import ensure_topic
from whystream.wire.codecs import topic_codec


def redriven_topic(settings: Settings) -> str:
    return f"{settings.topic_prefix}predictions.dlq.redriven"


def letters(settings: Settings):
    """(dlq partition, dlq offset, dead letter record) of every dead letter now in `predictions.dlq`,
    read up to its end (ReadTimeout rather than an answer from part of it: a replay would send twice)."""
    codec = topic_codec(settings, "predictions.dlq")
    for m in reader.scan(settings, settings.topic("predictions.dlq")):
        yield m.partition(), m.offset(), codec.decode(m.value())


@dataclass
class ReplayReport:
    sent: int = 0
    already: int = 0  # sent back by an earlier replay
    truncated: int = 0  # original cut short: cannot be sent back


def replay(settings: Settings, reason: str, since_ms: int | None = None, timeout: float = 30.0,
           where: Callable[[dict], bool] | None = None) -> ReplayReport:
    """Send the originals of the dead letters with `reason` (and, given `where`, for which
    where(letter) holds) back to `predictions` (see the module docstring)."""
    marker = redriven_topic(settings)
    ensure_topic(settings, marker, timeout)
    done = {m.value() for m in reader.scan(settings, marker)}
    report = ReplayReport()
    todo = []
    for partition, offset, letter in letters(settings):
        if letter["reason_code"] != reason or (since_ms is not None and as_millis(letter["failed_at"]) < since_ms):
            continue
        if where is not None and not where(letter):
            continue
        position = f"{partition}:{offset}".encode()
        if position in done:
            report.already += 1
        elif letter["original_truncated"]:
            report.truncated += 1
        else:
            todo.append((position, letter))
    if not todo:
        return report
    resend = producer(settings, "confirmed")
    failures = []

    def delivered(err, _):
        if err is not None:
            failures.append(err)

    for _, letter in todo:
        resend.produce(settings.topic("predictions"), letter["original"], letter["original_key"],
                         on_delivery=delivered)
    if resend.flush(timeout) or failures:
        raise RuntimeError(f"the broker did not confirm the resent events ({failures[:1] or 'timed out'}); "
                           "nothing was recorded as sent, run the replay again")
    for position, _ in todo:
        resend.produce(marker, position, position, on_delivery=delivered)
    if resend.flush(timeout) or failures:
        raise RuntimeError(f"resent, but not recorded as resent ({failures[:1] or 'timed out'})")
    report.sent = len(todo)
    return report


def of_version(settings: Settings, name: str, version: str) -> Callable[[dict], bool]:
    """`where` for `replay`: dead letters whose original is an event of model `name`@`version`."""
    codec = topic_codec(settings, "predictions")

    def match(letter: dict) -> bool:
        try:
            event = codec.decode(letter["original"])
        except Exception:  # DecodeError, or an original cut short: not this version's to send back
            return False
        return event["model_name"] == name and event["model_version"] == version
    return match


def as_millis(value) -> int:
    """failed_at as ms: fastavro hands timestamp-millis over as a datetime."""
    return value if isinstance(value, int) else round(value.timestamp() * 1000)
