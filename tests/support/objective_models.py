"""Small LightGBM models of every objective with tree output, trained on data with
missing values and a categorical feature: what tests of bring-your-own models use."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

FEATURES = ["merchant", "amount", "tenure", "utilisation", "velocity", "zero_heavy"]
CATEGORICAL = ["merchant"]
OBJECTIVES = ["binary", "regression", "regression_l1", "huber", "fair", "quantile", "mape", "poisson", "gamma",
              "tweedie", "cross_entropy", "cross_entropy_lambda", "multiclass", "multiclassova", "lambdarank",
              "rank_xendcg"]
N_CLASSES = 3


def make_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES)))
    X[:, 0] = rng.integers(0, 9, n)
    X[:, 5] = np.where(rng.random(n) < 0.4, 0.0, rng.exponential(1.0, n))
    X[rng.random(X.shape) < 0.1] = np.nan
    return X


def _signal(X: np.ndarray) -> np.ndarray:
    x = np.nan_to_num(X)
    return x[:, 1] + (x[:, 0] % 3 == 1) - 0.7 * x[:, 2] + np.isnan(X[:, 3]) + 0.5 * x[:, 4] * x[:, 3] + 0.3 * x[:, 5]


def target(objective: str, X: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = _signal(X) + 0.3 * rng.normal(size=len(X))
    if objective == "binary":
        return (s > np.median(s)).astype(float)
    if objective in ("cross_entropy", "cross_entropy_lambda"):
        return 1 / (1 + np.exp(-s))
    if objective in ("multiclass", "multiclassova"):
        return np.digitize(s, np.quantile(s, [1 / 3, 2 / 3])).astype(float)
    if objective in ("poisson", "tweedie"):
        return rng.poisson(np.exp(0.4 * s)).astype(float)
    if objective in ("gamma", "mape"):
        return np.exp(0.3 * s) + 0.1
    if objective in ("lambdarank", "rank_xendcg"):
        return np.digitize(s, np.quantile(s, [0.5, 0.8, 0.95])).astype(float)
    return 10 * s + 100


def train(objective: str, n: int = 2000, rounds: int = 15, seed: int = 0) -> lgb.Booster:
    X = make_rows(n, seed)
    params = dict(objective=objective, num_leaves=15, learning_rate=0.2, min_data_in_leaf=10, min_data_per_group=5,
                  cat_smooth=1, verbose=-1, num_threads=1, seed=seed, deterministic=True)
    if objective in ("multiclass", "multiclassova"):
        params["num_class"] = N_CLASSES
    data = lgb.Dataset(X, target(objective, X, seed + 1), feature_name=FEATURES, categorical_feature=CATEGORICAL,
                       group=[20] * (n // 20) if objective in ("lambdarank", "rank_xendcg") else None)
    return lgb.train(params, data, num_boost_round=rounds)
