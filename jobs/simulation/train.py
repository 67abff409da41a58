"""Train the fraud model on generated transactions and register it."""

from __future__ import annotations

import os
import time

import lightgbm as lgb
import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from scipy.stats import rankdata

from whystream.jobs.simulation.generator import (
    CATEGORICAL_FEATURES,
    FEATURE_NAMES,
    TransactionGenerator,
)
from whystream.models.registry import ModelRegistry, RegisteredModel

DECLINE_RATE = 0.02  # share of transactions the threshold declines
N_REFERENCE = 5_000  # held-out rows whose SHAP values become the drift baseline


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half)."""
    ranks = rankdata(score)
    pos = y == 1
    n_pos, n_neg = pos.sum(), len(y) - pos.sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_model(
    registry: ModelRegistry,
    name: str = "fraud",
    n_train: int = 200_000,
    seed: int = 7,
    num_trees: int = 300,
    num_leaves: int = 31,
    progress: bool = True,
    redact: tuple[str, ...] = (),
) -> RegisteredModel:
    """Train a LightGBM fraud classifier on generated data and register it.

    Events 0 .. n_train-1 train it; the next max(10_000, n_train // 4) are held
    out to measure AUC, set the threshold (about DECLINE_RATE of scores at or
    above it) and provide the SHAP reference sample.
    """
    n_valid = max(10_000, n_train // 4)
    params = {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": num_leaves,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.8,
        "lambda_l2": 1.0,
        "seed": seed,
        "deterministic": True,  # same data and thread count -> same trees -> same version hash
        "force_col_wise": True,
        "num_threads": os.cpu_count() or 1,
        "verbose": -1,
    }
    columns = [
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
    ]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        step = bar.add_task("generating transactions", total=None)
        gen = TransactionGenerator(seed)
        train, valid = gen.sample(n_train), gen.sample(n_valid, start=n_train)
        bar.update(step, total=1, completed=1)

        step = bar.add_task("training trees", total=num_trees)
        started = time.perf_counter()
        data = lgb.Dataset(train.X, train.y, feature_name=FEATURE_NAMES, categorical_feature=CATEGORICAL_FEATURES)
        booster = lgb.train(
            params, data, num_boost_round=num_trees,
            callbacks=[lambda env: bar.update(step, completed=env.iteration + 1)],
        )
        train_seconds = time.perf_counter() - started

        step = bar.add_task("scoring and registering", total=None)
        score = booster.predict(valid.X)
        threshold = float(np.quantile(score, 1 - DECLINE_RATE))
        declined = score >= threshold
        metrics = {
            "auc": round(auc(valid.y, score), 5),
            "decline_rate": round(float(declined.mean()), 5),
            "precision_at_threshold": round(float(valid.y[declined].mean()), 5),
            "recall_at_threshold": round(float(declined[valid.y == 1].mean()), 5),
            "fraud_rate_train": round(float(train.y.mean()), 5),
            "n_train": n_train,
            "n_valid": n_valid,
            "seed": seed,
            "num_trees": num_trees,
            "num_leaves": num_leaves,
            "train_seconds": round(train_seconds, 2),
        }
        model = registry.register(name, booster, threshold, valid.X[:N_REFERENCE], metrics, redact=redact)
        bar.update(step, total=1, completed=1)
    if progress:
        Console().print(
            f"registered [bold]{name}[/] version [bold]{model.version}[/]: AUC {metrics['auc']:.3f}, "
            f"threshold {threshold:.4f} declines {metrics['decline_rate']:.1%} "
            f"(precision {metrics['precision_at_threshold']:.1%}, recall {metrics['recall_at_threshold']:.1%})"
        )
    return model
