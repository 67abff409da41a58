"""What a LightGBM model's raw score means, read from its text (`model.txt`).

Every objective with tree output is explained the same way, on the raw score:
TreeSHAP attributions add up to it (base_value + sum(shap) == raw_score).
What differs is the space that raw score lives in, which the ExplanationEvent
names in `output_space`, and how a producer's score relates to it:

| objective (model.txt `objective=`)                   | output_space    | prediction from raw r        |
|------------------------------------------------------|-----------------|------------------------------|
| binary, cross_entropy (xentropy)                     | `raw_margin`    | sigmoid: log-odds            |
| multiclassova (one tree per class and iteration)     | `raw_margin`    | sigmoid of the class's r     |
| multiclass (one tree per class and iteration)        | `softmax_logit` | softmax over the classes' r  |
| regression (l2), regression_l1, huber, fair,         | `identity`      | r                            |
|   quantile, mape                                     |                 |                              |
| poisson, gamma, tweedie                              | `log_link`      | exp(r)                       |
| cross_entropy_lambda (xentlambda)                    | `softplus_link` | log(1 + exp(r))              |
| lambdarank, rank_xendcg, a custom objective          | `raw_score`     | r                            |
| (none: a classifier forest, whystream/models/families/) | `probability` | r, the class's probability   |

A classifier forest (scikit-learn's RandomForest / ExtraTrees) averages class fractions:
its translation writes no objective and its raw score IS the probability, so its
loader overrides the output space with `probability` (`Translated.output_space`): a
binary forest needs a threshold like a binary booster, and the near-threshold band is
in probability units.

Multi-output models (multiclass, multiclassova) have num_tree_per_iteration
K > 1: tree i belongs to class i % K (LightGBM's GBDT layout), and one event is
explained for one class (whystream/treeshap/, class_index).

`producer_score(kind, raw)` maps raw scores to the producer's score space as
LightGBM's `predict()` does (its objective's ConvertOutput): sigmoid scaled by
the objective's `sigmoid:` parameter for binary and multiclassova, softmax for
multiclass (all K raw scores needed), exp for the log links, log1p(exp) for
cross_entropy_lambda, identity otherwise. The worker checks the producer's
score against it (whystream/models/score_check.py).

Not explainable exactly, refused at registration (and dead-lettered at serve
time should such a version reach the registry by other means): linear trees
(`linear_tree`: leaves hold linear models, not constants) and a model text that
still says `average_output` (a random forest's raw score is a mean over trees, which
the kernel does not divide by: registration folds the mean into the leaf values,
whystream/models/families/lightgbm.py, and stores that).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from whystream.errors import UnsupportedModel

_SPACES = {
    "binary": "raw_margin", "cross_entropy": "raw_margin", "multiclassova": "raw_margin",
    "multiclass": "softmax_logit",
    "regression": "identity", "regression_l1": "identity", "huber": "identity", "fair": "identity",
    "quantile": "identity", "mape": "identity",
    "poisson": "log_link", "gamma": "log_link", "tweedie": "log_link",
    "cross_entropy_lambda": "softplus_link",
    "lambdarank": "raw_score", "rank_xendcg": "raw_score", "custom": "raw_score",
}
PROBABILITY = frozenset({"binary", "cross_entropy", "multiclass", "multiclassova"})  # scores in [0, 1]
OUTPUT_SPACES = frozenset(_SPACES.values()) | {"probability"}  # probability: classifier forests' override


@dataclass(frozen=True)
class ModelKind:
    """What the raw score of a LightGBM model is, from its text."""

    objective: str  # LightGBM's objective name; "custom" when the model text names none
    n_outputs: int  # raw scores per row: num_tree_per_iteration (K classes, or 1)
    output_space: str
    sigmoid: float = 1.0  # LightGBM's `sigmoid:` parameter of binary / multiclassova (predict: 1/(1+exp(-s*r)))

    @property
    def multiclass(self) -> bool:
        return self.n_outputs > 1

    @property
    def probability(self) -> bool:
        """Whether the producer's score is a probability (a threshold band is absolute then)."""
        return self.objective in PROBABILITY or self.output_space == "probability"

    @property
    def needs_threshold(self) -> bool:
        """A binary classifier: its decisions are taken against a probability threshold."""
        return self.objective == "binary" or (self.output_space == "probability" and not self.multiclass)


def model_kind(model_str: str) -> ModelKind:
    """The ModelKind of `model_str` (booster.model_to_string()); UnsupportedModel, with
    one line saying why, for what the kernel cannot explain exactly."""
    head = model_str[:max(model_str.find("\nTree="), 0)] or model_str
    fields = dict(line.split("=", 1) for line in head.split("\n") if "=" in line)
    objective = (fields.get("objective") or "custom").split()[0]
    if objective not in _SPACES:
        raise UnsupportedModel(f"objective {objective!r} is not one whystream knows how to explain")
    if re.search(r"^is_linear=1$", model_str, re.MULTILINE) or re.search(r"^\[linear_tree: 1\]$", model_str,
                                                                         re.MULTILINE):
        raise UnsupportedModel("linear trees (linear_tree=true): leaves hold linear models, which exact "
                               "TreeSHAP for constant leaves cannot explain; retrain without linear_tree")
    if "\naverage_output\n" in head + "\n":
        raise UnsupportedModel("random forest (average_output) as LightGBM wrote it: the raw score is a mean "
                               "over trees, not a sum; `whystream register` folds the mean into the leaves")
    n_outputs = int(fields.get("num_tree_per_iteration", 1))
    parameters = dict(p.split(":", 1) for p in (fields.get("objective") or "").split()[1:] if ":" in p)
    return ModelKind(objective, n_outputs, _SPACES[objective], float(parameters.get("sigmoid", 1.0)))


def producer_score(kind: ModelKind, raw: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """The score LightGBM's predict() gives for raw scores `raw` ([n], or [n, K] for a
    multi-output model with `classes`, the class each row's score is of).

    >>> producer_score(ModelKind("binary", 1, "raw_margin"), np.array([0.0, 2.0])).round(4).tolist()
    [0.5, 0.8808]
    >>> producer_score(ModelKind("multiclass", 2, "softmax_logit"), np.array([[0.0, 0.0]]), np.array([1])).tolist()
    [0.5]
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 2:
        if kind.output_space == "softmax_logit":
            shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
            raw = shifted / shifted.sum(axis=1, keepdims=True)
            return raw[np.arange(len(raw)), classes]
        raw = raw[np.arange(len(raw)), classes]
    space = kind.output_space
    if space == "raw_margin":
        return 1.0 / (1.0 + np.exp(-kind.sigmoid * raw))
    if space == "log_link":
        return np.exp(raw)
    if space == "softplus_link":
        return np.logaddexp(0.0, raw)
    return raw
