"""A model version's SHAP reference, computed once at registration: the SHAP values of
held-out rows, the drift-histogram bin edges near their deciles, the reference
histogram, the unit of the near-threshold band, and the kernel's self-check against
LightGBM (raw scores and additivity) that every version passes before it is stored,
with, for a model translated from another library, the check against that library's
own predictions and SHAP values."""

from __future__ import annotations

import re

import lightgbm as lgb
import numpy as np

from whystream.errors import UnsupportedModel
from whystream.models.objectives import ModelKind
from whystream.treeshap import TreeShap

N_BINS = 10  # drift-histogram bins per feature
ATOM_TOLERANCE = 1e-9  # SHAP values this close (relative to the feature's scale) are one value for binning
SELF_CHECK_ROWS = 500  # reference rows whose SHAP values are checked at registration (raw scores: all rows)
SELF_CHECK_TOLERANCE = 1e-6


def shap_bin_edges(shap: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Per-feature bin edges [F, n_bins+1] near the deciles of `shap` [m, F].

    Each inner edge lies halfway between two distinct reference values, never
    on one: many features have a few SHAP values shared by most rows (binary
    inputs, features the model barely uses), and an edge sitting on such an atom
    would move the whole atom across it at the slightest change, a false drift.
    Values closer than ATOM_TOLERANCE (relative to the feature's largest |SHAP|)
    count as one: the same atom comes out of the summation a few ulps apart
    from row to row (measured: 294 and 12 rows of one atom 2.5e-21 apart), and
    an edge between such twins splits the atom as surely as one on it (it made
    PSI 0.15 for a binary feature in a drift-free stream).
    Features with fewer distinct gaps than bins get the spare edges above their
    range (bins empty in the reference). The outer edges are -inf and +inf.
    """
    n_features = shap.shape[1]
    edges = np.empty((n_features, n_bins + 1))
    deciles = np.linspace(0, 1, n_bins + 1)[1:-1]
    for j in range(n_features):
        values = np.unique(shap[:, j])
        tolerance = max(ATOM_TOLERANCE * float(np.max(np.abs(values))), np.finfo(float).tiny)
        starts = np.flatnonzero(np.diff(values) > tolerance) + 1  # where a new atom (or value) begins
        lows, highs = values[np.r_[0, starts]], values[np.r_[starts - 1, len(values) - 1]]
        above = np.searchsorted(lows, np.quantile(shap[:, j], deciles), side="right")
        above = above[(above > 0) & (above < len(lows))]
        inner = np.unique((highs[above - 1] + lows[above]) / 2)
        top = values[-1]
        step = max(abs(top), 1.0) * 1e-6
        spare = top + step * np.arange(1, n_bins - len(inner))
        edges[j] = np.concatenate([[-np.inf], inner, spare, [np.inf]])
    return edges


def shap_histogram(shap: np.ndarray, bin_edges: np.ndarray) -> np.ndarray:
    """Counts [F, B] of SHAP values [m, F] per bin; bin k is [edge k, edge k+1)."""
    n_features, n_bins = bin_edges.shape[0], bin_edges.shape[1] - 1
    counts = np.empty((n_features, n_bins), dtype=np.int64)
    for j in range(n_features):
        bins = np.searchsorted(bin_edges[j], shap[:, j], side="right") - 1
        counts[j] = np.bincount(bins, minlength=n_bins)
    return counts


def shap_sample(X: np.ndarray) -> np.ndarray:
    """The reference rows whose SHAP values registration checks: SELF_CHECK_ROWS of them, spread
    evenly over the file (raw scores are checked on every row; SHAP is what costs: the library's
    own TreeSHAP runs ~30 rows/s on a deep 300-tree forest)."""
    if len(X) <= SELF_CHECK_ROWS:
        return X
    return X[np.linspace(0, len(X) - 1, SELF_CHECK_ROWS).round().astype(int)]


def check_kernel(booster: lgb.Booster, kind: ModelKind, X: np.ndarray) -> None:
    """Build the kernel of every output and check it against LightGBM: raw scores equal on
    every row of X, SHAP values add up to them on `shap_sample(X)`. UnsupportedModel if not."""
    raw = np.asarray(booster.predict(X, raw_score=True)).reshape(len(X), kind.n_outputs)
    sample = shap_sample(X)
    raw_sample = raw if sample is X else np.asarray(booster.predict(sample, raw_score=True)).reshape(
        len(sample), kind.n_outputs)
    for k in range(kind.n_outputs):
        kernel = TreeShap(booster, class_index=k if kind.multiclass else None)
        ours = kernel.raw_score(X)
        scale = np.maximum(1.0, np.abs(raw[:, k]))
        worst = float(np.max(np.abs(ours - raw[:, k]) / scale, initial=0.0))
        if not worst <= SELF_CHECK_TOLERANCE:
            raise UnsupportedModel(f"the TreeSHAP kernel's raw score differs from LightGBM's by {worst:.3g} "
                                   f"(output {k}); this model cannot be explained exactly")
        additive = kernel.shap_values(sample).sum(axis=1) + kernel.expected_value
        worst = float(np.max(np.abs(additive - raw_sample[:, k]) / np.maximum(1.0, np.abs(raw_sample[:, k])),
                             initial=0.0))
        if not worst <= SELF_CHECK_TOLERANCE:
            raise UnsupportedModel(f"TreeSHAP attributions miss the raw score by {worst:.3g} (output {k}); "
                                   "this model cannot be explained exactly")


def check_own(booster: lgb.Booster, kind: ModelKind, translated, X: np.ndarray) -> None:
    """Check a translated model against its library's own (`translated.own`,
    whystream/models/families/): raw scores of every row of X (LightGBM's of the
    translation and the kernel's), SHAP values and base value (the bias column) of
    `shap_sample(X)`. UnsupportedModel, naming the worst difference, if not.

    Per row, the tolerance is SELF_CHECK_TOLERANCE * max(1, |raw|), plus, for a library that
    adds in float32 (XGBoost: each of a row's T leaf values, and each tree's SHAP values, is
    added to a float32 running sum, which rounds by up to 2^-24 of its magnitude every time),
    (T + 1) * 2^-24 * M: the error bound of T + 1 float32 additions whose partial sums stay
    within M, the row's sum of |leaf values| (raw scores) or of |contributions| (SHAP).
    """
    own_raw, _ = translated.own(X, contributions=False)
    sample = shap_sample(X)
    sample_raw, own_contrib = translated.own(sample)
    lgb_raw = np.asarray(booster.predict(X, raw_score=True)).reshape(len(X), kind.n_outputs)
    leaves = _leaf_magnitudes(booster, X, kind.n_outputs) if translated.own_roundoff else None
    for k in range(kind.n_outputs):
        kernel = TreeShap(booster, class_index=k if kind.multiclass else None)
        floor = (kernel.n_trees + 1) * translated.own_roundoff
        raw_tolerance = SELF_CHECK_TOLERANCE * np.maximum(1.0, np.abs(own_raw[:, k])) + (
            floor * np.maximum(1.0, leaves[:, k]) if leaves is not None else 0.0)
        shap_tolerance = (SELF_CHECK_TOLERANCE * np.maximum(1.0, np.abs(sample_raw[:, k]))
                          + floor * np.maximum(1.0, np.abs(own_contrib[:, k]).sum(axis=1)))
        ours = np.column_stack([kernel.shap_values(sample), np.full(len(sample), kernel.expected_value)])
        for what, mine, theirs, tolerance in (
                ("raw scores", lgb_raw[:, k], own_raw[:, k], raw_tolerance),
                ("raw scores", kernel.raw_score(X), own_raw[:, k], raw_tolerance),
                ("SHAP values", ours, own_contrib[:, k], shap_tolerance)):
            diff = np.abs(mine - theirs).reshape(len(theirs), -1)
            excess = diff.max(axis=1) / tolerance
            if not float(np.max(excess, initial=0.0)) <= 1.0:
                row = int(np.nanargmax(np.where(np.isnan(excess), np.inf, excess)))
                where = "reference row" if what == "raw scores" else "checked reference row"
                raise UnsupportedModel(
                    f"the translation's {what} differ from {translated.library}'s own by {float(diff[row].max()):.3g} "
                    f"on {where} {row + 1} (output {k}; tolerance {tolerance[row]:.3g}); this model cannot be "
                    "explained exactly")


def _leaf_magnitudes(booster: lgb.Booster, X: np.ndarray, K: int) -> np.ndarray:
    """[n, K]: each row's sum of |leaf value| over output k's trees (LightGBM's layout: tree i
    is output i % K), read from the model text's leaf_value lines."""
    values = [np.abs(np.array(line.split(), dtype=np.float64))
              for line in re.findall(r"^leaf_value=(.*)$", booster.model_to_string(), re.MULTILINE)]
    leaves = np.asarray(booster.predict(X, pred_leaf=True)).reshape(len(X), -1).astype(int)
    out = np.zeros((len(X), K))
    for t, table in enumerate(values):
        out[:, t % K] += table[leaves[:, t]]
    return out


def reference_shap(booster: lgb.Booster, kind: ModelKind, X: np.ndarray) -> np.ndarray:
    """SHAP values [m, F] of rows X; of a multiclass model, each row's highest-scoring class
    (what an event without decision_class is explained for)."""
    F = booster.num_feature()
    contrib = np.asarray(booster.predict(X, pred_contrib=True))
    if not kind.multiclass:
        return contrib[:, :-1]
    contrib = contrib.reshape(len(X), kind.n_outputs, F + 1)
    top = np.argmax(np.asarray(booster.predict(X, raw_score=True)).reshape(len(X), kind.n_outputs), axis=1)
    return contrib[np.arange(len(X)), top, :-1]


def score_scale(booster: lgb.Booster, kind: ModelKind, X: np.ndarray) -> float:
    """Unit of the near-threshold band: 1 for probabilities, else the interquartile range of
    the reference rows' predictions (so a band of 0.02 means 2% of the typical spread)."""
    if kind.probability:
        return 1.0
    q1, q3 = np.quantile(np.asarray(booster.predict(X)).ravel(), [0.25, 0.75])
    return float(q3 - q1) if q3 > q1 else 1.0
