"""The ClickHouse sink: `explanations` topic -> `explanations` table.

`run_sink` consumes the topic in the consumer group `whystream-sink` (with the
topic prefix in front, as the workers' group has), hands batches to
`Sink.process` and commits offsets only after the batch is in ClickHouse.

`Sink.process(messages)`:
1. decodes each message; undecodable ones are logged, counted and skipped
   (the workers validated them; one bad message must not stop the table);
2. drops repeated prediction_ids inside the batch and ids already in the
   table (a redelivered or re-published explanation is stored, and counted in
   the histograms, once);
3. makes sure every model version in the batch has its reference registered
   (from the model registry), so the histogram view can bin its attributions;
4. inserts the batch column-oriented with an insert_deduplication_token made
   of the batch's topic/partition/offset ranges.

If ClickHouse fails (down, timeout, lost answer), the sink logs, backs off and
retries the *same* rows with the *same* token until it succeeds or is told to
stop: an insert that did land before the failure is then deduplicated by
ClickHouse, in the table and in every materialized view, so nothing is lost
and nothing is counted twice. Steps 2 and 3 are not repeated for a retry (an
id found "already present" would be the batch's own first attempt).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from whystream.config import Settings
from whystream.errors import DecodeError, ModelNotFound, WhystreamError
from whystream.logsafe import printable
from whystream.jobs import clickhouse as ch
from whystream.kafka_config import check_broker
from whystream.streams.codec import codec_for
from whystream.streams.validate import RawMessage

log = logging.getLogger("whystream.sink")

SINK_GROUP = "whystream-sink"


class SinkStopped(WhystreamError):
    """Asked to stop while a batch was still unwritten; its offsets stay uncommitted."""


@dataclass
class SinkStats:
    consumed: int = 0  # messages handed to the sink
    written: int = 0  # rows inserted into `explanations`
    duplicates: int = 0  # prediction_ids skipped: repeated in a batch or already in the table
    undecodable: int = 0  # messages that were not ExplanationEvents
    batches: int = 0  # batches written
    retries: int = 0  # failed ClickHouse calls retried
    unreferenced: int = 0  # rows of model versions without a reference (no histogram rows)
    last_error: str = ""
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        rate = self.written / max(time.monotonic() - self.started, 1e-9)
        text = (f"{self.written:,} rows written ({rate:,.0f}/s) in {self.batches:,} batches; "
                f"{self.duplicates:,} duplicates skipped, {self.undecodable:,} undecodable")
        if self.retries:
            text += f", {self.retries:,} ClickHouse retries"
        return text


def batch_token(messages: Iterable[RawMessage]) -> str:
    """Deduplication token of a batch: its offset range per topic partition.

    Re-inserting the same batch gives the same token; ClickHouse then writes it
    once. (A batch read again after a restart may be cut differently and get
    another token: step 2, the prediction_id filter, covers that case.)
    """
    ranges: dict[tuple[str, int], list[int]] = {}
    for m in messages:
        lo_hi = ranges.setdefault((m.topic, m.partition), [m.offset, m.offset])
        lo_hi[0] = min(lo_hi[0], m.offset)
        lo_hi[1] = max(lo_hi[1], m.offset)
    text = ";".join(f"{t}:{p}:{lo}-{hi}" for (t, p), (lo, hi) in sorted(ranges.items()))
    return "sink:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def commit_offsets(messages: Iterable[RawMessage]) -> dict[tuple[str, int], int]:
    """The offsets to commit after a batch: one past the last message per partition."""
    nxt: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic, m.partition)
        nxt[key] = max(nxt.get(key, 0), m.offset + 1)
    return nxt


class Sink:
    """Writes batches of ExplanationEvent messages to ClickHouse (see module doc).

    `client_factory` returns a fresh clickhouse-connect client; it is called
    again after a failure. By default it connects with `settings` and applies
    the migrations. `registry` loads model versions (default: the model
    registry of `settings`).
    """

    def __init__(self, settings: Settings, database: str = ch.DEFAULT_DATABASE, *,
                 client_factory: Callable[[], object] | None = None, registry=None,
                 stop_event: threading.Event | None = None, backoff: tuple[float, float] = (0.5, 10.0)):
        self.settings = settings
        self.database = ch.ident(database)
        self.client_factory = client_factory or (lambda: ch.connect(settings, database))
        self._registry = registry
        self.stop_event = stop_event or threading.Event()
        self.backoff = backoff
        self.codec = codec_for("ExplanationEvent", settings.schema_registry_url, settings.topic("explanations"))
        self.stats = SinkStats()
        self._client = None
        self._referenced: set[tuple[str, str]] = set()
        self._unreferenced: dict[tuple[str, str], float] = {}  # version -> when the registry last lacked it

    # -- ClickHouse access with retries

    @property
    def registry(self):
        if self._registry is None:
            from whystream.jobs.registry import ModelRegistry

            self._registry = ModelRegistry(self.settings.registry)
        return self._registry

    def client(self):
        if self._client is None:
            self._client = self.client_factory()
        return self._client

    def _retrying(self, what: str, step: Callable[[object], object]):
        """Run step(client) until it succeeds; back off between failures.
        Raises SinkStopped if the stop event is set before it succeeds."""
        delay = self.backoff[0]
        while True:
            if self.stop_event.is_set():
                raise SinkStopped(f"stopped before {what} succeeded")
            try:
                return step(self.client())
            except (SinkStopped, KeyboardInterrupt):
                raise
            except Exception as exc:
                self.stats.retries += 1
                self.stats.last_error = f"{what}: {ch.one_line(exc)}"
                log.warning("ClickHouse %s failed (%s); retrying in %.1fs", what, ch.one_line(exc), delay)
                self._drop_client()
                if self.stop_event.wait(delay):
                    raise SinkStopped(f"stopped before {what} succeeded") from None
                delay = min(delay * 2, self.backoff[1])

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def close(self) -> None:
        self._drop_client()

    # -- the batch step

    def decode(self, messages: list[RawMessage]) -> tuple[list[dict], list[RawMessage]]:
        events, kept = [], []
        for m in messages:
            try:
                events.append(self.codec.decode(m.value))
                kept.append(m)
            except DecodeError as exc:
                self.stats.undecodable += 1
                log.error("skipping undecodable message %s[%d]@%d: %s", m.topic, m.partition, m.offset, printable(exc))
        return events, kept

    def process(self, messages: list[RawMessage]) -> int:
        """Write one batch; return the rows inserted (after dropping duplicates).
        Returns only once the rows are in ClickHouse: then the batch's offsets
        may be committed. Raises SinkStopped if stopped before that."""
        messages = list(messages)
        self.stats.consumed += len(messages)
        events, kept = self.decode(messages)
        events, kept = self._unique(events, kept)
        if events:
            events, kept = self._retrying("checking for duplicates", lambda c: self._not_stored(c, events, kept))
        if events:
            self._retrying("registering model references", lambda c: self._ensure_references(c, events))
            token = batch_token(messages)
            columns = ch.explanation_columns(events, [(m.partition, m.offset) for m in kept])
            self._retrying("inserting explanations", lambda c: ch.insert_columns(c, columns, self.database, token))
            self.stats.written += len(events)
        self.stats.batches += 1
        return len(events)

    def _unique(self, events: list[dict], kept: list[RawMessage]):
        seen: set[str] = set()
        out_e, out_m = [], []
        for e, m in zip(events, kept):
            if e["prediction_id"] in seen:
                self.stats.duplicates += 1
                continue
            seen.add(e["prediction_id"])
            out_e.append(e)
            out_m.append(m)
        return out_e, out_m

    def _not_stored(self, client, events: list[dict], kept: list[RawMessage]):
        """Drop events whose prediction_id is already in the table. A duplicate
        has the same event_time and model as the original (both are copied from
        the prediction), which lets ClickHouse prune by partition and key."""
        ids = [e["prediction_id"] for e in events]
        lo = min(int(e["event_time"]) for e in events)
        hi = max(int(e["event_time"]) for e in events)
        names = sorted({e["model_name"] for e in events})
        found = ch.rows(client, f"""
            SELECT DISTINCT prediction_id FROM {self.database}.explanations
            WHERE model_name IN ({", ".join(ch.lit(n) for n in names)})
              AND event_time BETWEEN {ch.ms_lit(lo)} AND {ch.ms_lit(hi)}
              AND prediction_id IN ({", ".join(ch.lit(i) for i in ids)})""")
        if not found:
            return events, kept
        present = {r["prediction_id"] for r in found}
        self.stats.duplicates += len(present)
        pairs = [(e, m) for e, m in zip(events, kept) if e["prediction_id"] not in present]
        return [e for e, _ in pairs], [m for _, m in pairs]

    def _ensure_references(self, client, events: list[dict]) -> None:
        versions = {(e["model_name"], e["model_version"]) for e in events} - self._referenced
        for name, version in sorted(versions):
            if ch.has_reference(client, name, version, self.database):
                self._referenced.add((name, version))
                continue
            last_miss = self._unreferenced.get((name, version))
            if last_miss is not None and time.monotonic() - last_miss < 60:
                continue
            try:
                model = self.registry.load(name, version)
            except ModelNotFound as exc:
                self._unreferenced[(name, version)] = time.monotonic()
                log.warning("no reference for %s %s (%s): its explanations are stored without histogram rows "
                            "until it is registered", printable(name), printable(version), printable(exc))
                continue
            ch.register_reference(client, model, self.database)
            self._referenced.add((name, version))
        missing = {v for v in self._unreferenced if v not in self._referenced}
        self.stats.unreferenced += sum((e["model_name"], e["model_version"]) in missing for e in events)


def _raw(message) -> RawMessage:
    return RawMessage(message.value(), message.key(), message.topic(), message.partition(), message.offset())


def run_sink(settings: Settings, stop_event: threading.Event | None = None, batch_size: int = 5000,
             flush_seconds: float = 1.0, progress: Callable[[SinkStats], None] | None = None, *,
             database: str = ch.DEFAULT_DATABASE, sink: Sink | None = None, session_timeout_ms: int = 6000,
             idle_exit_seconds: float | None = None) -> SinkStats:
    """Consume `explanations` into ClickHouse until `stop_event` is set.

    A batch is written when it has `batch_size` messages or its first message
    waited `flush_seconds`; its offsets are committed once it is written.
    `progress(stats)` is called after every batch and about once a second
    otherwise. `idle_exit_seconds` (tests, one-off loads) returns after that
    long without messages.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    stop_event = stop_event or threading.Event()
    check_broker(settings.kafka_config, settings.require("broker"))  # a wrong CA ends here, in one line
    sink = sink or Sink(settings, database, stop_event=stop_event)
    if sink.stop_event is not stop_event:
        sink.stop_event = stop_event
    topic = settings.topic("explanations")
    consumer = Consumer(settings.kafka(**{
        "group.id": f"{settings.topic_prefix}{SINK_GROUP}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(500, session_timeout_ms // 3),
        "max.poll.interval.ms": 600_000,  # a batch may wait out a ClickHouse outage
    }))
    consumer.subscribe([topic])
    batch: list[RawMessage] = []
    first_at = last_message_at = reported = time.monotonic()
    try:
        while not stop_event.is_set():
            wait = max(0.05, min(0.5, flush_seconds - (time.monotonic() - first_at))) if batch else 0.5
            for message in consumer.consume(num_messages=max(1, batch_size - len(batch)), timeout=wait):
                if message.error() is not None:
                    log.warning("consumer: %s", message.error())
                    continue
                if not batch:
                    first_at = time.monotonic()
                batch.append(_raw(message))
                last_message_at = time.monotonic()
            if batch and (len(batch) >= batch_size or time.monotonic() - first_at >= flush_seconds):
                try:
                    sink.process(batch)
                except SinkStopped:
                    break  # the batch stays uncommitted: it is read again (and deduplicated) next time
                offsets = [TopicPartition(t, p, o) for (t, p), o in commit_offsets(batch).items()]
                try:
                    consumer.commit(offsets=offsets, asynchronous=False)
                except KafkaException as exc:
                    # e.g. the partitions moved to another sink meanwhile: it reads them again and
                    # the prediction_id filter keeps the rows single.
                    log.warning("offset commit failed (%s); the batch may be read again", exc)
                batch = []
                if progress:
                    progress(sink.stats)
                    reported = time.monotonic()
            if progress and time.monotonic() - reported >= 1.0:
                progress(sink.stats)
                reported = time.monotonic()
            if idle_exit_seconds is not None and not batch and time.monotonic() - last_message_at > idle_exit_seconds:
                break
    finally:
        consumer.close()
        sink.close()
    return sink.stats
