"""Priority decisions: the ones always explained, with inclusion weight 1.

`priority_reasons` picks them, vectorised over a batch, and names why with the
ExplanationEvent's SamplingReason symbols: ADVERSE (an adverse decision, compared
case-folded: streams/labels.py), FLAGGED (the producer's priority flag),
NEAR_THRESHOLD (a score within the band of the threshold) and NEW_VERSION (among
the first events of a model version). Everything else is a reservoir candidate
(RESERVOIR, streams/sampling/reservoirs.py).

>>> import numpy as np
>>> priority_reasons(np.array(["DECLINE", "approve", "approve", "approve"], dtype=object),
...                  np.array([0.9, 0.51, 0.2, 0.1]), np.full(4, 0.5), np.array([False, False, False, True]),
...                  np.zeros(4, dtype=bool), SamplingConfig()).tolist()
['ADVERSE', 'NEAR_THRESHOLD', None, 'FLAGGED']
"""

from __future__ import annotations

import numpy as np

from whystream.streams.sampling.config import SamplingConfig

# Reason codes: the ExplanationEvent SamplingReason symbols.
ADVERSE = "ADVERSE"
NEAR_THRESHOLD = "NEAR_THRESHOLD"
FLAGGED = "FLAGGED"
NEW_VERSION = "NEW_VERSION"
RESERVOIR = "RESERVOIR"

# Slack on the threshold band so that e.g. score 0.52, threshold 0.50, band 0.02
# counts as near despite 0.52 - 0.50 being 0.020000000000000018 in binary.
_BAND_SLACK = 1e-12


def priority_reasons(decision: np.ndarray, score: np.ndarray, threshold: np.ndarray, flagged: np.ndarray,
                     new_version: np.ndarray, config: SamplingConfig, *, band_scale: float = 1.0,
                     near: bool = True) -> np.ndarray:
    """Per event the first matching priority reason, in the order ADVERSE,
    FLAGGED, NEAR_THRESHOLD, NEW_VERSION; None for a candidate (object array).

    Near threshold means |score - threshold| <= band * band_scale: the scale is 1
    for models whose scores are probabilities (binary, multiclass: the decision
    class's probability) and the reference predictions' interquartile range for
    the others (a regression's score is in its target's units); `near=False`
    (a model registered without a threshold) leaves NEAR_THRESHOLD out."""
    labels = decision.tolist() if isinstance(decision, np.ndarray) else list(decision)
    out = np.full(len(labels), None, dtype=object)
    # Lowest precedence first: later assignments overwrite earlier ones.
    out[np.asarray(new_version, dtype=bool)] = NEW_VERSION
    if near:
        gap = np.abs(np.asarray(score, dtype=np.float64) - np.asarray(threshold, dtype=np.float64))
        out[gap <= (config.near_threshold_band + _BAND_SLACK) * band_scale] = NEAR_THRESHOLD
    out[np.asarray(flagged, dtype=bool)] = FLAGGED
    if config.adverse_decisions:
        # A batch holds few distinct labels: each is case-folded once, each event only looked up.
        adverse = {label: label.casefold() in config.adverse_decisions for label in dict.fromkeys(labels)}
        out[np.fromiter(map(adverse.__getitem__, labels), dtype=bool, count=len(labels))] = ADVERSE
    return out
