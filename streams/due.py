"""What a batch hands the explainer: the decisions due now per model version (`Due`),
the reservoir candidates of a batch as items made only when a reservoir keeps one
(`Candidates`), and which class of a multi-output model each decision is explained for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from whystream.models.registry import RegisteredModel
from whystream.streams.validation import ModelBatch
from whystream.wire.prediction_decoder import NO_CLASS


@dataclass
class Due:
    """Decisions to explain now, from one model version."""

    model: RegisteredModel
    records: list[dict] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    strata: list[str] = field(default_factory=list)

    def add(self, record: dict, row: np.ndarray, reason: str, weight: float, stratum: str) -> None:
        self.records.append(record)
        self.rows.append(row)
        self.reasons.append(reason)
        self.weights.append(weight)
        self.strata.append(stratum)


def requested_classes(explainer, records: list[dict]) -> np.ndarray:
    """The decision_class of each record (NO_CLASS for null); not read for single-output models."""
    if explainer.n_outputs == 1:
        return np.full(len(records), NO_CLASS, dtype=np.int64)
    return np.fromiter((r.get("decision_class", NO_CLASS) for r in records), dtype=np.int64, count=len(records))


class Candidates:
    """Reservoir items of a batch's candidates, made only when a reservoir keeps
    one: (model, record, feature row, stratum). The row is a copy, so a held
    item does not keep its batch's feature matrix alive."""

    def __init__(self, batches: list[ModelBatch], which: np.ndarray, rows: np.ndarray):
        self.batches, self.which, self.rows = batches, which, rows

    def subset(self, sel: np.ndarray) -> "Candidates":
        return Candidates(self.batches, self.which[sel], self.rows[sel])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        batch, j = self.batches[self.which[i]], int(self.rows[i])
        return batch.model, batch.record(j), batch.X[j].copy(), batch.strata[j]
