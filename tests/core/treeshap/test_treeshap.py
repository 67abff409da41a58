"""whystream.treeshap against shap's TreeExplainer (which, for a LightGBM
booster, is LightGBM's own pred_contrib TreeSHAP).  Small models only: the
suite runs in seconds once numba's cache is warm (~10 s of compilation cold)."""

from __future__ import annotations

import threading
import warnings

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

shap = pytest.importorskip("shap")

from whystream.errors import UnsupportedModel
from whystream.treeshap import EXPLAINER_NAME, EXPLAINER_VERSION, TreeShap

F = 8
CAT = 0  # categorical feature
ZERO = 2  # feature with many exact zeros
TOL = 1e-6


def make_data(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, F))
    X[:, CAT] = rng.integers(0, 12, n)
    X[rng.random((n, F)) < 0.1] = np.nan
    X[:, ZERO][rng.random(n) < 0.3] = 0.0
    return X


def target(X: np.ndarray, rng) -> np.ndarray:
    x = np.nan_to_num(X)
    return (x[:, 1] + (x[:, CAT] % 3 == 0) + np.isnan(X[:, 3]) + (X[:, ZERO] == 0) - x[:, 4] * x[:, 5]
            + 0.3 * rng.normal(size=len(X)))


def train(params: dict, rounds: int = 20, n: int = 1500, seed: int = 0) -> lgb.Booster:
    X = make_data(n, seed)
    y = target(X, np.random.default_rng(seed + 1))
    if params.get("objective") == "binary":
        y = (y > np.median(y)).astype(int)
    base = dict(num_leaves=15, verbose=-1, min_data_in_leaf=5, min_data_per_group=5, cat_smooth=1, seed=seed,
                num_threads=1)
    ds = lgb.Dataset(X, y, categorical_feature=[CAT])
    return lgb.train({**base, **params}, ds, num_boost_round=rounds)


def eval_rows(seed: int = 7) -> np.ndarray:
    X = make_data(300, seed)
    rng = np.random.default_rng(seed)
    # categorical corner cases: negatives, fractions, unseen and huge categories, inf, NaN
    X[:40, CAT] = rng.choice([-3.0, -1.0, -0.5, 0.7, 11.9, 40.0, 1e10, np.inf, -np.inf, np.nan], 40)
    X[40:50] = 0.0
    X[50:60] = 1e-36  # read as 0.0 by LightGBM
    X[60:70] = -1e-36
    X[70:80] = np.nan
    X[80:90, 1] = np.inf
    # beyond dump_model()'s +-1e300 clamp: LightGBM's "NaN or not" splits are x <= inf
    X[90:100] = np.inf
    X[100:110] = 1e301
    X[110:120] = -np.inf
    X[120:130, 3:] = np.where(rng.random((10, F - 3)) < 0.5, np.inf, -1e301)
    return X


def shap_reference(booster: lgb.Booster, X: np.ndarray) -> tuple[np.ndarray, float]:
    explainer = shap.TreeExplainer(booster)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        phi = explainer.shap_values(X)
    return np.asarray(phi), float(np.ravel(explainer.expected_value)[0])


MODELS = {
    "missing-nan": dict(objective="regression"),
    "missing-zero": dict(objective="binary", zero_as_missing=True),
    "missing-none": dict(objective="regression", use_missing=False),
    "deep-paths": dict(objective="regression", num_leaves=40, min_data_in_leaf=2, max_cat_to_onehot=1),
    # the shape of XGBoost's trees (every family's loader translates to LightGBM's text)
    "balanced-depth6": dict(objective="binary", num_leaves=64, max_depth=6, min_data_in_leaf=2),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    booster = train(MODELS[request.param])
    ts = TreeShap(booster)
    ts.warm_up()
    return booster, ts


def test_matches_shap(model):
    booster, ts = model
    X = eval_rows()
    ref, ev = shap_reference(booster, X)
    phi = ts.shap_values(X)
    assert phi.shape == X.shape and phi.dtype == np.float64
    assert np.abs(phi - ref).max() <= TOL
    assert abs(ts.expected_value - ev) <= 1e-12
    raw = booster.predict(X, raw_score=True)
    assert np.abs(ts.expected_value + phi.sum(axis=1) - raw).max() <= TOL
    assert np.abs(ts.raw_score(X) - raw).max() <= 1e-12


def test_infinite_thresholds():
    booster = train(MODELS["missing-nan"])
    ts = TreeShap(booster)
    assert np.isinf(ts._M[3]).any()  # dump_model() (and shap's own parser) says 1e300
    X = eval_rows()[90:130]
    ref, _ = shap_reference(booster, X)
    assert np.abs(ts.shap_values(X) - ref).max() <= TOL


def test_model_really_has_the_split_kinds(model):
    booster, _ = model
    kinds = set()

    def walk(node):
        if "split_index" in node:
            kinds.add((node["decision_type"], node.get("missing_type")))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    assert ("==", "None") in kinds or ("==", "NaN") in kinds  # categorical splits
    assert any(k[0] == "<=" for k in kinds)


def test_single_row_and_batch_paths_agree(model):
    _, ts = model
    X = eval_rows(11)
    batch = ts.shap_values(X)  # cut into chunks for the threads (when numba has > 1)
    rows = np.stack([ts.shap_values(X[i]) for i in range(40)])  # 1-D rows, serial path
    small = ts.shap_values(X[:3])  # too few rows to share out
    assert np.abs(rows - batch[:40]).max() <= 1e-12
    assert np.abs(small - batch[:3]).max() <= 1e-12
    assert ts.shap_values(X[:0]).shape == (0, F)


def test_row_pairs_and_lone_rows_agree(model):
    # trees with <= 8 features on a path take two rows per vector (4 Gauss points each); an
    # odd row out runs alone on 4 lanes, and each row's values must not depend on its partner
    booster, ts = model
    assert 2 in ts._M[26]  # every fixture model has such trees
    X = eval_rows(13)[:37]
    ref, _ = shap_reference(booster, X)
    odd = ts.shap_values(X)
    assert np.abs(odd - ref).max() <= TOL
    assert np.abs(ts.shap_values(X[::-1])[::-1] - odd).max() <= 1e-12  # other partners
    assert np.abs(ts.shap_values(X[5]) - odd[5]).max() <= 1e-12


def test_classic_algorithm_agrees(model):
    booster, ts = model
    X = eval_rows(3)
    classic = TreeShap(booster, algorithm="classic")
    assert np.abs(classic.shap_values(X) - ts.shap_values(X)).max() <= 1e-10
    assert classic.expected_value == ts.expected_value


def test_long_paths_use_more_quadrature_points():
    # > 16 distinct features on a path needs 16 Gauss points (two 8-lane chunks)
    rng = np.random.default_rng(5)
    n, f = 3000, 24
    X = rng.normal(size=(n, f))
    y = np.all(X > -1.5, axis=1) + 0.01 * rng.normal(size=n)  # an AND of 24 conditions: long paths
    booster = lgb.train(dict(objective="regression", num_leaves=32, min_data_in_leaf=1, min_sum_hessian_in_leaf=0,
                             verbose=-1, learning_rate=0.3, num_threads=1), lgb.Dataset(X, y), num_boost_round=3)
    ts = TreeShap(booster)
    assert ts._max_d > 16 and ts._max_nch >= 2
    Xt = X[:100]
    ref, ev = shap_reference(booster, Xt)
    assert np.abs(ts.shap_values(Xt) - ref).max() <= TOL
    assert abs(ts.expected_value - ev) <= 1e-12


def test_exact_where_lightgbm_loses_precision():
    # an AND of 56 conditions: paths with ~56 distinct features, where LightGBM's
    # extend/unwind arithmetic (and so shap) is no longer additive; the quadrature is
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 56))
    y = np.all(X > -2.5, axis=1) + 0.001 * rng.normal(size=len(X))
    booster = lgb.train(dict(objective="regression", num_leaves=120, min_data_in_leaf=1, min_sum_hessian_in_leaf=0,
                             verbose=-1, learning_rate=0.5, num_threads=1), lgb.Dataset(X, y), num_boost_round=2)
    ts = TreeShap(booster)
    assert ts._max_d > 40
    Xt = X[:200].copy()
    Xt[:50] = -3.0
    raw = booster.predict(Xt, raw_score=True)
    assert np.abs(ts.expected_value + ts.shap_values(Xt).sum(axis=1) - raw).max() <= 1e-10


def test_single_leaf_trees():
    X = make_data(400, 1)
    y = target(X, np.random.default_rng(2))
    # a leaf needs 10^4 rows: every tree is a single leaf
    stumps = lgb.train(dict(objective="regression", min_data_in_leaf=10_000, verbose=-1, num_threads=1), lgb.Dataset(X, y),
                       num_boost_round=3)
    # mixed: trees with splits, then single-leaf trees
    mixed = lgb.train(dict(objective="regression", num_leaves=7, verbose=-1, num_threads=1), lgb.Dataset(X, y), num_boost_round=4)
    mixed = lgb.train(dict(objective="regression", min_data_in_leaf=10_000, verbose=-1, num_threads=1),
                      lgb.Dataset(X, y, free_raw_data=False), num_boost_round=2, init_model=mixed,
                      keep_training_booster=True)
    for booster in (stumps, mixed):
        ts = TreeShap(booster)
        Xt = eval_rows()
        ref, ev = shap_reference(booster, Xt)
        phi = ts.shap_values(Xt)
        assert np.abs(phi - ref).max() <= TOL
        assert abs(ts.expected_value - ev) <= 1e-12
        assert np.abs(ts.raw_score(Xt) - booster.predict(Xt, raw_score=True)).max() <= 1e-12
    assert np.all(TreeShap(stumps).shap_values(eval_rows()) == 0.0)


def test_zero_cover_falls_back_to_lightgbm_arithmetic():
    booster = train(dict(objective="regression"), rounds=4)
    lines, tree = [], -1
    for line in booster.model_to_string().split("\n"):
        if line.startswith("Tree="):
            tree = int(line[5:])
        if tree == 1 and line.startswith("leaf_count="):
            counts = line.split("=")[1].split(" ")
            counts[2] = "0" * len(counts[2])  # same length: the header's tree_sizes stay right
            line = "leaf_count=" + " ".join(counts)
        lines.append(line)
    broken = lgb.Booster(model_str="\n".join(lines))
    ts = TreeShap(broken)
    assert ts.n_classic_trees == 1
    X = eval_rows()
    ref = broken.predict(X, pred_contrib=True)
    phi = ts.shap_values(X)
    np.testing.assert_allclose(phi, ref[:, :-1], rtol=0, atol=TOL)  # NaN where LightGBM has NaN
    assert ts.expected_value == ref[0, -1]


def test_multiclass_is_rejected():
    X = make_data(300, 3)
    y = np.random.default_rng(0).integers(0, 3, len(X))
    booster = lgb.train(dict(objective="multiclass", num_class=3, verbose=-1, num_threads=1), lgb.Dataset(X, y), num_boost_round=2)
    with pytest.raises(ValueError, match="multiclass"):
        TreeShap(booster)
    with pytest.raises(UnsupportedModel):
        TreeShap(booster)


def test_linear_trees_are_rejected():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    booster = lgb.train(dict(objective="regression", linear_tree=True, verbose=-1, num_threads=1), lgb.Dataset(X, X[:, 0]),
                        num_boost_round=2)
    with pytest.raises(ValueError, match="linear"):
        TreeShap(booster)


def test_api_surface(model):
    booster, ts = model
    assert EXPLAINER_NAME == "whystream-treeshap" and isinstance(EXPLAINER_VERSION, str)
    assert ts.n_features == F
    assert ts.feature_names == booster.feature_name()
    X = eval_rows()[:20]
    np.testing.assert_array_equal(ts.shap_values(X.astype(np.float32)), ts.shap_values(X.astype(np.float32).astype(np.float64)))
    np.testing.assert_array_equal(ts.shap_values(np.asfortranarray(X)), ts.shap_values(X))
    assert ts.shap_values(X[0]).shape == (F,)
    assert np.ndim(ts.raw_score(X[0])) == 0
    with pytest.raises(ValueError, match="shape"):
        ts.shap_values(np.zeros((2, F + 1)))
    with pytest.raises(ValueError, match="algorithm"):
        TreeShap(booster, algorithm="fast")


def test_concurrent_callers(model):
    _, ts = model
    X = eval_rows(21)
    expected = ts.shap_values(X)
    results: dict = {}

    def work(i):
        results[i] = [ts.shap_values(X) if j % 2 else ts.shap_values(X[i:i + 1]) for j in range(4)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, rs in results.items():
        for j, r in enumerate(rs):
            want = expected if j % 2 else expected[i:i + 1]
            assert np.abs(r - want).max() <= 1e-12


_HYP_BOOSTER = None


def _hyp_model():
    global _HYP_BOOSTER
    if _HYP_BOOSTER is None:
        booster = train(dict(objective="binary"), rounds=15, seed=3)
        explainer = shap.TreeExplainer(booster)
        _HYP_BOOSTER = booster, explainer, TreeShap(booster)
    return _HYP_BOOSTER


_value = st.one_of(
    st.floats(-4, 4, allow_nan=False),
    st.just(np.nan),
    st.just(0.0),
    st.sampled_from([-1e-36, 1e-36, -np.inf, np.inf, 1e300]),
)
_category = st.one_of(st.integers(-2, 14).map(float), st.floats(-2, 14), st.just(np.nan))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(_category, *[_value] * (F - 1)), min_size=1, max_size=12))
def test_random_rows_match_shap(rows):
    booster, explainer, ts = _hyp_model()
    X = np.array(rows, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = explainer.shap_values(X)
    phi = ts.shap_values(X)
    assert np.abs(phi - ref).max() <= TOL
    raw = booster.predict(X, raw_score=True)
    assert np.abs(ts.expected_value + phi.sum(axis=1) - raw).max() <= TOL
