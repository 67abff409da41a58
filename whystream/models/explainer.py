"""Live and fallback attribution of one model version: exact TreeSHAP kernels compiled
once, one per output, and Saabas path attribution for when live computation cannot be
waited for; multiclass rows each explained for one class."""

from __future__ import annotations

import numpy as np

from whystream.models.objectives import producer_score
from whystream.models.registry import RegisteredModel
from whystream.models.saabas import SaabasExplainer
from whystream.treeshap import TreeShap
from whystream.wire.prediction_decoder import NO_CLASS


class ModelExplainer:
    """Live and fallback attribution for one model version (kernels compiled once, one per output)."""

    def __init__(self, model: RegisteredModel):
        self.model = model
        self.n_outputs = model.kind.n_outputs
        multi = self.n_outputs > 1
        self.kernels = [TreeShap(model.booster, class_index=k if multi else None) for k in range(self.n_outputs)]
        for kernel in self.kernels:
            kernel.warm_up()
        self.kernel = self.kernels[0]
        self.expected = np.asarray([k.expected_value for k in self.kernels])
        self._approximate: list[SaabasExplainer] | None = None

    def classes(self, X: np.ndarray, requested: np.ndarray) -> np.ndarray:
        """The class each row is explained for: `requested` where given, else the highest raw
        score; NO_CLASS throughout for a single-output model."""
        if self.n_outputs == 1:
            return np.full(len(X), NO_CLASS, dtype=np.int64)
        classes = np.array(requested, dtype=np.int64)
        missing = classes == NO_CLASS
        if missing.any():
            raw = np.column_stack([k.raw_score(X[missing]) for k in self.kernels])
            classes[missing] = np.argmax(raw, axis=1)
        return classes

    def live(self, X: np.ndarray, classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(SHAP values, raw scores) of rows X, each for its class (None: the highest-scoring)."""
        if self.n_outputs == 1:
            return self.kernel.shap_values(X), self.kernel.raw_score(X)
        if classes is None:
            classes = self.classes(X, np.full(len(X), NO_CLASS))
        shap, raw = np.zeros(X.shape), np.zeros(len(X))
        for k in np.unique(classes).tolist():
            rows = np.flatnonzero(classes == k)
            shap[rows], raw[rows] = self.kernels[k].shap_values(X[rows]), self.kernels[k].raw_score(X[rows])
        return shap, raw

    def fallback(self, X: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._approximate is None:  # built on first need: only a degraded worker pays for it
            multi = self.n_outputs > 1
            self._approximate = [SaabasExplainer(self.model.booster, class_index=k if multi else None)
                                 for k in range(self.n_outputs)]
        raw = np.asarray(self.model.booster.predict(X, raw_score=True)).reshape(len(X), self.n_outputs)
        if self.n_outputs == 1:
            return self._approximate[0].shap_values(X), raw[:, 0]
        shap = np.zeros(X.shape)
        for k in np.unique(classes).tolist():
            rows = np.flatnonzero(classes == k)
            shap[rows] = self._approximate[k].shap_values(X[rows])
        return shap, raw[np.arange(len(X)), classes]

    def scores(self, X: np.ndarray, raw: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """The model's own score of rows X in the producer's score space, from the raw scores of
        their classes (`raw`, as explained); softmax needs every class's raw score, computed here."""
        kind = self.model.kind
        if kind.output_space == "softmax_logit":
            return producer_score(kind, np.column_stack([k.raw_score(X) for k in self.kernels]), classes)
        return producer_score(kind, raw)

    def base_values(self, classes: np.ndarray) -> np.ndarray:
        if self.n_outputs == 1:
            return np.full(len(classes), self.expected[0])
        return self.expected[classes]
