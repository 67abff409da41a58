"""The decision store: every valid decision of `predictions` as a row of `decisions`.

Explanations exist for the priority decisions and a sample of the rest; an
auditor asking about an approval six weeks old needs the decision itself. So
the sink also reads `predictions` (its own consumer group, beside the workers')
and writes each valid PredictionEvent to `decisions` (migration 072): id, model
and version, event time, when the broker received it, the features, score,
decision, threshold, decision class, segment and priority, exactly once through
the same ledger as explanations (jobs/sink/ledger.py: the ledger's rows name
the topic, so the two never mix).

Valid is what the workers accept (streams/validation.py, checked here from the
decoded record: the sink is no worker): a decodable PredictionEvent with a
prediction_id, a registered model version, only that version's features,
finite values, score and threshold, a decision_class the model has, an event
time in 2000..2100 and at most 5 minutes ahead of the broker's timestamp (the
workers' defaults). Anything else is skipped and counted by reason
(`SinkStats.decisions_skipped`): the workers dead-letter it to
`predictions.dlq` with its bytes, and an UNKNOWN_VERSION decision they park
comes back on `predictions` once its version is registered, and is stored then.

Redacted features (the model's registered list and the sink's `--redact`) are
never stored in clear: they are left out of `features` and named in
`redacted_features`; such a decision's explanation cannot be recomputed from
the store alone (the answer says so).
"""

from __future__ import annotations

import math
import struct
import time
from collections import Counter
from typing import Callable

import numpy as np

from whystream.errors import DecodeError, ModelNotFound
from whystream.jobs.sink.columns import _nullable_double, _text
from whystream.jobs.sink.rows import LATEST_MS, Rows
from whystream.kafka.messages import RawMessage
from whystream.wire.avro_write import varint

DECISION_COLUMNS = ["prediction_id", "model_name", "model_version", "event_time", "received_at", "features",
                    "redacted_features", "score", "decision", "threshold", "decision_class", "segment", "priority",
                    "kafka_topic", "kafka_topic_id", "kafka_partition", "kafka_offset"]
RETRY_UNKNOWN_S = 60.0  # a version the registry lacked is looked up again after this long
# The workers' event-time rule (streams/event_time.py) with its defaults: plausible milliseconds, at most
# 5 minutes ahead of the broker's timestamp (the clock where there is none).
EARLIEST_MS, MAX_AHEAD_MS = 946_684_800_000, 5 * 60_000


def _row(r: dict, features: dict, redacted: list[str], m: RawMessage, topic_id: str) -> bytes:
    """One RowBinary row of DECISION_COLUMNS."""
    received = m.timestamp if m.timestamp is not None and 0 <= m.timestamp < LATEST_MS else None
    cls = r.get("decision_class")
    return b"".join([
        _text(r["prediction_id"]), _text(r["model_name"]), _text(r["model_version"]),
        struct.pack("<q", int(r["event_time"])),
        b"\x01" if received is None else b"\x00" + struct.pack("<q", int(received)),
        varint(len(features)) + b"".join(_text(k) + _nullable_double(v) for k, v in features.items()),
        varint(len(redacted)) + b"".join(map(_text, redacted)),
        struct.pack("<d", r["score"]), _text(r["decision"]), struct.pack("<d", r["threshold"]),
        b"\x01" if cls is None else b"\x00" + struct.pack("<i", int(cls)),
        varint(len(r["segment"])) + b"".join(_text(k) + _text(v) for k, v in r["segment"].items()),
        b"\x01" if r["priority"] else b"\x00",
        _text(m.topic), _text(topic_id), struct.pack("<i", int(m.partition)), struct.pack("<q", int(m.offset)),
    ])


class DecisionDecoder:
    """`(messages, topic_ids) -> Rows` of `decisions`, skipping (and counting) what is not a valid decision."""

    def __init__(self, codec, load: Callable[[str, str], object], redact: frozenset[str] = frozenset()):
        self.codec = codec
        self.load = load  # (name, version) -> RegisteredModel; ModelNotFound when not registered
        self.redact = redact
        self.skipped: Counter = Counter()  # reason -> decisions not stored
        self._models: dict[tuple[str, str], object] = {}
        self._missing: dict[tuple[str, str], float] = {}

    def _model(self, name: str, version: str):
        key = (name, version)
        if key in self._models:
            return self._models[key]
        if time.monotonic() - self._missing.get(key, -math.inf) < RETRY_UNKNOWN_S:
            return None
        try:
            self._models[key] = self.load(name, version)
        except ModelNotFound:
            self._missing[key] = time.monotonic()
            return None
        return self._models[key]

    def problem(self, r: dict, model, broker_ms: int = -1) -> str | None:
        """Why the workers would not take this decision (their dead-letter reason code), or None;
        `broker_ms`: the message's timestamp (-1: none)."""
        if not r["prediction_id"].strip():
            return "MISSING_ID"
        if model is None:
            return "UNKNOWN_VERSION"
        if set(r["features"]) - set(model.feature_names):
            return "UNKNOWN_FEATURE"
        if any(v is not None and not math.isfinite(v) for v in r["features"].values()):
            return "NON_FINITE_VALUE"
        if not (math.isfinite(r["score"]) and math.isfinite(r["threshold"])):
            return "BAD_FIELD"
        reference = broker_ms if broker_ms > 0 else int(time.time() * 1000)
        if not EARLIEST_MS <= r["event_time"] < LATEST_MS or r["event_time"] - reference > MAX_AHEAD_MS:
            return "EVENT_TIME"
        cls = r.get("decision_class")
        if cls is not None and not (model.kind.n_outputs > 1 and 0 <= cls < model.kind.n_outputs):
            return "BAD_CLASS"
        return None

    def __call__(self, messages: list[RawMessage], topic_ids: dict[str, str]) -> Rows:
        kept, rows, ids, models, times = [], [], [], [], []
        for m in messages:
            try:
                r = self.codec.decode(m.value)
            except DecodeError:
                self.skipped["UNDECODABLE"] += 1
                continue
            model = self._model(r["model_name"], r["model_version"]) if r["prediction_id"].strip() else None
            reason = self.problem(r, model, m.timestamp if m.timestamp is not None else -1)
            if reason is not None:
                self.skipped[reason] += 1
                continue
            hidden = model.redacted_features | self.redact
            redacted = [f for f in model.feature_names if f in hidden and f in r["features"]]
            features = {f: r["features"][f] for f in model.feature_names if f in r["features"] and f not in hidden}
            rows.append(_row(r, features, redacted, m, topic_ids.get(m.topic, "")))
            kept.append(m)
            ids.append(r["prediction_id"])
            models.append((r["model_name"], r["model_version"]))
            times.append(int(r["event_time"]))
        ends = np.cumsum(np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)))
        return Rows(kept, ids, models, np.asarray(times, dtype=np.int64), b"".join(rows), ends)
