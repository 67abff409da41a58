"""The input side of a model version's reference: what its inputs and scores looked
like on the held-out rows it was registered with, so that input drift can be told
from attribution drift ("the data moved" from "the reasons moved").

At registration (`ModelRegistry.register`) the reference rows give, per feature,
value bin edges near the deciles of the values present (never inside an atom, as
the SHAP bins: `registry.shap_bin_edges`), the proportions of present values per
bin and the share of rows where the feature is missing; and for the model's score
on those rows (its prediction: a probability for binary models, the top class's
for multiclass ones) bin edges, proportions, the mean, and the share on the
adverse side of the threshold (the reference decline rate). They are kept in
`<version>/input_reference.npz`, beside `reference.npz`.

Versions registered before this file was written have none: input drift is then
unavailable for them (`whystream register` of the same model with its reference
rows adds the file; the version, a content hash, stays the same). The sink copies
the reference into ClickHouse (`input_reference`, `score_reference`; migration
030), where the materialized views bin the stream's values and scores on it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whystream.models.reference import shap_bin_edges

log = logging.getLogger("whystream.clickhouse")

FILE = "input_reference.npz"
N_BINS = 10
MISSING_REASON = ("no input reference: version registered before whystream kept reference value histograms "
                  "(run `whystream register` again with its reference rows to add one)")


@dataclass(frozen=True)
class InputReference:
    value_edges: np.ndarray  # [F, B+1], -inf .. +inf
    value_hist: np.ndarray  # [F, B] proportions of the rows with a value (0 throughout if always missing)
    missing: np.ndarray  # [F] share of rows where the feature is missing
    score_edges: np.ndarray  # [B+1]
    score_hist: np.ndarray  # [B]
    score_mean: float
    decline: float  # share of rows on the adverse side of the threshold; NaN without a threshold
    n: int


def value_bin_edges(column: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Edges [n_bins+1] for one column's present (non-NaN) values, atom-aware like the SHAP bins."""
    present = column[~np.isnan(column)]
    if present.size == 0:  # always missing: any edges do, no value will fall in them
        return np.concatenate([[-np.inf], np.arange(1, n_bins, dtype=float), [np.inf]])
    return shap_bin_edges(present.reshape(-1, 1), n_bins)[0]


def proportions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of `values` per bin [edge k, edge k+1) (the views' binning); zeros for no values."""
    counts = np.bincount(np.searchsorted(edges, values, side="right") - 1, minlength=len(edges) - 1)
    return counts / values.size if values.size else counts.astype(float)


def reference_scores(booster, X: np.ndarray) -> np.ndarray:
    """The score a producer reports for each row: the prediction (multiclass: the top class's)."""
    predicted = np.asarray(booster.predict(X), dtype=float)
    return predicted.max(axis=1) if predicted.ndim == 2 else predicted


def compute(booster, X: np.ndarray, threshold: float | None, adverse_direction: int = 1) -> InputReference:
    """The input reference of reference rows X [m, F] (NaN = missing) for `booster`'s scores."""
    X = np.asarray(X, dtype=float)
    edges = np.stack([value_bin_edges(X[:, j]) for j in range(X.shape[1])])
    hist = np.stack([proportions(X[~np.isnan(X[:, j]), j], edges[j]) for j in range(X.shape[1])])
    scores = reference_scores(booster, X)
    score_edges = value_bin_edges(scores)
    if threshold is None or not np.isfinite(threshold):
        decline = float("nan")
    else:
        decline = float(np.mean(scores >= threshold if adverse_direction > 0 else scores <= threshold))
    return InputReference(edges, hist, np.isnan(X).mean(axis=0), score_edges, proportions(scores, score_edges),
                          float(scores.mean()), decline, len(X))


def save(version_dir: Path, ref: InputReference) -> None:
    """Write `<version_dir>/input_reference.npz` atomically (a reader never sees half of it)."""
    fd, tmp = tempfile.mkstemp(dir=version_dir, prefix=".input_reference-", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, value_edges=ref.value_edges, value_hist=ref.value_hist, missing=ref.missing,
                 score_edges=ref.score_edges, score_hist=ref.score_hist,
                 summary=np.array([ref.score_mean, ref.decline, ref.n], dtype=float))
        os.chmod(tmp, 0o644)
        os.replace(tmp, version_dir / FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(version_dir: Path) -> InputReference | None:
    """The version's input reference, or None (registered before it was kept)."""
    path = Path(version_dir) / FILE
    if not path.is_file():
        return None
    with np.load(path) as f:
        mean, decline, n = (float(v) for v in f["summary"])
        return InputReference(f["value_edges"], f["value_hist"], f["missing"], f["score_edges"], f["score_hist"],
                              mean, decline, int(n))
