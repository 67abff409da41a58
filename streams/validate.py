"""Decode and check raw prediction messages; turn the good ones into feature
matrices and the bad ones into dead letters with a reason a person can act on.

Rules: the bytes decode as a PredictionEvent; prediction_id is non-empty; the
model name and version are registered; every feature name belongs to the model
(absent names and nulls are missing values); every value, the score and the
threshold are finite (NaN and infinities are rejected: missing is null).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from whystream.errors import DecodeError, ModelNotFound
from whystream.jobs.registry import ModelRegistry, RegisteredModel


@dataclass(frozen=True)
class RawMessage:
    """One Kafka message as the engine sees it, whatever the transport."""

    value: bytes
    key: bytes | None
    topic: str
    partition: int
    offset: int


@dataclass
class DeadLetterRecord:
    reason_code: str
    reason: str
    message: RawMessage
    prediction_id: str | None = None

    def to_avro(self, worker: str) -> dict:
        m = self.message
        return {"reason_code": self.reason_code, "reason": self.reason, "original": m.value,
                "original_key": m.key, "topic": m.topic, "partition": m.partition, "offset": m.offset,
                "prediction_id": self.prediction_id, "failed_at": int(time.time() * 1000), "worker": worker}


@dataclass
class ModelBatch:
    """The valid events of one model version in a batch, as parallel arrays."""

    model: RegisteredModel
    messages: list[RawMessage] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)

    def X(self) -> np.ndarray:
        return np.asarray(self.rows, dtype=np.float64).reshape(len(self.rows), len(self.model.feature_names))


class Validator:
    def __init__(self, registry: ModelRegistry, codec):
        self.registry = registry
        self.codec = codec
        self._models: dict[tuple[str, str], RegisteredModel] = {}
        self._columns: dict[str, dict[str, int]] = {}  # model version -> feature name -> column

    def model(self, name: str, version: str) -> RegisteredModel:
        """The registered model, loaded on first sight (new versions need no restart)."""
        key = (name, version)
        if key not in self._models:
            model = self.registry.load(name, version)
            self._columns[model.version] = model.feature_index()
            self._models[key] = model
        return self._models[key]

    def split(self, messages: list[RawMessage]) -> tuple[dict[tuple[str, str], ModelBatch], list[DeadLetterRecord]]:
        batches: dict[tuple[str, str], ModelBatch] = {}
        dead: list[DeadLetterRecord] = []
        for message in messages:
            try:
                record = self.codec.decode(message.value)
            except DecodeError as exc:
                dead.append(DeadLetterRecord("UNDECODABLE", f"{exc}. The producer must write PredictionEvent "
                                             "(schemas/PredictionEvent.avsc) in Avro single-object encoding.", message))
                continue
            problem = self._check(record)
            if problem:
                dead.append(DeadLetterRecord(*problem, message, record["prediction_id"].strip() or None))
                continue
            model = self.model(record["model_name"], record["model_version"])
            batch = batches.setdefault((model.name, model.version), ModelBatch(model))
            index = self._columns[model.version]
            row = [math.nan] * len(index)
            for name, value in record["features"].items():
                if value is not None:
                    row[index[name]] = value
            batch.messages.append(message)
            batch.records.append(record)
            batch.rows.append(row)
        return batches, dead

    def _check(self, record: dict) -> tuple[str, str] | None:
        """(reason_code, reason) for the first problem found, or None."""
        if not record["prediction_id"].strip():
            return "MISSING_ID", "prediction_id is empty; every event needs a unique id (it is the idempotency key)"
        name, version = record["model_name"], record["model_version"]
        try:
            model = self.model(name, version)
        except ModelNotFound as exc:
            code = "UNKNOWN_MODEL" if name not in self.registry.models() else "UNKNOWN_VERSION"
            return code, f"{exc}. Register the model (whystream train) or fix model_name/model_version."
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
        return None
