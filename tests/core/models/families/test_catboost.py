"""CatBoost models (.cbm and JSON): the translation predicts CatBoost's RawFormulaVal
(rows on every border, NaN under nan_mode Min and Max, unseen category codes), whystream's
TreeShap of it equals CatBoost's ShapValues, and damaged files, CTR features, non-symmetric
trees and string categories end in one WhystreamError line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from catboost import CatBoostClassifier, CatBoostRegressor
from support.families import exactness, on_the_splits, refusal

from whystream.models.families import catboost as family
from whystream.models.families import sklearn as sklearn_family
from whystream.models.families.lgbtext import le_float32


def _frame(n=600, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"amount": rng.normal(size=n), "tenure": rng.normal(size=n),
                          "merchant": rng.integers(0, 6, n), "score": rng.integers(0, 5, n).astype(float)})
    frame.loc[rng.random(n) < 0.1, "tenure"] = np.nan
    signal = frame.amount + frame.tenure.fillna(1.0) + frame.merchant.isin([2, 5]) + 0.3 * frame.score
    return frame, signal.to_numpy()


def _fit(kind):
    frame, s = _frame()
    numeric = frame.drop(columns=["merchant"])
    one_hot = dict(cat_features=["merchant"])
    common = dict(verbose=0, random_seed=0, thread_count=1, allow_writing_files=False)
    if kind == "Logloss, one-hot, nan_mode Min":
        return CatBoostClassifier(iterations=25, depth=4, one_hot_max_size=10, **common).fit(frame, s > 1, **one_hot)
    if kind == "Logloss, nan_mode Max":
        return CatBoostClassifier(iterations=20, depth=4, nan_mode="Max", **common).fit(numeric, s > 1)
    if kind == "MultiClass, one-hot":
        return CatBoostClassifier(iterations=10, depth=3, loss_function="MultiClass", one_hot_max_size=10,
                                  **common).fit(frame, np.digitize(s, [0.5, 2.0]), **one_hot)
    if kind == "RMSE, depth 6 (empty leaves)":
        return CatBoostRegressor(iterations=15, depth=6, **common).fit(numeric, s)
    if kind == "Poisson":
        return CatBoostRegressor(iterations=15, depth=3, loss_function="Poisson", **common).fit(
            numeric, np.random.default_rng(1).poisson(np.exp(0.3 * frame.amount)))
    if kind == "Tweedie":
        return CatBoostRegressor(iterations=15, depth=3, loss_function="Tweedie:variance_power=1.5", **common).fit(
            numeric, np.exp(0.3 * frame.amount))
    raise AssertionError(kind)


def _rows(model, path_json):
    spec = json.loads(path_json.read_text())
    points = {}
    for f in spec["features_info"].get("float_features", []):
        points[f["flat_feature_index"]] = {b for border in f["borders"] for b in (border, le_float32(border))}
    frame, _ = _frame(n=60, seed=3)
    X = frame[list(model.feature_names_)].to_numpy(dtype=np.float64)
    rows = on_the_splits(X, points)
    if "merchant" in model.feature_names_:  # seen and unseen codes, negative, far above MAX_CODE, NaN
        j = list(model.feature_names_).index("merchant")
        extra = np.repeat(X[:12], 1, axis=0)
        extra[:, j] = [0, 1, 2, 5, 6, 9, -1, 4095, 4096, 70000, np.nan, 3]
        rows = np.vstack([rows, extra])
    return rows


KINDS = ["Logloss, one-hot, nan_mode Min", "Logloss, nan_mode Max", "MultiClass, one-hot",
         "RMSE, depth 6 (empty leaves)", "Poisson", "Tweedie"]


@pytest.mark.parametrize("kind", KINDS)
def test_catboost_predicts_bitwise_and_explains_as_catboost(kind, tmp_path):
    model = _fit(kind)
    cbm, as_json = tmp_path / "model.cbm", tmp_path / "model.json"
    model.save_model(str(cbm))
    model.save_model(str(as_json), format="json")
    rows = _rows(model, as_json)
    for path in (cbm, as_json):
        head = path.read_bytes()[:4096]
        assert family.recognises(path, head) and not sklearn_family.recognises(path, head)
        translated = family.load(path)
        assert translated.family == "catboost" and translated.library.startswith("catboost ")
        pred, shap = exactness(translated, rows)
        assert pred == 0.0, (path.name, pred)  # the trees in order, the bias last: CatBoost's sum
        # empty leaves (no training row) count 1 of a root of 2^30 (lgbtext: a zero cover makes TreeSHAP divide
        # 0 by 0), where CatBoost skips them: ~1e-8 apart; CatBoost models without empty leaves agree to ~1e-16
        assert shap <= 1e-7, (path.name, shap)


def test_damaged_files_and_unexplainable_models_end_in_one_line(tmp_path):
    frame, s = _frame(n=300)
    good = tmp_path / "good.cbm"
    CatBoostClassifier(iterations=3, depth=2, verbose=0, thread_count=1, allow_writing_files=False).fit(
        frame.drop(columns=["merchant"]), s > 1).save_model(str(good))
    data = good.read_bytes()
    for name, body in [("truncated.cbm", data[: len(data) // 2]), ("garbage.cbm", b"CBM1" + b"\x07" * 300),
                       ("truncated.json", b'{"features_info": {"float_features": [')]:
        (tmp_path / name).write_bytes(body)
        assert "CatBoost cannot load it" in refusal(family, tmp_path / name)

    for i, cut in enumerate(np.linspace(4, len(data) - 1, 12).astype(int)):  # wherever the file ends
        (tmp_path / f"cut{i}.cbm").write_bytes(data[:cut])
        refusal(family, tmp_path / f"cut{i}.cbm")
    hollow = tmp_path / "hollow.json"  # JSON CatBoost takes, missing what a tree needs
    hollow.write_text('{"oblivious_trees": [{"splits": [], "leaf_values": []}]}')
    assert "damaged CatBoost model" in refusal(family, hollow) or "CatBoost cannot load it" in refusal(family, hollow)

    ctr = tmp_path / "ctr.cbm"  # 6 categories above one_hot_max_size=2: CatBoost uses CTRs
    CatBoostClassifier(iterations=10, depth=3, one_hot_max_size=2, verbose=0, thread_count=1, allow_writing_files=False).fit(
        frame, frame.merchant.isin([2, 5]), cat_features=["merchant"]).save_model(str(ctr))
    assert "CTR-based categorical features" in refusal(family, ctr)

    lossguide = tmp_path / "lossguide.cbm"
    CatBoostRegressor(iterations=3, grow_policy="Lossguide", verbose=0, thread_count=1, allow_writing_files=False).fit(
        frame.drop(columns=["merchant"]), s).save_model(str(lossguide))
    assert "non-symmetric trees" in refusal(family, lossguide)

    names = tmp_path / "names.cbm"  # categories trained as names: an event's integer code cannot name them
    named = frame.assign(merchant=frame.merchant.map(lambda c: f"shop-{c}"))
    CatBoostClassifier(iterations=5, depth=3, one_hot_max_size=10, verbose=0, thread_count=1, allow_writing_files=False).fit(
        named, s > 1, cat_features=["merchant"]).save_model(str(names))
    assert "not an integer code" in refusal(family, names)
