"""`whystream sink`'s consumer loop: `explanations` (and, with the decision store on,
`predictions`) read in batches per partition, each
written by a `Sink` (decoded while the batch before it is written, `SinkPipeline`),
its offsets committed once it is stored.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

from whystream.config import Settings
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE
from whystream.jobs.sink.pipeline import SinkPipeline
from whystream.jobs.sink.sink import Sink, SinkStats, SinkStopped
from whystream.kafka.clients import check_broker
from whystream.kafka.clients import consumer as kafka_consumer
from whystream.kafka.messages import RawMessage

log = logging.getLogger("whystream.sink")


def commit_offsets(messages: Iterable[RawMessage]) -> dict[tuple[str, int], int]:
    """The offsets to commit after a batch: one past the last message per partition."""
    nxt: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic, m.partition)
        nxt[key] = max(nxt.get(key, 0), m.offset + 1)
    return nxt


def _raw(message) -> RawMessage:
    kind, timestamp = message.timestamp()  # the broker's receipt (or the producer's send) time: decisions.received_at
    return RawMessage(message.value(), message.key(), message.topic(), message.partition(), message.offset(),
                      timestamp if kind else -1)


def run_sink(settings: Settings, stop_event: threading.Event | None = None, batch_size: int = 5000,
             flush_seconds: float = 1.0, progress: Callable[[SinkStats], None] | None = None, *,
             database: str = DEFAULT_DATABASE, sink: Sink | None = None, session_timeout_ms: int = 6000,
             idle_exit_seconds: float | None = None) -> SinkStats:
    """Consume `explanations` into ClickHouse until `stop_event` is set.

    Batches are per partition; one is complete when it has `batch_size`
    messages or its first message waited `flush_seconds`. It is decoded while
    the batch before it is written, and written when the next one is complete
    or nothing new came (`SinkPipeline`); its offsets are committed once it
    is written.
    `progress(stats)` is called after every batch and about once a second
    otherwise. `idle_exit_seconds` (tests, one-off loads) returns after that
    long without messages.
    """
    from confluent_kafka import KafkaException, TopicPartition

    stop_event = stop_event or threading.Event()
    check_broker(settings.kafka_config, settings.require("broker"))  # a wrong CA ends here, in one line
    sink = sink or Sink(settings, database, stop_event=stop_event)
    if sink.stop_event is not stop_event:
        sink.stop_event = stop_event
    topic = settings.topic("explanations")
    consumer = kafka_consumer(settings, "sink", **{
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(500, session_timeout_ms // 3),
        "max.poll.interval.ms": 600_000,  # a batch may wait out a ClickHouse outage
    })
    # with the decision store on, `predictions` too (jobs/sink/decisions.py), in the sink's own group
    consumer.subscribe([topic] + ([sink.decisions_topic] if sink.decisions_topic else []))
    pipeline = SinkPipeline(sink)
    # one batch per partition: a batch is then one unit of the ledger, written in one insert
    batches: dict[tuple[str, int], list[RawMessage]] = {}
    first_at: dict[tuple[str, int], float] = {}
    last_message_at = reported = time.monotonic()
    try:
        while not stop_event.is_set():
            oldest = min(first_at.values(), default=None)
            wait = 0.5 if oldest is None else max(0.05, min(0.5, flush_seconds - (time.monotonic() - oldest)))
            for message in consumer.consume(num_messages=batch_size, timeout=wait):
                if message.error() is not None:
                    log.warning("consumer: %s", message.error())
                    continue
                key = (message.topic(), message.partition())
                batches.setdefault(key, []).append(_raw(message))
                first_at.setdefault(key, time.monotonic())
                last_message_at = time.monotonic()
            now = time.monotonic()
            ready = [k for k, b in batches.items() if len(b) >= batch_size or now - first_at[k] >= flush_seconds]
            try:
                written = []
                for key in ready:  # the next batch is decoded while the one before it is written
                    written += pipeline.push(batches.pop(key))
                    del first_at[key]
                if not ready:  # nothing new: write what waits
                    written += pipeline.drain()
            except SinkStopped:
                break  # the batch stays uncommitted: it is read again (and deduplicated) next time
            for done in written:
                offsets = [TopicPartition(t, p, o) for (t, p), o in commit_offsets(done).items()]
                try:
                    consumer.commit(offsets=offsets, asynchronous=False)
                except KafkaException as exc:
                    # e.g. the partitions moved to another sink meanwhile: it reads them again and
                    # the ledger keeps the rows single.
                    log.warning("offset commit failed (%s); the batch may be read again", exc)
                if progress:
                    progress(sink.stats)
                    reported = time.monotonic()
            if progress and time.monotonic() - reported >= 1.0:
                progress(sink.stats)
                reported = time.monotonic()
            if (idle_exit_seconds is not None and not batches and not pipeline.waiting
                    and time.monotonic() - last_message_at > idle_exit_seconds):
                break
    finally:
        pipeline.close()
        consumer.close()
        sink.close()
    return sink.stats
