"""Helpers for the ClickHouse tests (test_clickhouse, test_sink, test_drift):
a database of its own per test on the session stack's chDB directory, and
seeded synthetic explanation streams with known inclusion weights."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import numpy as np
import pytest

from whystream.jobs.clickhouse import connection as ch
from whystream.models.reference import shap_bin_edges, shap_histogram

MINUTE_MS = 60_000


@pytest.fixture
def db(stack):
    """(client, database): a fresh, migrated database on the stack's chDB directory
    (one chDB directory per process, so tests are isolated by database)."""
    database = f"t_{uuid.uuid4().hex[:10]}"
    client = ch.connect(stack, database)
    yield client, database
    client.command(f"DROP DATABASE IF EXISTS {database} SYNC")


def base_minute(hours_ago: float = 2.0) -> int:
    """A whole minute of the recent past, in epoch ms (inside every TTL)."""
    t = int(time.time() * 1000 - hours_ago * 3_600_000)
    return t - t % MINUTE_MS


@dataclass
class SyntheticModel:
    """What register_reference needs of a RegisteredModel."""

    name: str
    version: str
    feature_names: list[str]
    reference_shap: np.ndarray
    bin_edges: np.ndarray
    reference_hist: np.ndarray
    threshold: float = 0.5

    @property
    def scales(self) -> np.ndarray:
        return np.arange(1, len(self.feature_names) + 1) * 0.3


def synthetic_model(n_features: int = 6, seed: int = 0, name: str = "synth", version: str | None = None,
                    n_reference: int = 5000) -> SyntheticModel:
    rng = np.random.default_rng(seed)
    names = [f"feature_{j}" for j in range(n_features)]
    model = SyntheticModel(name, version or f"v{seed}", names, np.zeros((0, n_features)), np.zeros(0), np.zeros(0))
    shap = population_shap(rng, n_reference, model.scales)
    edges = shap_bin_edges(shap)
    model.reference_shap, model.bin_edges = shap, edges
    model.reference_hist = shap_histogram(shap, edges) / len(shap)
    return model


def population_shap(rng, n: int, scales: np.ndarray, drift: dict[int, tuple[float, float]] | None = None) -> np.ndarray:
    """SHAP values [n, F]: feature j ~ scale_j * Laplace(0, 1); drift maps a
    feature to (multiplier, shift) applied to its values."""
    shap = rng.laplace(size=(n, len(scales))) * scales
    for j, (mult, shift) in (drift or {}).items():
        shap[:, j] = shap[:, j] * mult + shift
    return shap


def sample_minute(rng, shap: np.ndarray, priority_share: float = 0.03, k: int = 200):
    """Sample one minute of a population the way the workers do: the top
    `priority_share` by raw score always (weight 1), a uniform sample of k of
    the rest (weight n_rest / k). Returns (row indices, weights, reasons)."""
    raw = shap.sum(axis=1)
    n_priority = int(len(raw) * priority_share)
    order = np.argsort(-raw, kind="stable")
    priority, rest = order[:n_priority], order[n_priority:]
    k = min(k, len(rest))
    chosen = rng.choice(rest, size=k, replace=False)
    idx = np.concatenate([priority, chosen])
    weights = np.concatenate([np.ones(len(priority)), np.full(k, len(rest) / k)])
    reasons = ["ADVERSE"] * len(priority) + ["RESERVOIR"] * k
    return idx, weights, reasons


def events_for(model: SyntheticModel, shap: np.ndarray, weights, reasons, minute_ms: int, prefix: str,
               rng=None, sources=None) -> list[dict]:
    """ExplanationEvent records (as decoded: ms timestamps, enum strings)."""
    rng = rng or np.random.default_rng(0)
    out = []
    for i in range(len(shap)):
        event_time = minute_ms + int(rng.integers(0, MINUTE_MS))
        latency = float(rng.gamma(2.0, 40.0))
        row = shap[i]
        out.append({
            "prediction_id": f"{prefix}-{i}",
            "model_name": model.name, "model_version": model.version,
            "explainer": "whystream-treeshap", "explainer_version": "test",
            "event_time": event_time, "explained_at": event_time + int(latency),
            "output_space": "raw_margin", "base_value": -3.0, "raw_score": float(-3.0 + row.sum()),
            "attributions": [{"feature": f, "value": float(j), "shap": float(row[j])}
                             for j, f in enumerate(model.feature_names)],
            "top_reasons": [{"feature": model.feature_names[j], "value": None, "shap": float(row[j])}
                            for j in np.argsort(-row)[:2]],
            "score": 0.1, "decision": "approve" if reasons[i] == "RESERVOIR" else "decline", "threshold": 0.5,
            "sampling_reason": reasons[i], "inclusion_weight": float(weights[i]), "stratum": "US",
            "source": sources[i] if sources is not None else "LIVE", "redis_available": True,
            "latency_ms": latency, "worker": "test",
        })
    return out


def stream(model: SyntheticModel, first_minute_ms: int, minutes: int, per_minute: int = 2000, seed: int = 1,
           drift: dict[int, tuple[float, float]] | None = None, k: int = 200, prefix: str = "p"):
    """A sampled explanation stream over `minutes` minutes; returns (events, population shap per minute)."""
    rng = np.random.default_rng(seed)
    events, populations = [], []
    for m in range(minutes):
        pop = population_shap(rng, per_minute, model.scales, drift)
        idx, w, reasons = sample_minute(rng, pop, k=k)
        events += events_for(model, pop[idx], w, reasons, first_minute_ms + m * MINUTE_MS, f"{prefix}{m}", rng)
        populations.append(pop)
    return events, populations


def tiny_registered_model(root, n_features: int = 5, seed: int = 3):
    """A real RegisteredModel from a real ModelRegistry, fast: a few LightGBM
    trees on random data (the session's small_model trains for seconds)."""
    import lightgbm as lgb

    from whystream.models.registry import ModelRegistry

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(2000, n_features))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=2000) > 1).astype(int)
    data = lgb.Dataset(X, y, feature_name=[f"x{j}" for j in range(n_features)])
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": seed,
                         "deterministic": True, "num_threads": 1}, data, num_boost_round=10)
    return ModelRegistry(root).register("tiny", booster, 0.5, X[:1000])
