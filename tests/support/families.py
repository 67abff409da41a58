"""Checks shared by the model-family tests: a translation against the library's own
predictions and SHAP, rows that sit exactly on (and a float beside) each split, and a
refusal that is one line."""

from __future__ import annotations

import numpy as np
import pytest

from whystream.errors import WhystreamError
from whystream.models.families import Translated
from whystream.treeshap import TreeShap


def exactness(translated: Translated, X: np.ndarray) -> tuple[float, float]:
    """(largest relative difference of LightGBM's raw prediction of the translation from the
    library's, largest absolute difference of whystream's TreeShap from the library's SHAP,
    base value included), over every output."""
    raw, contrib = translated.own(X)
    n, K = raw.shape
    ours = translated.booster.predict(X, raw_score=True).reshape(n, K)
    pred = float(np.max(np.abs(ours - raw) / np.maximum(1.0, np.abs(raw))))
    shap = 0.0
    for k in range(K):
        ts = TreeShap(translated.booster, class_index=k if K > 1 else None)
        phi = ts.shap_values(X)
        assert np.abs(contrib[:, k, :-1]).max() > 0  # a real comparison, not of zeros
        shap = max(shap, float(np.abs(phi - contrib[:, k, :-1]).max()),
                   float(np.abs(ts.expected_value - contrib[:, k, -1]).max()))
    return pred, shap


def on_the_splits(base: np.ndarray, points: dict[int, set[float]], limit: int = 1200) -> np.ndarray:
    """Copies of the rows `base` with one feature set to each of its split points and the
    doubles and float32s just beside it, plus NaN."""
    rows = []
    for f, values in sorted(points.items()):
        near = set()
        for v in (v for v in values if np.isfinite(v)):
            v32 = float(np.float32(v))
            with np.errstate(over="ignore"):
                near |= {v, float(np.nextafter(v, np.inf)), float(np.nextafter(v, -np.inf)), v32,
                         float(np.nextafter(np.float32(v), np.float32(np.inf))),
                         float(np.nextafter(np.float32(v), np.float32(-np.inf)))}
        big = float(np.finfo(np.float32).max)
        near = {v for v in near if abs(v) <= big} | {float("nan")}  # the libraries refuse what float32 cannot hold
        for i, v in enumerate(sorted(near, key=lambda x: (np.isnan(x), x))):
            row = base[i % len(base)].copy()
            row[f] = v
            rows.append(row)
    rows = np.asarray(rows)
    if len(rows) > limit:
        rows = rows[np.random.default_rng(0).choice(len(rows), limit, replace=False)]
    return np.vstack([base, rows])


def refusal(family, path) -> str:
    """What `family.load(path)` refuses it with: one line, starting with the file's name."""
    with pytest.raises(WhystreamError) as caught:
        family.load(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"model file {path}: ")
    return message
