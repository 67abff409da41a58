"""Every LightGBM objective with tree output is explained exactly: the kernel against
shap's TreeExplainer (<= 1e-6, per class for multiclass models), additivity against
LightGBM's raw score, on rows with missing values, categorical corner cases and
values LightGBM reads as zero; and what each objective's raw score is called."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import shap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import REPO
from support.objective_models import FEATURES, N_CLASSES, OBJECTIVES, make_rows, train
from whystream.errors import UnsupportedModel
from whystream.models.objectives import OUTPUT_SPACES, model_kind, producer_score
from whystream.models.registry import ModelRegistry
from whystream.treeshap import TreeShap

TOL = 1e-6
EXPECTED_SPACE = {"binary": "raw_margin", "cross_entropy": "raw_margin", "multiclassova": "raw_margin",
                  "multiclass": "softmax_logit", "poisson": "log_link", "gamma": "log_link", "tweedie": "log_link",
                  "cross_entropy_lambda": "softplus_link", "lambdarank": "raw_score", "rank_xendcg": "raw_score"}


@pytest.fixture(scope="module")
def boosters():
    return {objective: train(objective) for objective in OBJECTIVES}


def eval_rows() -> np.ndarray:
    X = make_rows(300, 5)
    X[:30, 0] = [-3.0, -1.0, -0.5, 0.7, 8.9, 40.0, 1e10, np.inf, -np.inf, np.nan] * 3  # categorical corners
    X[30:40] = np.nan
    X[40:50] = 0.0
    X[50:60] = 1e-36  # LightGBM reads it as 0.0
    return X


def shap_per_output(booster, X) -> np.ndarray:
    """shap's values as [n, F, K] (K = 1 for single-output models)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = np.asarray(shap.TreeExplainer(booster).shap_values(X))
    return values if values.ndim == 3 else values[:, :, None]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_is_explained_exactly_as_shap_does(boosters, objective):
    booster = boosters[objective]
    kind = model_kind(booster.model_to_string())
    assert kind.objective == objective
    assert kind.output_space == EXPECTED_SPACE.get(objective, "identity")
    X = eval_rows()
    theirs = shap_per_output(booster, X)
    raw = np.asarray(booster.predict(X, raw_score=True)).reshape(len(X), kind.n_outputs)
    assert theirs.shape == (len(X), len(FEATURES), kind.n_outputs)
    worst = 0.0
    for k in range(kind.n_outputs):
        kernel = TreeShap(booster, class_index=k if kind.multiclass else None)
        ours = kernel.shap_values(X)
        worst = max(worst, float(np.abs(ours - theirs[:, :, k]).max()))
        np.testing.assert_allclose(ours, theirs[:, :, k], rtol=0, atol=TOL)
        np.testing.assert_allclose(ours.sum(axis=1) + kernel.expected_value, raw[:, k], rtol=0, atol=TOL)
        np.testing.assert_array_equal(kernel.raw_score(X), raw[:, k])
        assert np.abs(ours).max() > 0.01  # the model uses its features: a vacuous match would pass too
    print(f"\n{objective}: max |ours - shap| = {worst:.3g} over {kind.n_outputs} output(s)")


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_the_producers_score_is_lightgbms_prediction_from_the_raw_score(boosters, objective):
    """What the worker's score check compares with: predict() of every objective, from raw scores alone
    (multiclass: of the class the decision was taken on)."""
    booster = boosters[objective]
    kind = model_kind(booster.model_to_string())
    X = eval_rows()
    raw = np.asarray(booster.predict(X, raw_score=True)).reshape(len(X), kind.n_outputs)
    predicted = np.asarray(booster.predict(X)).reshape(len(X), kind.n_outputs)
    classes = np.arange(len(X)) % kind.n_outputs
    ours = producer_score(kind, raw if kind.multiclass else raw[:, 0], classes if kind.multiclass else None)
    np.testing.assert_allclose(ours, predicted[np.arange(len(X)), classes], rtol=1e-12, atol=1e-12)


def test_a_binary_models_sigmoid_parameter_scales_its_score():
    booster = train("binary")
    text = booster.model_to_string().replace("objective=binary sigmoid:1", "objective=binary sigmoid:2")
    kind = model_kind(text)
    assert kind.sigmoid == 2.0
    np.testing.assert_allclose(producer_score(kind, np.array([0.5])), [1 / (1 + np.exp(-1.0))])


def test_output_spaces_are_the_schema_documented_ones():
    import json

    doc = json.loads((REPO / "schemas/ExplanationEvent.avsc").read_text())
    output_space = next(f for f in doc["fields"] if f["name"] == "output_space")["doc"]
    assert all(f"`{space}`" in output_space for space in OUTPUT_SPACES)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan")), st.sampled_from([0.0, -0.0, 2.0])),
                         min_size=len(FEATURES), max_size=len(FEATURES)), min_size=1, max_size=20),
       st.sampled_from(["multiclass", "multiclassova", "poisson", "lambdarank"]))
def test_each_class_adds_up_to_its_raw_score_for_any_row(boosters, rows, objective):
    """Invariant: for every output k, base_k + sum(phi_k) == LightGBM's raw score k."""
    booster = boosters[objective]
    kind = model_kind(booster.model_to_string())
    X = np.asarray(rows, dtype=float)
    raw = np.asarray(booster.predict(X, raw_score=True)).reshape(len(X), kind.n_outputs)
    for k in range(kind.n_outputs):
        kernel = TreeShap(booster, class_index=k if kind.multiclass else None)
        np.testing.assert_allclose(kernel.shap_values(X).sum(axis=1) + kernel.expected_value, raw[:, k],
                                   rtol=0, atol=TOL * max(1.0, float(np.abs(raw[:, k]).max())))


def test_a_multiclass_booster_needs_a_class_index_and_a_valid_one(boosters):
    with pytest.raises(UnsupportedModel, match="class_index"):
        TreeShap(boosters["multiclass"])
    with pytest.raises(ValueError, match="class_index"):
        TreeShap(boosters["multiclass"], class_index=N_CLASSES)


def test_the_reference_of_a_multiclass_model_is_each_rows_top_class(boosters, tmp_path):
    booster = boosters["multiclass"]
    X = make_rows(1200, 9)
    model = ModelRegistry(tmp_path).register("tiers", booster, None, X)
    top = np.argmax(booster.predict(X, raw_score=True), axis=1)
    assert len(set(top.tolist())) == N_CLASSES
    for k in range(N_CLASSES):
        rows = top == k
        np.testing.assert_allclose(model.reference_shap[rows],
                                   TreeShap(booster, class_index=k).shap_values(X[rows]), rtol=0, atol=TOL)
    assert model.kind.n_outputs == N_CLASSES and not model.has_threshold


@pytest.mark.parametrize("params, words", [
    (dict(objective="regression", linear_tree=True), "linear trees"),
    (dict(objective="binary", boosting="rf", bagging_fraction=0.5, bagging_freq=1), "random forest"),
])
def test_models_the_kernel_cannot_explain_exactly_are_refused_before_anything_is_written(tmp_path, params, words):
    import lightgbm as lgb

    X = np.nan_to_num(make_rows(1200, 1))
    y = (X[:, 1] > 0).astype(float)
    booster = lgb.train({**params, "verbose": -1, "num_threads": 1}, lgb.Dataset(X, y), num_boost_round=3)
    with pytest.raises(UnsupportedModel, match=words):
        ModelRegistry(tmp_path).register("m", booster, 0.5, X)
    assert not (tmp_path / "m").exists()
