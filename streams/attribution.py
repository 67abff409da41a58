"""Attributions for a batch of rows: shared cache -> live TreeSHAP -> fallback.

- cache: an identical feature vector of the same model version was explained
  before (by any worker); its exact attributions come from Redis (the engine
  reads and writes them with its other Redis calls; this module packs them).
- live: exact path-dependent TreeSHAP (whystream/treeshap/), multi-core.
- fallback: Saabas path attribution (whystream/models/saabas.py). Cheap and
  additive, but not SHAP; used when live computation raises or the batch's
  latency budget is spent. Rows without a latency target (reservoir samples:
  `started=None`) never take it for latency: they wait for the live result.

Multiclass models: each row is explained for one class, its `classes` entry
(the PredictionEvent's decision_class, else the class with the highest raw
score, `ModelExplainer.classes`), by that class's kernel; the cache key holds
the class (`cache_keys`). Single-output models take the path they always took.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np

from whystream.models.explainer import ModelExplainer
from whystream.models.registry import RegisteredModel

log = logging.getLogger("whystream.attribution")
CHUNK = 512  # rows per live computation; the latency budget is checked between chunks


@dataclass
class Attributions:
    shap: np.ndarray  # [n, F], raw-score space
    raw: np.ndarray  # [n] raw model output (of the row's class)
    source: np.ndarray  # [n] "LIVE" | "CACHE" | "FALLBACK"
    base_value: np.ndarray  # [n] the SHAP base value (of the row's class)
    classes: np.ndarray  # [n] int64 explained class; NO_CLASS for single-output models

    def cache_entries(self, model_version: str, feature_hashes: list[bytes]) -> list[tuple[str, bytes, bytes]]:
        """(model_version, feature hash, packed attributions) of each row computed live: for
        the shared cache (RedisStore.record). `feature_hashes` holds one per row."""
        live = np.flatnonzero(self.source == "LIVE")
        if not len(live):
            return []
        packed = _packed(self.shap[live], self.raw[live])
        return [(model_version, feature_hashes[i], row.tobytes()) for i, row in zip(live.tolist(), packed)]


def _packed(shap: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Per row, what the cache holds: its attributions, then its raw score, as float64 (one row
    of the result's bytes each: `_unpack` reads them back)."""
    n = len(shap)
    return np.hstack((shap.reshape(n, -1), np.reshape(raw, (n, -1)))).astype(np.float64)


def _unpack(payload: bytes, n_features: int) -> tuple[np.ndarray, float] | None:
    values = np.frombuffer(payload, dtype=np.float64)
    if values.size != n_features + 1:
        return None  # written by an incompatible version; treat as a miss
    return values[:-1], float(values[-1])


def cache_keys(explainer: ModelExplainer, X: np.ndarray, classes: np.ndarray) -> list[bytes]:
    """Shared-cache keys of rows X: the feature vector, and for multiclass models the class."""
    return feature_hash(X if explainer.n_outputs == 1 else np.column_stack([X, classes]))


def feature_hash(rows: np.ndarray) -> list[bytes]:
    """A stable 16-byte blake2b digest per float64 row of a 2-D array. Every NaN
    hashes alike, and -0.0 like 0.0, so equal feature vectors share a key."""
    X = np.asarray(rows, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"feature_hash expects a 2-D array of rows, got shape {X.shape}")
    X = np.where(np.isnan(X), np.nan, X) + 0.0  # canonical NaN; -0.0 + 0.0 == +0.0
    data = np.ascontiguousarray(X, dtype="<f8")
    view, width = memoryview(data.tobytes()), data.shape[1] * 8
    blake2b = hashlib.blake2b
    return [blake2b(view[i * width:(i + 1) * width], digest_size=16).digest() for i in range(data.shape[0])]


class Attributor:
    """Explains rows of any registered model version, loading explainers on first sight."""

    def __init__(self, latency_budget_ms: float = 2000.0):
        self.latency_budget_ms = latency_budget_ms
        self._explainers: dict[str, ModelExplainer] = {}

    def has(self, model: RegisteredModel) -> bool:
        return model.version in self._explainers

    def install(self, model: RegisteredModel, explainer: ModelExplainer) -> None:
        """Use `explainer`, built elsewhere (another thread), for `model`; one built already stays."""
        self._explainers.setdefault(model.version, explainer)

    def explainer(self, model: RegisteredModel) -> ModelExplainer:
        if model.version not in self._explainers:
            self._explainers[model.version] = ModelExplainer(model)
        return self._explainers[model.version]

    def attribute(self, model: RegisteredModel, X: np.ndarray, started: float | None,
                  cached: list[bytes | None], classes: np.ndarray) -> Attributions:
        """Attributions for the rows of X, each for its entry of `classes` (ModelExplainer.classes):
        from `cached` (a payload from the shared cache, or None, per row) where it holds one,
        else computed. `started` (monotonic s) is when the batch began; None: no latency
        budget (always live, unless live raises)."""
        loading = time.monotonic()
        explainer = self.explainer(model)
        if started is not None:
            started += time.monotonic() - loading  # compiling a new version's kernel is not the batch's fault
        n, F = X.shape
        if len(cached) != n:
            raise ValueError(f"{n} rows but {len(cached)} cache answers")
        shap_values = np.zeros((n, F))
        raw = np.zeros(n)
        source = np.full(n, "LIVE", dtype=object)
        missing = []
        for i, payload in enumerate(cached):
            unpacked = _unpack(payload, F) if payload else None
            if unpacked is None:
                missing.append(i)
            else:
                shap_values[i], raw[i] = unpacked
                source[i] = "CACHE"
        for begin in range(0, len(missing), CHUNK):
            rows = np.asarray(missing[begin:begin + CHUNK])
            over_budget = started is not None and (time.monotonic() - started) * 1000 > self.latency_budget_ms
            values = None
            if not over_budget:
                try:
                    values, raw_chunk = explainer.live(X[rows], classes[rows])
                except Exception:  # a kernel bug must degrade the stream, not stop it
                    log.exception("live TreeSHAP failed for %s@%s; using the fallback", model.name, model.version)
            if values is None:
                values, raw_chunk = explainer.fallback(X[rows], classes[rows])
                source[rows] = "FALLBACK"
            shap_values[rows], raw[rows] = values, raw_chunk
        return Attributions(shap_values, raw, source, explainer.base_values(classes), classes)

    def attribute_some_in_time(self, model: RegisteredModel, X: np.ndarray, in_time: np.ndarray,
                               started: float, cached: list[bytes | None], classes: np.ndarray) -> Attributions:
        """`attribute`, with the latency budget from `started` for the rows where `in_time` holds
        (priority decisions: past the budget, the fallback, which their `source` says) and none for
        the others (reservoir samples wait for the live result)."""
        if in_time.all() or not in_time.any():
            return self.attribute(model, X, started if in_time.all() else None, cached, classes)
        parts = [(rows, self.attribute(model, X[rows], when, [cached[i] for i in rows.tolist()], classes[rows]))
                 for rows, when in ((np.flatnonzero(in_time), started), (np.flatnonzero(~in_time), None))]
        shap, raw, base = np.zeros(X.shape), np.zeros(len(X)), np.zeros(len(X))
        source = np.empty(len(X), dtype=object)
        for rows, part in parts:
            shap[rows], raw[rows], source[rows], base[rows] = part.shap, part.raw, part.source, part.base_value
        return Attributions(shap, raw, source, base, classes)
