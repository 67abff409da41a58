"""whystream/models/families: a file is read by the family its content says (not its name),
what no family reads is one line (a pickle: refused by the sklearn family, never unpickled),
and LightGBM random forests (`boosting=rf`) are registered with their averaging folded into the leaves: the same predictions, and SHAP
values that are LightGBM's pred_contrib divided by the number of iterations."""

from __future__ import annotations

import pickle

import lightgbm as lgb
import numpy as np
import pytest

from support.cli import cli, write_csv
from support.objective_models import CATEGORICAL, FEATURES, N_CLASSES, make_rows, target
from whystream.errors import WhystreamError
from whystream.models import families
from whystream.models.registry import ModelRegistry
from whystream.treeshap import TreeShap

pytestmark = pytest.mark.integration  # models trained, registries written, the CLI run


def forest(objective: str) -> lgb.Booster:
    X = make_rows(1500, 0)
    params = dict(objective=objective, boosting="rf", bagging_fraction=0.6, bagging_freq=1, num_leaves=15,
                  min_data_per_group=5, cat_smooth=1, verbose=-1, num_threads=1, seed=0)
    if objective == "multiclass":
        params["num_class"] = N_CLASSES
    data = lgb.Dataset(X, target(objective, X, 1), feature_name=FEATURES, categorical_feature=CATEGORICAL)
    return lgb.train(params, data, num_boost_round=12)


@pytest.mark.parametrize("objective", ["binary", "multiclass"])
def test_a_lightgbm_random_forest_is_registered_with_its_mean_folded_in(tmp_path, objective):
    booster = forest(objective)
    booster.save_model(str(tmp_path / "forest.txt"))
    reference = write_csv(tmp_path / "ref.csv", make_rows(1000, 21))
    code, out = cli(tmp_path / "r", "register", "rf", str(tmp_path / "forest.txt"), "--reference", str(reference),
                    *(["--threshold", "0.5"] if objective == "binary" else []))
    assert code == 0 and "boosting=rf" in out, out
    model = ModelRegistry(tmp_path / "r").load("rf")
    assert "average_output" not in model.booster.model_to_string() and model.family == "lightgbm"
    X = make_rows(400, 5)
    K = model.kind.n_outputs
    # the same predictions; the raw score is now the mean those predictions transform
    np.testing.assert_allclose(model.booster.predict(X), booster.predict(X), rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.booster.predict(X, raw_score=True),
                               booster.predict(X, raw_score=True) / 12, rtol=0, atol=1e-12)
    contrib = booster.predict(X, pred_contrib=True).reshape(len(X), K, -1) / 12
    for k in range(K):
        kernel = TreeShap(model.booster, class_index=k if K > 1 else None)
        np.testing.assert_allclose(kernel.shap_values(X), contrib[:, k, :-1], rtol=0, atol=1e-12)
        assert kernel.expected_value == pytest.approx(contrib[0, k, -1], abs=1e-12)


def test_the_family_is_told_by_content_not_by_name(tmp_path):
    booster = forest("binary")
    (tmp_path / "model.json").write_text(booster.model_to_string())  # LightGBM text named .json
    assert families.load(str(tmp_path / "model.json")).family == "lightgbm"
    (tmp_path / "model.txt").write_bytes(pickle.dumps({"a": 1}))
    (tmp_path / "empty.txt").write_bytes(b"")
    for name, words in (("model.txt", "a pickle, which whystream never loads"), ("empty.txt", "the file is empty"),
                        ("nothing.txt", "no such file")):
        with pytest.raises(WhystreamError, match=words) as raised:
            families.load(str(tmp_path / name))
        assert "\n" not in str(raised.value)
