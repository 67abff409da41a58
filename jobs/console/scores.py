"""A decision's score in the model's output space and as a probability.

Explanations add up in the model's raw output space (`output_space`, named in
every ExplanationEvent: whystream/models/objectives.py): base value + sum of the
attributions = raw score. Producers decide on their own score (a probability for
classifiers) against a threshold in that score's space. To draw both on one
axis, the threshold is mapped into the raw space with the inverse of the
objective's link, and the raw score to a probability where the link gives one:

| output_space    | score from raw r     | threshold t in raw space | probability      |
|-----------------|----------------------|--------------------------|------------------|
| `raw_margin`    | sigmoid(r)           | logit(t)                 | sigmoid(r)       |
| `softmax_logit` | softmax over classes | (needs every class)      | the stored score |
| `identity`, `raw_score` | r            | t                        | none             |
| `log_link`      | exp(r)               | log(t)                   | none             |
| `softplus_link` | log(1 + exp(r))      | log(exp(t) - 1)          | none             |
| `probability`   | r                    | t                        | r                |

>>> round(raw_threshold(0.5, "raw_margin"), 6), round(probability(0.0, "raw_margin", 0.9), 3)
(0.0, 0.5)
>>> raw_threshold(0.5, "softmax_logit") is None, probability(1.2, "softmax_logit", 0.7)
(True, 0.7)
>>> raw_threshold(3.0, "identity"), probability(3.0, "identity", 3.0) is None
(3.0, True)
>>> raw_threshold(0.3, "probability"), probability(0.25, "probability", 0.25)
(0.3, 0.25)
"""

from __future__ import annotations

import math

PROBABILITY_SPACES = frozenset({"raw_margin", "softmax_logit", "probability"})


def raw_threshold(threshold: float | None, output_space: str) -> float | None:
    """The producer's threshold in the raw output space; None where the link cannot map it."""
    if threshold is None or not math.isfinite(threshold):
        return None
    t = float(threshold)
    if output_space == "raw_margin":
        return math.log(t / (1 - t)) if 0 < t < 1 else None
    if output_space in ("identity", "raw_score", "probability"):
        return t
    if output_space == "log_link":
        return math.log(t) if t > 0 else None
    if output_space == "softplus_link":
        return math.log(math.expm1(t)) if t > 0 else None
    return None  # softmax_logit: the class's raw score alone does not fix its probability


def probability(raw_score: float, output_space: str, score: float) -> float | None:
    """The decision's probability where its output space has one: sigmoid of the raw score
    (binary, one-vs-all), the stored score (softmax); None otherwise."""
    if output_space == "raw_margin":
        return 1 / (1 + math.exp(-raw_score)) if raw_score > -700 else 0.0
    if output_space == "softmax_logit":
        return float(score)
    if output_space == "probability":  # a classifier forest: the raw score is the probability
        return float(raw_score)
    return None
