"""The ClickHouse sink: `explanations` topic -> `explanations` table and its views.

`consumer.run_sink` consumes the topic in the consumer group `whystream-sink`
(with the topic prefix in front, as the workers' group has), hands batches to
a `Sink` and commits offsets only after the batch is in ClickHouse.

`Sink.process(messages)`:
1. decodes the batch (`decoder.BatchDecoder`: straight from the bytes into
   ClickHouse rows; the per-message path `rows.decode_messages` is its reference)
   and sets aside what can never be stored right: undecodable messages,
   non-finite numbers, impossible values go to `explanations.dlq` as
   DeadLetters with the reason and the original bytes (counted by reason,
   never retried), before anything of the batch is committed;
2. takes out the answers to explain requests (sampling_reason ON_DEMAND or a
   request_id: `rows.is_answer`), counted in `SinkStats.answers`: they are not
   samples (weight 1 whatever the decision's inclusion probability), so they
   are kept out of `explanations` and every aggregate (the decision's stored
   explanation is the stream's own, and an answer published before it can never
   shadow it) and written, exactly once, to `explain_answers` instead: the audit
   trail of what was told to whom (migration 073);
3. drops repeated prediction_ids inside the batch and ids already in the
   table (an explanation published again at another offset is stored, and
   counted in the aggregates, once); the ids travel as array parameters in
   chunks, so ids of any length fit (answers stored by sinks before answers were
   dropped do not count as the decision's explanation);
4. makes sure every model version in the batch has its reference registered
   (from the model registry), so the histogram view can bin its attributions;
5. writes the rows exactly once into the table and every view
   (`ledger`: fixed per-partition offset blocks, tokens from the topic's
   id and the first offset not yet stored, checked against the ledger).

With the decision store on (`decisions=True`), messages of `predictions` in a
batch are decision rows instead (jobs/sink/decisions.py): every valid decision
into `decisions`, exactly once through the same ledger (step 5), without the
explanations' steps 2 to 4.

A transient ClickHouse failure (down, timeout, lost answer) is retried with
back-off until it succeeds or the sink is told to stop; a failure caused by a
row's data (jobs/clickhouse/errors.py) is narrowed down to that row, which is set
aside, so one row never blocks a partition.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from whystream.config import Settings
from whystream.errors import ModelNotFound, WhystreamError
from whystream.jobs.clickhouse import connection as ch
from whystream.jobs.clickhouse import references
from whystream.jobs.clickhouse.errors import is_data_error
from whystream.jobs.clickhouse.retention import Retention
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident, ms_lit, one_line
from whystream.jobs.sink import explanation_rows
from whystream.jobs.sink.columns import INSERT_COLUMNS
from whystream.jobs.sink.decisions import DECISION_COLUMNS, DecisionDecoder
from whystream.jobs.sink.decoder import BatchDecoder
from whystream.jobs.sink.ledger import TopicIds, stored, units, write_exactly_once
from whystream.jobs.sink.rows import Rows, decode_messages
from whystream.kafka.clients import producer
from whystream.kafka.dead_letters import DeadLetterRecord, DeadLetterWriter
from whystream.kafka.messages import RawMessage
from whystream.kafka.publisher import Publisher
from whystream.logsafe import printable
from whystream.models.registry import ModelRegistry
from whystream.wire.codecs import topic_codec

log = logging.getLogger("whystream.sink")

ID_CHUNK_BYTES = 256 * 1024  # prediction_ids per duplicate query: well inside any request size limit
# The views run on threads of their own (parallel_view_processing): a batch's ten views cost
# about a quarter less wall time on 2 cores (bench/sink.py); each still deduplicates by the token.
INSERT_SETTINGS = {**explanation_rows.DEDUP_SETTINGS, "parallel_view_processing": 1}
LEDGER_COLUMNS = ["kafka_topic", "kafka_topic_id", "kafka_partition", "kafka_offset", "prediction_id"]


class SinkStopped(WhystreamError):
    """Asked to stop while a batch was still unwritten; its offsets stay uncommitted."""


@dataclass
class SinkStats:
    consumed: int = 0  # messages handed to the sink
    written: int = 0  # rows newly stored in `explanations` (and every view)
    duplicates: int = 0  # prediction_ids skipped: repeated in a batch or already in the table
    answers: int = 0  # answers to explain requests: not samples, kept out of `explanations`
    answers_stored: int = 0  # of them, newly stored in `explain_answers` (the audit trail)
    undecodable: int = 0  # messages that were not ExplanationEvents (also counted in set_aside)
    set_aside: Counter = field(default_factory=Counter)  # reason code -> messages sent to explanations.dlq
    batches: int = 0  # batches written
    retries: int = 0  # failed ClickHouse calls retried
    unreferenced: int = 0  # rows of model versions without a reference (no histogram rows)
    decisions: int = 0  # decisions newly stored in `decisions` (the decision store)
    decisions_skipped: Counter = field(default_factory=Counter)  # reason -> decisions not valid (workers' DLQ has them)
    last_error: str = ""
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        rate = self.written / max(time.monotonic() - self.started, 1e-9)
        text = (f"{self.written:,} rows written ({rate:,.0f}/s) in {self.batches:,} batches; "
                f"{self.duplicates:,} duplicates skipped, {sum(self.set_aside.values()):,} set aside")
        if self.set_aside:
            text += " (" + ", ".join(f"{k} {v:,}" for k, v in sorted(self.set_aside.items())) + ")"
        if self.answers:
            text += f", {self.answers:,} explain answers kept apart ({self.answers_stored:,} new in explain_answers)"
        if self.decisions or self.decisions_skipped:
            text += f"; {self.decisions:,} decisions stored, {sum(self.decisions_skipped.values()):,} not valid"
        if self.retries:
            text += f", {self.retries:,} ClickHouse retries"
        return text


class Sink:
    """Writes batches of ExplanationEvent messages to ClickHouse (see module doc).

    `client_factory` returns a fresh clickhouse-connect client; it is called
    again after a failure. By default it connects with `settings` and applies
    the migrations. `registry` loads model versions (default: the model
    registry of `settings`). `topic_id(topic)` gives a topic's Kafka id
    (default: asked of the broker). `decode(messages, topic_ids)` gives
    (Rows, dead letters); `columnar=False` uses the per-message path.
    """

    def __init__(self, settings: Settings, database: str = DEFAULT_DATABASE, *,
                 client_factory: Callable[[], object] | None = None, registry=None,
                 stop_event: threading.Event | None = None, backoff: tuple[float, float] = (0.5, 10.0),
                 topic_id: Callable[[str], str] | None = None, retention: Retention | None = None,
                 decode: Callable | None = None, columnar: bool = True, decisions: bool = False,
                 redact: frozenset[str] = frozenset()):
        self.settings = settings
        self.database = ident(database)
        self.client_factory = client_factory or (lambda: ch.connect(settings, database))
        self._registry = registry
        self.stop_event = stop_event or threading.Event()
        self.backoff = backoff
        self.topic_id = topic_id or TopicIds(settings)
        self.retention = retention or Retention.from_env(settings.environ)
        self.codec = topic_codec(settings, "explanations")
        self.decode = decode or (BatchDecoder(self.codec) if columnar
                                 else lambda messages, topic_ids: decode_messages(messages, self.codec, topic_ids))
        self.dlq_codec = topic_codec(settings, "explanations.dlq")
        # the decision store: `predictions` messages become rows of `decisions` (jobs/sink/decisions.py)
        self.decisions_topic = settings.topic("predictions") if decisions else None
        self.decision_rows = DecisionDecoder(topic_codec(settings, "predictions"), self._load, redact)
        self.name = f"sink-{socket.gethostname()}-{os.getpid()}"
        self.stats = SinkStats()
        self.stats.decisions_skipped = self.decision_rows.skipped
        self._client = None
        self._retention_applied = False
        self._dead_letters: DeadLetterWriter | None = None
        self._referenced: set[tuple[str, str]] = set()
        self._unreferenced: dict[tuple[str, str], float] = {}  # version -> when the registry last lacked it

    # -- ClickHouse access with retries

    @property
    def registry(self):
        if self._registry is None:
            self._registry = ModelRegistry(self.settings.registry)
        return self._registry

    def client(self):
        if self._client is None:
            self._client = self.client_factory()
        if not self._retention_applied:
            changed = self.retention.apply(self._client, self.database)
            if changed:
                log.info("retention set on %s: %s", ", ".join(changed), self.retention)
            self._retention_applied = True
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
                self.stats.last_error = f"{what}: {one_line(exc)}"
                log.warning("ClickHouse %s failed (%s); retrying in %.1fs", what, one_line(exc), delay)
                self._drop_client()
                if self.stop_event.wait(delay):
                    raise SinkStopped(f"stopped before {what} succeeded") from None
                delay = min(delay * 2, self.backoff[1])

    def _pause(self, seconds: float) -> None:
        if self.stop_event.wait(seconds):
            raise SinkStopped("stopped while waiting for another sink's claim")

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

    def process(self, messages: list[RawMessage]) -> int:
        """Write one batch; return the rows newly stored (not stored when this sink first
        looked). Returns only once the rows are in ClickHouse and what was set aside is on
        the broker: then the batch's offsets may be committed. Raises SinkStopped if
        stopped before that."""
        return self.write(self.prepare(messages))

    def prepare(self, messages: list[RawMessage]) -> tuple[Rows, dict[str, str], Rows | None]:
        """Decode a batch and set aside what cannot be stored (the part `SinkPipeline` runs
        on a thread of its own while the previous batch is written): (explanation rows, topic
        ids, decision rows or None)."""
        messages = list(messages)
        self.stats.consumed += len(messages)
        topic_ids = {t: self.topic_id(t) for t in {m.topic for m in messages}}
        decisions = None
        if self.decisions_topic is not None:
            decisions = self.decision_rows([m for m in messages if m.topic == self.decisions_topic], topic_ids)
            messages = [m for m in messages if m.topic != self.decisions_topic]
        rows, aside = self.decode(messages, topic_ids)
        self._set_aside(aside)
        return rows, topic_ids, decisions

    def write(self, prepared: tuple[Rows, dict[str, str], Rows | None]) -> int:
        """Store a prepared batch; return the explanations newly stored (decisions: `stats.decisions`)."""
        rows, topic_ids, decisions = prepared
        if decisions is not None and len(decisions):
            self.stats.decisions += self._exactly_once(decisions, topic_ids, "decisions", DECISION_COLUMNS)
        if rows.answers.any():  # the audit trail of answers, in a table of its own
            answers = rows.take(np.flatnonzero(rows.answers).tolist())
            self.stats.answers_stored += self._exactly_once(answers, topic_ids, "explain_answers", INSERT_COLUMNS)
        rows = self._unique(self._without_answers(rows))
        if len(rows):  # the ledger first: what it holds is stored in every view (read again after a restart)
            rows = self._retrying("reading the sink ledger", lambda c: self._not_in_ledger(c, rows, topic_ids))
        if len(rows):
            rows = self._retrying("checking for duplicates", lambda c: self._not_stored(c, rows, topic_ids))
        written = 0
        if len(rows):
            self._retrying("registering model references", lambda c: self._ensure_references(c, rows))
            written = write_exactly_once(rows, topic_ids, self.database, self._retrying, self._insert,
                                         self._refused, self.name, self._pause)
            self.stats.written += written
        self.stats.batches += 1
        return written

    def _insert(self, client, unit: Rows, topic_id: str, token: str) -> Exception | None:
        try:
            client.raw_insert("explanations", INSERT_COLUMNS, unit.payload, fmt="RowBinary",
                              settings={**INSERT_SETTINGS, "insert_deduplication_token": token})
        except Exception as exc:
            if is_data_error(exc):
                return exc
            raise
        self._ledger(client, unit, topic_id, token)
        return None

    def _ledger(self, client, unit: Rows, topic_id: str, token: str) -> None:
        """Only now, with the table and every view done: a unit not in the ledger is inserted again
        under its token (jobs/sink/ledger.py), which completes a view an interrupted insert left short."""
        m = unit.messages
        client.insert("sink_ledger", [[x.topic for x in m], [topic_id] * len(m), [x.partition for x in m],
                                      [x.offset for x in m], list(unit.prediction_ids)],
                      database=self.database, column_names=LEDGER_COLUMNS, column_oriented=True,
                      settings={"insert_deduplication_token": "ledger:" + token})

    def _exactly_once(self, rows: Rows, topic_ids: dict[str, str], table: str, columns: list[str]) -> int:
        """Write `rows` (RowBinary of `columns`) to `table` through the ledger (jobs/sink/ledger.py)."""
        def insert(client, unit: Rows, topic_id: str, token: str) -> Exception | None:
            try:
                client.raw_insert(table, columns, unit.payload, fmt="RowBinary",
                                  settings={**INSERT_SETTINGS, "insert_deduplication_token": f"{table}:{token}"})
            except Exception as exc:
                if is_data_error(exc):
                    return exc
                raise
            self._ledger(client, unit, topic_id, f"{table}:{token}")
            return None
        return write_exactly_once(rows, topic_ids, self.database, self._retrying, insert, self._refused, self.name,
                                  self._pause)

    def _refused(self, unit: Rows, exc: Exception) -> None:
        m = unit.messages[0]
        self._set_aside([DeadLetterRecord("BAD_FIELD", f"ClickHouse refused the row for good: {one_line(exc)}",
                                          m, unit.prediction_ids[0])])

    def _set_aside(self, letters: list[DeadLetterRecord]) -> None:
        """Dead letters to `explanations.dlq`, confirmed by the broker before returning."""
        if not letters:
            return
        if self._dead_letters is None:  # made on first need: most sinks never set anything aside
            self._dead_letters = DeadLetterWriter(Publisher(producer(self.settings, "confirmed")), self.dlq_codec,
                                                  self.settings.topic("explanations.dlq"), self.name)
        for letter in letters:
            self._dead_letters.write(letter)
            self.stats.set_aside[letter.reason_code] += 1
            self.stats.undecodable += letter.reason_code == "UNDECODABLE"
            m = letter.message
            log.warning("set aside %s[%d]@%d to %s as %s: %s", m.topic, m.partition, m.offset,
                        self._dead_letters.topic, letter.reason_code, letter.reason)
        self._dead_letters.publisher.flush()

    def _without_answers(self, rows: Rows) -> Rows:
        """The rows that are not answers to explain requests (see module doc, step 2; `write`
        stores the answers in `explain_answers`)."""
        n = int(rows.answers.sum())
        if not n:
            return rows
        self.stats.answers += n
        log.debug("%d explain answers (ON_DEMAND, request_id set) kept out of explanations: not samples", n)
        return rows.take(np.flatnonzero(~rows.answers).tolist())

    def _unique(self, rows: Rows) -> Rows:
        seen: set[str] = set()
        keep = []
        for i, pid in enumerate(rows.prediction_ids):
            if pid in seen:
                self.stats.duplicates += 1
                continue
            seen.add(pid)
            keep.append(i)
        return rows if len(keep) == len(rows) else rows.take(keep)

    def _not_stored(self, client, rows: Rows, topic_ids: dict[str, str]) -> Rows:
        """Rows whose prediction_id is not in the table yet, asked of `explanation_ids`
        (migration 043: the stored ids sorted by model and event time). A duplicate has the
        same event_time and model as the original (both are copied from the prediction), so
        only the batch's time span is read, however large the table; the ids go as array
        parameters, in chunks of at most ID_CHUNK_BYTES. The index leaves out answers an
        older sink stored: they are not the decision's explanation. An id stored from this very
        message (same topic incarnation, partition, offset) stays: an insert that failed after the
        table and some views took it is retried, under its token, to complete the others."""
        names = sorted({name for name, _ in rows.models})
        lo, hi = int(rows.event_time.min()), int(rows.event_time.max())
        present: set[str] = set()
        for chunk in _chunks(rows.prediction_ids, ID_CHUNK_BYTES):
            found = client.query(f"""
                SELECT DISTINCT prediction_id FROM {self.database}.explanation_ids
                WHERE model_name IN {{names:Array(String)}}
                  AND event_time BETWEEN {ms_lit(lo)} AND {ms_lit(hi)}
                  AND prediction_id IN {{ids:Array(String)}}""", parameters={"names": names, "ids": chunk})
            ids = {r[0] for r in found.result_rows}
            if ids:  # at most a chunk's worth
                present |= ids - self._stored_here(client, rows, ids, topic_ids, names, lo, hi)
        if not present:
            return rows
        self.stats.duplicates += len(present)
        return rows.take([i for i, pid in enumerate(rows.prediction_ids) if pid not in present])

    def _not_in_ledger(self, client, rows: Rows, topic_ids: dict[str, str]) -> Rows:
        """Rows whose message (topic incarnation, partition, offset, prediction_id) the ledger lacks."""
        have = stored(client, self.database, units(rows), topic_ids)
        if not have:
            return rows
        return rows.take([i for i, (pid, m) in enumerate(zip(rows.prediction_ids, rows.messages))
                          if (m.topic, m.partition, m.offset, pid) not in have])

    def _stored_here(self, client, rows: Rows, ids: set[str], topic_ids: dict[str, str], names: list[str],
                     lo: int, hi: int) -> set[str]:
        """Of `ids`, those `explanations` holds from the same message as the batch's row (an interrupted
        insert of it, not a duplicate)."""
        here = {(pid, m.topic, topic_ids.get(m.topic, ""), m.partition, m.offset)
                for pid, m in zip(rows.prediction_ids, rows.messages) if pid in ids}
        found = client.query(f"""
            SELECT prediction_id, kafka_topic, kafka_topic_id, kafka_partition, kafka_offset
            FROM {self.database}.explanations
            WHERE model_name IN {{names:Array(String)}} AND event_time BETWEEN {ms_lit(lo)} AND {ms_lit(hi)}
              AND prediction_id IN {{ids:Array(String)}}""", parameters={"names": names, "ids": sorted(ids)})
        return {r[0] for r in found.result_rows if tuple(r) in here}

    def _ensure_references(self, client, rows: Rows) -> None:
        versions = set(rows.models) - self._referenced
        for name, version in sorted(versions):
            if references.has_reference(client, name, version, self.database):
                self._add_input_reference(client, name, version)
                self._referenced.add((name, version))
                continue
            last_miss = self._unreferenced.get((name, version))
            if last_miss is not None and time.monotonic() - last_miss < 60:
                continue
            try:
                model = self._load(name, version)
            except ModelNotFound as exc:
                self._unreferenced[(name, version)] = time.monotonic()
                log.warning("no reference for %s %s (%s): its explanations are stored without histogram rows "
                            "until it is registered", printable(name), printable(version), printable(exc))
                continue
            references.register_reference(client, model, self.database)
            self._referenced.add((name, version))
        missing = {v for v in self._unreferenced if v not in self._referenced}
        self.stats.unreferenced += sum(v in missing for v in rows.models)

    def _add_input_reference(self, client, name: str, version: str) -> None:
        """A version whose SHAP reference ClickHouse held before input references were kept gets
        its input reference once the registry has one (`whystream register` of the same model adds it)."""
        if references.has_input_reference(client, name, version, self.database):
            return
        try:
            model = self._load(name, version)
        except ModelNotFound:
            return
        references.register_input_reference(client, model, self.database)

    def _load(self, name: str, version: str):
        """The registered model version; ModelNotFound whatever keeps it from loading. Not a
        ClickHouse failure, so never retried as one: a missing, unreadable or misconfigured
        registry leaves the version without histogram rows until it loads (asked again after
        a minute)."""
        try:
            return self.registry.load(name, version)
        except ModelNotFound:
            raise
        except Exception as exc:  # an unreadable version or no registry configured
            raise ModelNotFound(f"the model registry could not load it: {one_line(exc)}") from exc


def _chunks(ids: list[str], limit: int):
    chunk, size = [], 0
    for pid in ids:
        if chunk and size + len(pid) > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(pid)
        size += len(pid) + 4
    if chunk:
        yield chunk
