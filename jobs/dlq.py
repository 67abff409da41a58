"""`whystream dlq`: what is in the dead-letter topic, and sending it back.

`summary` counts the dead letters of `predictions.dlq` by reason code, with
the newest reason of each (what to fix). `replay` (redrive) sends the original
bytes of the dead letters of one reason, optionally only those that failed
since a time, back to `predictions` with their original key: after the model
version was registered, or the producer fixed, they are explained like any
event.

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

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from whystream.config import Settings
from whystream.streams import topic_stats
from whystream.streams.codec import codec_for


def redriven_topic(settings: Settings) -> str:
    return f"{settings.topic_prefix}predictions.dlq.redriven"


def _scan(settings: Settings, topic: str, timeout: float = 60.0):
    """(partition, offset, key, value) of every message now in `topic`, read up to its end
    (raises ReadTimeout rather than answer from part of it: a replay would send twice)."""
    for m in topic_stats.scan(settings, topic, timeout):
        yield m.partition(), m.offset(), m.key(), m.value()


def letters(settings: Settings):
    """(dlq partition, dlq offset, dead letter record) of every dead letter."""
    topic = settings.topic("predictions.dlq")
    codec = codec_for("DeadLetter", settings.schema_registry_url, topic)
    for partition, offset, _, value in _scan(settings, topic):
        yield partition, offset, codec.decode(value)


@dataclass
class Summary:
    counts: Counter = field(default_factory=Counter)
    latest: dict = field(default_factory=dict)  # reason code -> newest dead letter


def summary(settings: Settings, since_ms: int | None = None) -> Summary:
    out = Summary()
    for _, _, letter in letters(settings):
        failed_at = _ms(letter["failed_at"])
        if since_ms is not None and failed_at < since_ms:
            continue
        code = letter["reason_code"]
        out.counts[code] += 1
        if code not in out.latest or _ms(out.latest[code]["failed_at"]) <= failed_at:
            out.latest[code] = letter
    return out


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
    _ensure_topic(settings, marker, timeout)
    done = {value for _, _, _, value in _scan(settings, marker)}
    report = ReplayReport()
    todo = []
    for partition, offset, letter in letters(settings):
        if letter["reason_code"] != reason or (since_ms is not None and _ms(letter["failed_at"]) < since_ms):
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
    producer = Producer(settings.kafka(**{"enable.idempotence": True}))
    failures = []

    def delivered(err, _):
        if err is not None:
            failures.append(err)

    for _, letter in todo:
        producer.produce(settings.topic("predictions"), letter["original"], letter["original_key"],
                         on_delivery=delivered)
    if producer.flush(timeout) or failures:
        raise RuntimeError(f"the broker did not confirm the resent events ({failures[:1] or 'timed out'}); "
                           "nothing was recorded as sent, run the replay again")
    for position, _ in todo:
        producer.produce(marker, position, position, on_delivery=delivered)
    if producer.flush(timeout) or failures:
        raise RuntimeError(f"resent, but not recorded as resent ({failures[:1] or 'timed out'})")
    report.sent = len(todo)
    return report


def of_version(settings: Settings, name: str, version: str) -> Callable[[dict], bool]:
    """`where` for `replay`: dead letters whose original is an event of model `name`@`version`."""
    codec = codec_for("PredictionEvent", settings.schema_registry_url, settings.topic("predictions"))

    def match(letter: dict) -> bool:
        try:
            event = codec.decode(letter["original"])
        except Exception:  # DecodeError, or an original cut short: not this version's to send back
            return False
        return event["model_name"] == name and event["model_version"] == version
    return match


def _ensure_topic(settings: Settings, topic: str, timeout: float) -> None:
    admin = AdminClient(settings.kafka())
    if topic in admin.list_topics(timeout=timeout).topics:
        return
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        try:
            future.result(timeout)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def _ms(value) -> int:
    """failed_at as ms: fastavro hands timestamp-millis over as a datetime."""
    return value if isinstance(value, int) else round(value.timestamp() * 1000)
