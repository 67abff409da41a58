"""Model registries with versions a worker cannot serve, written behind `register`'s back."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import lightgbm as lgb
import numpy as np
import pytest


@pytest.fixture
def broken_registry(engine_settings, small_model):
    """engine_settings whose registry (a copy of the small model's) also holds a corrupt version
    of `fraud` and a random-forest model `forest` that the TreeSHAP kernel does not explain."""
    root = engine_settings.registry
    bad = root / small_model.name / "badbadbadbad"
    shutil.copytree(small_model.path, bad)
    meta = json.loads((bad / "meta.json").read_text())
    (bad / "meta.json").write_text(json.dumps({**meta, "version": bad.name}))
    (bad / "model.txt").write_text("tree\nthis is not a LightGBM model\n")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, len(small_model.feature_names)))
    forest = lgb.train({"boosting": "rf", "bagging_freq": 1, "bagging_fraction": 0.7, "num_leaves": 7,
                        "objective": "binary", "verbose": -1},
                       lgb.Dataset(X, (X[:, 0] > 0).astype(int), feature_name=small_model.feature_names),
                       num_boost_round=5)
    # A random forest as LightGBM wrote it (registration folds its averaging), put in behind its back.
    rf_dir = root / "forest" / "f0f0f0f0f0f0"
    shutil.copytree(small_model.path, rf_dir)
    (rf_dir / "meta.json").write_text(json.dumps({**meta, "name": "forest", "version": rf_dir.name}))
    (rf_dir / "model.txt").write_text(forest.model_to_string())
    (root / "forest" / "LATEST").write_text(rf_dir.name + "\n")
    rf = SimpleNamespace(name="forest", version=rf_dir.name)
    return engine_settings, bad.name, rf
