"""One batch of `explanations` messages as the rows the sink may insert, and the ones it sets aside.

`decode_messages(messages, codec, topic_ids)` is the per-message path: each
message is decoded into a dict (SingleObjectCodec) and checked; its columns
come from `explanation_rows.explanation_columns` and are written as RowBinary rows
(`columns`). `decoder.BatchDecoder` gives the same `Rows`, byte for
byte, straight from the bytes of a whole batch.

A message is set aside, never retried, when no insert can ever succeed or be
right (`problem`): not an ExplanationEvent (UNDECODABLE), a blank prediction_id
(MISSING_ID), a number that is NaN or infinite (NON_FINITE_VALUE: it would
poison every sum in the aggregates, or fail in their views), or an impossible
value (BAD_FIELD: an inclusion weight <= 0, a time outside 1970..2100).

Rows also flag the answers to explain requests (`is_answer`: sampling_reason
ON_DEMAND or a non-empty request_id). They are valid events, so they are checked
like any other, but they are replies for the requester, not samples of the
stream: the sink drops them before anything is stored (`Sink.write`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from whystream.errors import DecodeError
from whystream.jobs.sink import explanation_rows
from whystream.jobs.sink.columns import encode_rows
from whystream.kafka.dead_letters import DeadLetterRecord
from whystream.kafka.messages import RawMessage

LATEST_MS = 4_102_444_800_000  # 2100-01-01: later times are typos (seconds read as ms, etc.)
SCALARS = ("base_value", "raw_score", "score", "threshold", "inclusion_weight", "latency_ms")
LISTS = ("attributions", "top_reasons", "principal_reasons", "adverse_reasons")
ANSWER_REASON = "ON_DEMAND"  # sampling_reason of an answer to an ExplainRequest (streams/control/plane.py)


@dataclass
class Rows:
    """Valid explanations of one batch: row i was read from messages[i]; its RowBinary
    row (columns.INSERT_COLUMNS) is payload[row_ends[i - 1]:row_ends[i]];
    answers[i] is True when it is an answer to an explain request (`is_answer`)."""

    messages: list[RawMessage]
    prediction_ids: list[str]
    models: list[tuple[str, str]]  # (model_name, model_version)
    event_time: np.ndarray  # int64 ms
    payload: bytes = b""
    row_ends: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    answers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self):
        if not len(self.answers):  # rows made without flags hold no answers
            self.answers = np.zeros(len(self.messages), dtype=bool)
        assert len(self.answers) == len(self.messages), "one answer flag per row"

    def __len__(self) -> int:
        return len(self.messages)

    def row(self, i: int) -> bytes:
        return self.payload[self.row_ends[i - 1] if i else 0:self.row_ends[i]]

    def take(self, rows: list[int]) -> "Rows":
        if len(rows) == len(self) and list(rows) == list(range(len(self))):
            return self
        picked = [self.row(i) for i in rows]
        ends = np.cumsum(np.fromiter(map(len, picked), dtype=np.int64, count=len(picked)))
        return Rows([self.messages[i] for i in rows], [self.prediction_ids[i] for i in rows],
                    [self.models[i] for i in rows], self.event_time[np.asarray(rows, dtype=np.int64)],
                    b"".join(picked), ends, self.answers[np.asarray(rows, dtype=np.int64)])


def is_answer(event: dict) -> bool:
    """An answer to an ExplainRequest: published on `explanations` for the requester, under the
    decision's prediction_id, with weight 1. Not a sample of the stream, so never stored."""
    return str(event.get("sampling_reason")) == ANSWER_REASON or bool(event.get("request_id"))


def problem(event: dict) -> tuple[str, str] | None:
    """(reason code, reason) when a decoded explanation must be set aside, else None."""
    if not str(event.get("prediction_id", "")).strip():
        return "MISSING_ID", "blank prediction_id: the explanation cannot be told apart from others"
    for name in SCALARS:
        if not math.isfinite(event[name]):
            return "NON_FINITE_VALUE", f"{name} is {event[name]}: aggregates cannot hold a non-finite number"
    for name in LISTS:
        for item in event.get(name) or ():
            if not math.isfinite(item["shap"]):
                return "NON_FINITE_VALUE", f"{name} shap of {item['feature']!r} is {item['shap']}"
            if item["value"] is not None and not math.isfinite(item["value"]):
                return "NON_FINITE_VALUE", f"{name} value of {item['feature']!r} is {item['value']} (null means missing)"
    model_score = event.get("model_score")
    if model_score is not None and not math.isfinite(model_score):
        return "NON_FINITE_VALUE", f"model_score is {model_score} (null means not recomputed)"
    if event["inclusion_weight"] <= 0:
        return "BAD_FIELD", f"inclusion_weight {event['inclusion_weight']} is impossible: it is 1 / probability, > 0"
    for name in ("event_time", "explained_at", "received_at"):
        if event.get(name) is not None and not 0 <= int(event[name]) < LATEST_MS:
            return "BAD_FIELD", f"{name} {int(event[name])} ms is outside 1970..2100"
    return None


def decode_messages(messages: list[RawMessage], codec,
                    topic_ids: dict[str, str]) -> tuple[Rows, list[DeadLetterRecord]]:
    """The per-message path: (valid rows, messages set aside with their reason)."""
    events, kept, aside = [], [], []
    for m in messages:
        try:
            event = codec.decode(m.value)
        except DecodeError as exc:
            aside.append(DeadLetterRecord("UNDECODABLE", f"{exc}. The sink reads ExplanationEvents only.", m))
            continue
        found = problem(event)
        if found is not None:
            aside.append(DeadLetterRecord(*found, m, str(event["prediction_id"]) or None))
            continue
        events.append(event)
        kept.append(m)
    return rows_of(events, kept, topic_ids), aside


def rows_of(events: list[dict], messages: list[RawMessage], topic_ids: dict[str, str]) -> Rows:
    columns = [*explanation_rows.explanation_columns(events, [(m.partition, m.offset) for m in messages]),
               [m.topic for m in messages], [topic_ids.get(m.topic, "") for m in messages]]
    return Rows(messages, [e["prediction_id"] for e in events],
                [(e["model_name"], e["model_version"]) for e in events],
                np.fromiter((int(e["event_time"]) for e in events), dtype=np.int64, count=len(events)),
                *encode_rows(columns), np.fromiter(map(is_answer, events), dtype=bool, count=len(events)))
