"""The challenger's shadow: each explained decision of a champion, explained by its challenger too.

A version registered with `whystream register NAME ... --challenger-of NAME`
is announced on `models` as NAME's challenger (whystream/models/events.py). For every
decision of NAME's champion that a worker explains (any sampling reason), the
engine hands the rows it just explained to `Shadow.offer` and goes on: the
hand-over is a bounded queue, and when it is full the rows are dropped and
counted (`whystream_shadow_dropped`), so ingest never waits for the
challenger. A Faust agent (streams/control/plane.py) takes each hand-over and, on an
executor thread, `explain`s it with the challenger:

- the same feature values, re-ordered by name into the challenger's feature
  order (a feature the champion does not have is missing, NaN);
- the challenger's own raw score and score (its booster's prediction), its
  own threshold; exact live TreeSHAP, never the cache or the fallback, so
  base_value + sum(shap) == the challenger's raw score;
- published as ExplanationEvents with role CHALLENGER, champion_prediction_id
  set to the decision's prediction_id, prediction_id
  `<champion's prediction_id>~<challenger version>` (a row of its own in
  ClickHouse and in the dedup store) and keyed by the champion's
  prediction_id (the same partition as the champion's explanation).

Shadow explanations are at most once: a worker killed between the champion's
explanation and its shadow loses that shadow (the comparison counts decisions
both explained, so a lost shadow shrinks its sample, it does not bias it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from whystream.explanations.records import build_explanations
from whystream.models.events import ModelBook
from whystream.models.registry import RegisteredModel
from whystream.streams.attribution import Attributions
from whystream.streams.due import requested_classes
from whystream.treeshap import EXPLAINER_VERSION
from whystream.wire.prediction_decoder import NO_CLASS

log = logging.getLogger("whystream.shadow")
QUEUE_LIMIT = 64  # hand-overs (one per model version per batch) waiting for the challenger


@dataclass
class HandOver:
    champion: RegisteredModel
    challenger_version: str
    records: list[dict]
    X: np.ndarray
    reasons: list[str]
    weights: list[float]
    strata: list[str]


class Shadow:
    def __init__(self, engine, book: ModelBook, put):
        """`put(hand_over) -> bool` enqueues without waiting (False: the queue is full)."""
        self.engine, self.book, self.put = engine, book, put

    def offer(self, model: RegisteredModel, records, X, reasons, weights, strata) -> None:
        """Called on the ingest thread after the champion's explanations are produced: cheap, never blocks."""
        challenger = self.book.challenger_of(model.name, model.version)
        if challenger is None or not records:
            return
        if not self.put(HandOver(model, challenger, list(records), np.array(X, copy=True), list(reasons),
                                 list(weights), list(strata))):
            self.engine.metrics.shadow_dropped.inc(len(records))

    def explain(self, work: HandOver) -> list[tuple[bytes, bytes]]:
        """(key, encoded ExplanationEvent) of the challenger's explanation of each row."""
        engine = self.engine
        challenger = engine.registry.load(work.champion.name, work.challenger_version)
        explainer = engine.attributor.explainer(challenger)
        X = aligned(work.X, work.champion.feature_names, challenger.feature_names)
        classes = explainer.classes(X, requested_classes(explainer, work.records))
        shap, raw = explainer.live(X, classes)
        attributions = Attributions(shap, raw, np.full(len(X), "LIVE", dtype=object),
                                    explainer.base_values(classes), classes)
        score = own_scores(challenger, X, classes)
        threshold = challenger.threshold
        records = [{**r, "prediction_id": f"{r['prediction_id']}~{challenger.version}", "score": float(score[i]),
                    "threshold": float(threshold)} for i, r in enumerate(work.records)]
        events = build_explanations(challenger, records, X, attributions, work.reasons, work.weights, work.strata,
                                    adverse=engine.labels, explainer_version=EXPLAINER_VERSION,
                                    redis_available=engine.store.available, worker=engine.worker,
                                    redacted=engine.redacted(challenger), role="CHALLENGER",
                                    champion_prediction_ids=[r["prediction_id"] for r in work.records],
                                    model_scores=score)  # the challenger's own score: nothing to check
        return [(r["prediction_id"].encode(), engine.explanation_codec.encode(event))
                for r, event in zip(work.records, events)]


def aligned(X: np.ndarray, names: list[str], wanted: list[str]) -> np.ndarray:
    """Columns of X (named `names`) in the order `wanted`; NaN (missing) for a name X lacks."""
    index = {n: j for j, n in enumerate(names)}
    out = np.full((len(X), len(wanted)), np.nan)
    for k, name in enumerate(wanted):
        if name in index:
            out[:, k] = X[:, index[name]]
    return out


def own_scores(model: RegisteredModel, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The model's prediction (its score) for each row: of the explained class for multiclass models."""
    predicted = np.asarray(model.booster.predict(X))
    if predicted.ndim == 1:
        return predicted
    rows = np.arange(len(X))
    return predicted[rows, np.where(classes == NO_CLASS, np.argmax(predicted, axis=1), classes)]
