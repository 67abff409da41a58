"""Is the producer's score this model version's score of these features?

A worker explains the raw score the registered version computes from the
event's features. If the producer scored with another version, or sent
features transformed after scoring (a unit change, a rescaled column), its
`score` is not that model's: the explanation would then explain a score the
producer never used. So for every explained decision the worker maps the raw
score it has from the kernel to the producer's score space
(`objectives.producer_score`, as LightGBM's predict() does) and compares:

    mismatch  <=>  |model_score - score| > tolerance(objective) * max(1, |model_score|)

an absolute tolerance for probabilities (scores in [0, 1]) and a relative one
beyond 1 (counts, amounts, ranks). The default 1e-3 lets through a producer
that rounds to three decimals or sends float32 scores; the issue's rescaled
feed (`amount` x 4) was off by up to 0.49.

WHYSTREAM_SCORE_TOLERANCE sets it: one number for every objective, or
`objective=number` pairs separated by commas (`binary=0.01,poisson=0.05`, with
`*=number` for the rest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from whystream.errors import ConfigError

TOLERANCE_VAR = "WHYSTREAM_SCORE_TOLERANCE"
DEFAULT_TOLERANCE = 1e-3


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ConfigError(TOLERANCE_VAR, f"{text!r} is not a non-negative number")
    return value


@dataclass(frozen=True)
class ScoreTolerance:
    default: float = DEFAULT_TOLERANCE
    by_objective: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "ScoreTolerance":
        """`0.01` or `binary=0.01,poisson=0.05,*=0.001`.

        >>> ScoreTolerance.parse("binary=0.01,*=0.002").of("binary"), ScoreTolerance.parse("0.05").of("poisson")
        (0.01, 0.05)
        """
        text = text.strip()
        if not text:
            return cls()
        if "=" not in text:
            return cls(_number(text))
        pairs = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if not name.strip() or not value.strip():
                raise ConfigError(TOLERANCE_VAR, f"{part!r} is not objective=number")
            pairs[name.strip()] = _number(value.strip())
        return cls(pairs.pop("*", DEFAULT_TOLERANCE), pairs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "ScoreTolerance":
        return cls.parse(environ.get(TOLERANCE_VAR, ""))

    def of(self, objective: str) -> float:
        return self.by_objective.get(objective, self.default)

    def mismatches(self, objective: str, model_score: np.ndarray, score: np.ndarray) -> np.ndarray:
        """Per row: the producer's score is off the model's by more than the tolerance
        (a model score that is not finite is no evidence either way: not a mismatch)."""
        model_score = np.asarray(model_score, dtype=np.float64)
        score = np.asarray(score, dtype=np.float64)
        allowed = self.of(objective) * np.maximum(1.0, np.abs(model_score))
        with np.errstate(invalid="ignore"):
            return np.isfinite(model_score) & ~(np.abs(model_score - score) <= allowed)


def checked_scores(tolerance: ScoreTolerance, model, explainer, X: np.ndarray, attributions,
                   records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(the model's own score of each explained row, whether the producer's is off it): from the
    raw scores the rows were explained with (`attributions`), by `explainer` (ModelExplainer)."""
    model_scores = explainer.scores(X, attributions.raw, attributions.classes)
    scores = np.fromiter((r["score"] for r in records), dtype=np.float64, count=len(records))
    return model_scores, tolerance.mismatches(model.kind.objective, model_scores, scores)
