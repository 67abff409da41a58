"""Decode and check raw prediction messages; turn the good ones into feature
matrices and the bad ones into dead letters with a reason a person can act on.

Rules: the bytes decode as a PredictionEvent; prediction_id is non-empty; the
model name and version are registered, and the version can be served (else
MODEL_UNAVAILABLE with the loader's reason, the version quarantined and tried
again later, streams/quarantine.py: corrupt files, or say linear trees written
into the registry behind `whystream register`'s back); every feature name
belongs to the model (absent names and nulls are missing values); every value,
the score and the threshold are finite (NaN and infinities are rejected:
missing is null); decision_class is null for a single-output model and one of
its classes (0 .. K-1) for a multiclass one (BAD_CLASS otherwise); the event
time is plausible (streams/event_time.py). Every dead letter of a batch leaves
`Validator.split`, nowhere else.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from whystream.errors import DecodeError, ModelNotFound
from whystream.kafka.dead_letters import REASON_LIMIT, DeadLetterRecord
from whystream.kafka.messages import Inbound
from whystream.logsafe import printable
from whystream.models.registry import ModelRegistry, RegisteredModel
from whystream.streams.event_time import EventTimeRule
from whystream.streams.quarantine import ModelUnavailable, Quarantine
from whystream.wire.codecs import load_schema, schema_fingerprint
from whystream.wire.prediction_decoder import (
    NO_CLASS,
    NO_MODEL,
    OK,
    SLOW,
    Decoded,
    PredictionDecoder,
)

log = logging.getLogger("whystream.validate")


@dataclass
class ModelBatch:
    """The valid events of one model version in a batch, as columns in arrival order."""

    model: RegisteredModel
    index: np.ndarray  # position of each event in the Inbound batch
    prediction_ids: list[str]
    decisions: list[str]
    strata: list[str]  # the segment value under the stratum key ("" if absent)
    event_time: np.ndarray  # int64 ms
    score: np.ndarray
    threshold: np.ndarray
    priority: np.ndarray  # bool
    decision_class: np.ndarray  # int64, NO_CLASS for null
    X: np.ndarray  # [n, F] in the model's feature order, NaN = missing
    received_at: np.ndarray | None = None  # int64 ms: the messages' broker timestamps (-1 or None: unknown)

    def __len__(self) -> int:
        return len(self.prediction_ids)

    def record(self, j: int) -> dict:
        """Event j as a (partial) PredictionEvent record: what an explanation needs of it."""
        return {"prediction_id": self.prediction_ids[j], "model_name": self.model.name,
                "model_version": self.model.version, "event_time": int(self.event_time[j]),
                "score": float(self.score[j]), "decision": self.decisions[j], "threshold": float(self.threshold[j]),
                "priority": bool(self.priority[j]), "decision_class": int(self.decision_class[j]),
                "received_at": None if self.received_at is None or self.received_at[j] < 0 else int(self.received_at[j])}


class Validator:
    """Splits a batch into valid events per model version (columns) and dead letters.

    Events of the current schema in single-object encoding go through the
    compiled batch decoder (whystream/wire/prediction_decoder.py); whatever it does not
    accept outright (another schema version, the Confluent format, anything
    invalid) is decoded by the codec and checked by `_check`, one at a time,
    so the outcome and every dead-letter reason are those of the rules above.
    """

    def __init__(self, registry: ModelRegistry, codec, event_time: EventTimeRule | None = None,
                 prepare: Callable[[RegisteredModel], object] | None = None, quarantine: Quarantine | None = None):
        self.registry = registry
        self.codec = codec
        self.event_time = event_time  # None: event times are not checked
        self.prepare = prepare  # called once per new version (the explainer's kernels): a failure = cannot be served
        self.quarantine = quarantine or Quarantine()
        self._models: dict[tuple[str, str], RegisteredModel] = {}
        self._columns: dict[str, dict[str, int]] = {}  # model version -> feature name -> column
        self.decoder = PredictionDecoder(schema_fingerprint(load_schema("PredictionEvent")),
                                         schema_fingerprint(load_schema("PredictionEvent", version=2)))
        self.decoder.decode([b""])  # load (or compile) the decoder now rather than on the first batch

    def model(self, name: str, version: str) -> RegisteredModel:
        """The registered model, loaded on first sight (new versions need no restart).
        Raises ModelNotFound (not registered) or ModelUnavailable (registered, but its
        files or its explainer fail: quarantined, tried again after a back-off)."""
        key = (name, version)
        if key not in self._models:
            held = self.quarantine.reason(key)
            if held is not None:
                raise ModelUnavailable(held)
            try:
                model = self.registry.load(name, version)
                if self.prepare is not None:
                    self.prepare(model)
            except ModelNotFound:
                raise
            except Exception as exc:  # corrupt files, an objective the kernel cannot explain, a bug
                reason = f"{name}@{version} cannot be served: {type(exc).__name__}: {exc}"
                self.quarantine.hold(key, reason)
                log.warning("%s (quarantined; tried again later)", printable(reason, REASON_LIMIT))
                raise ModelUnavailable(reason) from None
            self.install(model)
        return self._models[key]

    def install(self, model: RegisteredModel) -> None:
        """Know `model` before its first event (its explainer was prepared already)."""
        key = (model.name, model.version)
        if key not in self._models:
            self.quarantine.release(key)
            self._columns[model.version] = model.feature_index()
            self._models[key] = model

    def split(self, inbound: Inbound, stratum_key: str = "",
              now_ms: int | None = None) -> tuple[list[ModelBatch], list[DeadLetterRecord]]:
        """(valid events per model version, in order of first appearance; dead letters in arrival order).
        `now_ms` is the reference for event times of messages without a broker timestamp."""
        decoded = self.decoder.decode(inbound.values, stratum_key)
        self._load_models(inbound, decoded, stratum_key)
        self._check_classes(decoded)
        dead = self._slow_path(inbound, decoded, stratum_key)
        dead += self._check_times(inbound, decoded, now_ms)
        if len(dead) > 1:
            dead.sort(key=lambda letter: letter[0])
        dead = [letter for _, letter in dead]
        ok = np.flatnonzero(decoded.status == OK)
        slots = decoded.slot[ok]
        present, first = np.unique(slots, return_index=True)
        batches = []
        for slot in present[np.argsort(first)].tolist():
            index = ok if len(present) == 1 else ok[slots == slot]
            model = self.decoder.models[slot]
            whole = len(index) == len(inbound)
            if whole:  # the usual case: the whole batch
                pick = lambda column: column
            else:
                pick = lambda column: [column[i] for i in index.tolist()]
            batches.append(ModelBatch(
                model, index, pick(decoded.prediction_ids), pick(decoded.decisions), pick(decoded.strata),
                decoded.event_time[index], decoded.score[index], decoded.threshold[index], decoded.priority[index],
                decoded.decision_class[index], decoded.X if whole and decoded.X.shape[1] == len(model.feature_names)
                else decoded.X[index, :len(model.feature_names)],
                None if inbound.timestamps is None else inbound.timestamps[index]))
        return batches, dead

    def _check_classes(self, decoded: Decoded) -> None:
        """Events whose decision_class does not fit their model go the slow path (BAD_CLASS)."""
        given = np.flatnonzero((decoded.status == OK) & (decoded.decision_class != NO_CLASS))
        if not len(given):
            return
        outputs = np.asarray([m.kind.n_outputs for m in self.decoder.models])[decoded.slot[given]]
        classes = decoded.decision_class[given]
        decoded.status[given[(outputs == 1) | (classes >= outputs)]] = SLOW

    def _load_models(self, inbound: Inbound, decoded: Decoded, stratum_key: str) -> None:
        """Events naming a model the decoder has no table for: load it (if it is
        registered) and decode those events again; the rest take the slow path."""
        waiting = np.flatnonzero(decoded.status == NO_MODEL)
        if not len(waiting):
            return
        added = False
        for name_start, name_stop, version_start, version_stop in {tuple(r) for r in decoded.model_at[waiting].tolist()}:
            try:
                name = decoded.data[name_start:name_stop].decode("utf-8")
                version = decoded.data[version_start:version_stop].decode("utf-8")
                self.decoder.add_model(name, version, self.model(name, version))
                added = True
            except (UnicodeDecodeError, ModelNotFound, ModelUnavailable):
                continue  # the slow path says what is wrong
        if added:
            again = self.decoder.decode([inbound.values[i] for i in waiting.tolist()], stratum_key)
            if again.X.shape[1] > decoded.X.shape[1]:
                wider = np.full((len(inbound), again.X.shape[1]), np.nan)
                wider[:, :decoded.X.shape[1]] = decoded.X
                decoded.X = wider
            decoded.X[waiting, :again.X.shape[1]] = again.X
            for column in ("status", "slot", "event_time", "score", "threshold", "priority", "decision_class"):
                getattr(decoded, column)[waiting] = getattr(again, column)
            for column in ("prediction_ids", "decisions", "strata"):
                target, source = getattr(decoded, column), getattr(again, column)
                for k, i in enumerate(waiting.tolist()):
                    target[i] = source[k]
        decoded.status[decoded.status == NO_MODEL] = SLOW

    def _check_times(self, inbound: Inbound, decoded: Decoded, now_ms: int | None) -> list[tuple[int, DeadLetterRecord]]:
        """Events whose time is implausible or too far ahead: (position, dead letter) each; they leave the batch."""
        if self.event_time is None:
            return []
        ok = np.flatnonzero(decoded.status == OK)
        if not len(ok):
            return []
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        broker = inbound.timestamps[ok] if inbound.timestamps is not None else np.full(len(ok), -1)
        bad = self.event_time.bad(decoded.event_time[ok], broker, now_ms)
        dead = []
        for k in np.flatnonzero(bad).tolist():
            i = int(ok[k])
            reason = self.event_time.reason(int(decoded.event_time[i]), int(broker[k]), now_ms)
            dead.append((i, DeadLetterRecord("EVENT_TIME", reason, inbound.message(i), decoded.prediction_ids[i])))
            decoded.status[i] = SLOW  # out of the batch (the slow path has run already)
        return dead

    def _slow_path(self, inbound: Inbound, decoded: Decoded, stratum_key: str) -> list[tuple[int, DeadLetterRecord]]:
        """Full decode and check of the events the batch decoder left alone: (position, dead letter) each."""
        dead: list[tuple[int, DeadLetterRecord]] = []
        for i in np.flatnonzero(decoded.status == SLOW).tolist():
            message = inbound.message(i)
            try:
                record = self.codec.decode(message.value)
            except DecodeError as exc:
                dead.append((i, DeadLetterRecord("UNDECODABLE", f"{exc}. The producer must write PredictionEvent "
                                                 "(schemas/PredictionEvent.avsc) in Avro single-object encoding.",
                                                 message)))
                continue
            problem = self._check(record)
            if problem:
                dead.append((i, DeadLetterRecord(*problem, message, record["prediction_id"].strip() or None)))
                continue
            name, version = record["model_name"], record["model_version"]
            model = self.model(name, version)
            slot = self.decoder.add_model(name, version, model)
            if decoded.X.shape[1] < len(model.feature_names):
                wider = np.full((len(inbound), len(model.feature_names)), np.nan)
                wider[:, :decoded.X.shape[1]] = decoded.X
                decoded.X = wider
            index = self._columns[model.version]
            decoded.X[i] = np.nan
            for feature, value in record["features"].items():
                if value is not None:
                    decoded.X[i, index[feature]] = value
            decoded.status[i], decoded.slot[i] = OK, slot
            decoded.event_time[i], decoded.score[i] = record["event_time"], record["score"]
            decoded.threshold[i], decoded.priority[i] = record["threshold"], record["priority"]
            decoded.decision_class[i] = NO_CLASS if record["decision_class"] is None else record["decision_class"]
            decoded.prediction_ids[i], decoded.decisions[i] = record["prediction_id"], record["decision"]
            decoded.strata[i] = record["segment"].get(stratum_key, "") if stratum_key else ""
        return dead

    def _check(self, record: dict) -> tuple[str, str] | None:
        """(reason_code, reason) for the first problem found, or None."""
        if not record["prediction_id"].strip():
            return "MISSING_ID", "prediction_id is empty; every event needs a unique id (it is the idempotency key)"
        name, version = record["model_name"], record["model_version"]
        try:
            model = self.model(name, version)
        except ModelNotFound as exc:
            code = "UNKNOWN_MODEL" if name not in self.registry.models() else "UNKNOWN_VERSION"
            return code, f"{exc}. Register the model (whystream register) or fix model_name/model_version."
        except ModelUnavailable as exc:
            return "MODEL_UNAVAILABLE", (f"{exc}. Fix or re-register the version; its dead letters can be sent "
                                         "again with `whystream dlq replay --reason MODEL_UNAVAILABLE`.")
        columns = self._columns[model.version]
        unknown = [f for f in record["features"] if f not in columns]
        if unknown:
            return "UNKNOWN_FEATURE", (f"feature(s) {', '.join(sorted(unknown)[:5])} are not inputs of "
                                       f"{name}@{version}; send only the model's features")
        bad = [f for f, v in record["features"].items() if v is not None and not math.isfinite(v)]
        if bad:
            return "NON_FINITE_VALUE", (f"feature(s) {', '.join(sorted(bad)[:5])} are NaN or infinite; "
                                        "send null for a missing value")
        for field_name in ("score", "threshold"):
            if not math.isfinite(record[field_name]):
                return "BAD_FIELD", f"{field_name} is {record[field_name]}; it must be a finite number"
        cls, outputs = record.get("decision_class"), model.kind.n_outputs
        if cls is not None and outputs == 1:
            return "BAD_CLASS", (f"decision_class is {cls}, but {name}@{version} ({model.kind.objective}) has a "
                                 "single output; send null")
        if cls is not None and not 0 <= cls < outputs:
            return "BAD_CLASS", (f"decision_class is {cls}; {name}@{version} has classes 0..{outputs - 1} "
                                 "(null: the highest-scoring class)")
        return None
