"""The LightGBM text writer and the float32 thresholds every float32 family relies on
(`le_float32`: scikit-learn's and CatBoost's `<=`, `lt_float32`: XGBoost's `<`)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from whystream.errors import WhystreamError
from whystream.models.families.lgbtext import Leaf, Split, check_feature_names, le_float32, lt_float32, model_text

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _f32(x: float) -> float:
    with np.errstate(over="ignore"):
        return float(np.float32(x))


@settings(max_examples=400, deadline=None)
@given(t=finite, dx=st.integers(-3, 3))
def test_le_float32_routes_every_double_near_the_threshold_as_float32_does(t, dx):
    T = le_float32(t)
    x = T
    for _ in range(abs(dx)):
        x = float(np.nextafter(x, np.inf if dx > 0 else -np.inf))
    assert (x <= T) == (_f32(x) <= t)
    with np.errstate(over="ignore"):
        near = (t, float(np.nextafter(t, np.inf)), float(np.nextafter(t, -np.inf)), _f32(t))
    for y in near:
        if np.isfinite(y):
            assert (y <= T) == (_f32(y) <= t)


def test_le_float32_at_the_ends_of_the_float32_range():
    big = float(np.finfo(np.float32).max)
    for t in (big, -big, 1e300, -1e300, 0.0, -0.0, 5e-324, -5e-324):
        T = le_float32(t)
        for x in (T, float(np.nextafter(T, np.inf)), float(np.nextafter(T, -np.inf))):
            assert (x <= T) == (_f32(x) <= t), (t, x)
    assert le_float32(np.inf) == np.inf
    many = np.array([0.5, -0.5, 1e-40, big, -big, 1e300, 3.0, np.inf])
    assert le_float32(many).tolist() == [le_float32(t) for t in many]  # an array: each its own


@settings(max_examples=300, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False), st.integers(-40, 40))
def test_lt_float32_routes_every_double_near_it_as_xgboost(t, steps):
    """`float32(x) < t` iff `x <= t'`, at t' itself, its neighbours and doubles some ulps away."""
    t32 = np.float32(t)
    cut = lt_float32(t)
    x = cut
    direction = np.inf if steps > 0 else -np.inf
    for _ in range(abs(steps)):
        x = np.nextafter(x, direction)
    with np.errstate(over="ignore"):
        for v in (cut, np.nextafter(cut, np.inf), np.nextafter(cut, -np.inf), x, float(t32)):
            assert (np.float32(v) < t32) == (v <= cut), (t, v, cut)


def test_lt_float32_at_ties_and_the_ends_of_float32():
    for t in (0.0, -0.0, 2.0 ** -149, -(2.0 ** -149), 1.0, 3.0, float(np.finfo(np.float32).max),
              -float(np.finfo(np.float32).max), 16777216.0):
        cut = lt_float32(t)
        with np.errstate(over="ignore"):
            assert np.float32(cut) < np.float32(t) <= np.float32(np.nextafter(cut, np.inf)), t
    # a tie between two float32s rounds to the even one: 1 + 2^-24 rounds to 1 (even), so it is below 1 + 2^-23
    assert lt_float32(1 + 2.0 ** -23) == 1 + 2.0 ** -24


def test_written_trees_route_and_sum_as_lightgbm_reads_them():
    # numerical split (NaN left) over a categorical split {1, 40} (NaN, negative, unknown: right)
    tree = Split(0, Leaf(1.0, 3), Split(1, Leaf(2.0, 2), Leaf(3.0, 5), 7, categories=frozenset({1, 40})), 10,
                 threshold=0.5, default_left=True)
    text = model_text([Leaf(0.25, 0), tree], feature_names=["a", "b"], objective=None, categorical=[1])
    booster = lgb.Booster(model_str=text)
    X = np.array([[0.5, 0], [np.nan, 7], [0.6, 1], [0.6, 40], [0.6, np.nan], [0.6, -1], [0.6, 41], [0.6, 2]])
    assert booster.predict(X, raw_score=True).tolist() == [1.25, 1.25, 2.25, 2.25, 3.25, 3.25, 3.25, 3.25]
    assert "[categorical_feature: 1]" in booster.model_to_string()
    assert "average_output" not in text


def test_weighted_covers_are_scaled_to_whole_counts():
    tree = Split(0, Leaf(1.0, 0.25), Leaf(2.0, 0.5), 0.75, threshold=0.0)
    counts = lgb.Booster(model_str=model_text([tree], feature_names=["a"], objective="regression")).dump_model()
    root = counts["tree_info"][0]["tree_structure"]
    assert root["internal_count"] == 2 ** 30
    assert abs(root["left_child"]["leaf_count"] / root["internal_count"] - 1 / 3) < 1e-9


def test_feature_names_lightgbm_cannot_hold_are_refused():
    assert check_feature_names(["amount", "tenure"], "m") == ["amount", "tenure"]
    for bad in (["has space"], ["a:b"], ["x", "x"], [""]):
        try:
            check_feature_names(bad, "model file m")
        except WhystreamError as exc:
            assert str(exc).startswith("model file m: ") and "\n" not in str(exc)
        else:
            raise AssertionError(bad)


def test_whole_covers_are_written_as_they_are_and_no_count_is_zero():
    # sample counts are exact; a zero cover (CatBoost's empty leaves, a subtree that covers nothing) would make
    # TreeSHAP divide 0 by 0: the tree is scaled and those count 1 (a split: the leaves below it)
    exact = Split(0, Leaf(1.0, 3), Leaf(2.0, 7), 10, threshold=0.0)
    empty = Split(0, Leaf(1.0, 0), Split(0, Leaf(2.0, 8), Split(1, Leaf(0.0, 0), Leaf(0.0, 0), 0, threshold=0.0), 8,
                                          threshold=1.0), 8, threshold=0.0)
    text = model_text([exact, empty], feature_names=["a", "b"], objective=None)
    info = lgb.Booster(model_str=text).dump_model()
    one, two = (t["tree_structure"] for t in info["tree_info"])
    assert (one["internal_count"], one["left_child"]["leaf_count"], one["right_child"]["leaf_count"]) == (10, 3, 7)
    hollow = two["right_child"]["right_child"]
    assert (two["internal_count"], two["left_child"]["leaf_count"], hollow["internal_count"],
            hollow["left_child"]["leaf_count"], hollow["right_child"]["leaf_count"]) == (2 ** 30, 1, 2, 1, 1)
    X = np.array([[-1.0, 0.0], [0.5, 0.0], [2.0, -1.0], [2.0, 1.0]])
    assert not np.isnan(lgb.Booster(model_str=text).predict(X, pred_contrib=True)).any()


def test_a_shared_subtree_is_written_twice_in_pre_order():
    shared = Split(1, Leaf(1.0, 1), Leaf(2.0, 1), 2, threshold=0.0)
    text = model_text([Split(0, shared, shared, 4, threshold=0.0)], feature_names=["a", "b"], objective=None)
    assert "left_child=1 -1 -3\nright_child=2 -2 -4" in text
    booster = lgb.Booster(model_str=text)
    assert booster.predict(np.array([[-1, -1], [1, 1], [1, -1]]), raw_score=True).tolist() == [1.0, 2.0, 1.0]
