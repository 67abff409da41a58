"""Small XGBoost models of each objective whystream translates, trained on the rows of
support.objective_models (missing values, `merchant` a native categorical feature)."""

from __future__ import annotations

import numpy as np
import xgboost as xgb

from support.objective_models import FEATURES, N_CLASSES, make_rows, target

TYPES = ["c" if f == "merchant" else "q" for f in FEATURES]
# name: (XGBoost parameters, the support.objective_models target it is trained on, LightGBM objective)
MODELS = {
    "binary": (dict(objective="binary:logistic", max_cat_to_onehot=1), "binary", "binary"),
    "regression": (dict(objective="reg:squarederror"), "regression", "regression"),
    "poisson": (dict(objective="count:poisson"), "poisson", "poisson"),
    "tweedie": (dict(objective="reg:tweedie", tweedie_variance_power=1.4), "tweedie", "tweedie"),
    "gamma": (dict(objective="reg:gamma"), "gamma", "gamma"),
    "softprob": (dict(objective="multi:softprob", num_class=N_CLASSES), "multiclass", "multiclass"),
    "softmax": (dict(objective="multi:softmax", num_class=N_CLASSES, num_parallel_tree=2), "multiclass",
                "multiclass"),
    "dart": (dict(objective="binary:logistic", booster="dart", rate_drop=0.3, skip_drop=0.0, one_drop=1),
             "binary", "binary"),
}


def train(name: str, n: int = 1500, rounds: int = 12, seed: int = 0, **extra) -> xgb.Booster:
    params, objective, _ = MODELS[name]
    X = make_rows(n, seed)
    data = xgb.DMatrix(X, target(objective, X, seed + 1), feature_names=FEATURES, feature_types=TYPES,
                       enable_categorical=True)
    return xgb.train({"max_depth": 4, "eta": 0.3, "nthread": 1, "seed": seed, **params, **extra}, data, rounds)


def own(booster: xgb.Booster, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """XGBoost's raw margins [n, K] and pred_contribs [n, K, F + 1] of rows X."""
    dm = xgb.DMatrix(X, missing=np.nan, feature_names=FEATURES, feature_types=TYPES, enable_categorical=True)
    raw = np.asarray(booster.predict(dm, output_margin=True), dtype=float).reshape(len(X), -1)
    contrib = np.asarray(booster.predict(dm, pred_contribs=True), dtype=float)
    return raw, contrib.reshape(len(X), raw.shape[1], -1)


__all__ = ["MODELS", "TYPES", "make_rows", "own", "train"]
