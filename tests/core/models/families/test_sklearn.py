"""scikit-learn tree ensembles from skops files: the translation predicts what scikit-learn
predicts (rows on every split, NaN, unseen categories), whystream's TreeShap of it equals
shap's (or, where shap cannot, a brute-force Shapley computation), and every damaged,
pickled or untrusted file ends in one WhystreamError line."""

from __future__ import annotations

import math
import pickle
import warnings
import zipfile
from itertools import combinations

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer
from support.families import exactness, on_the_splits, refusal

from whystream.errors import WhystreamError
from whystream.models.families import sklearn as family
from whystream.models.families.lgbtext import le_float32

warnings.filterwarnings("ignore", message=".*valid feature names.*")


def _data(n=600, nan=True, seed=0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(size=n), rng.normal(size=n), rng.integers(0, 4, n).astype(float),
                         rng.integers(0, 7, n).astype(float)])
    if nan:
        X[rng.random(n) < 0.1, 1] = np.nan
    signal = X[:, 0] + np.nan_to_num(X[:, 1], nan=1.0) + 0.5 * X[:, 2] + np.isin(X[:, 3], [2, 5])
    return X, signal


def _split_points(model) -> dict[int, set[float]]:
    """Every split's threshold and the double LightGBM compares with, per feature."""
    points: dict[int, set[float]] = {}
    if hasattr(model, "_predictors"):
        for iteration in model._predictors:
            for p in iteration:
                for node in p.nodes[(p.nodes["is_leaf"] == 0) & (p.nodes["is_categorical"] == 0)]:
                    points.setdefault(int(node["feature_idx"]), set()).add(float(node["num_threshold"]))
        return points
    for est in np.ravel(model.estimators_):
        tree = est.tree_
        for f, t in zip(tree.feature[tree.feature >= 0], tree.threshold[tree.feature >= 0]):
            points.setdefault(int(f), set()).update({float(t), le_float32(t)})
    return points


def _round_trip(model, tmp_path):
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    return family.load(path)


def _rows(model, X, extra=()):
    rows = on_the_splits(X[:40], _split_points(model))
    return np.vstack([rows, *extra]) if len(extra) else rows


FORESTS = {
    "random forest, binary": lambda X, s: RandomForestClassifier(12, max_depth=6, random_state=0).fit(X, s > 1),
    "random forest, 3 classes": lambda X, s: RandomForestClassifier(8, max_depth=5, random_state=0).fit(
        X, np.digitize(s, [0.5, 2.0])),
    "random forest, class_weight (weighted covers)": lambda X, s: RandomForestClassifier(
        8, max_depth=5, class_weight="balanced", random_state=0).fit(X, s > 2.5),
    "random forest, regressor": lambda X, s: RandomForestRegressor(10, max_depth=6, random_state=0).fit(X, s),
    "extra trees, binary": lambda X, s: ExtraTreesClassifier(10, max_depth=6, random_state=0).fit(X, s > 1),
    "extra trees, regressor": lambda X, s: ExtraTreesRegressor(10, max_depth=6, random_state=0).fit(X, s),
}


@pytest.mark.parametrize("kind", list(FORESTS))
def test_forests_predict_and_explain_as_scikit_learn_and_shap(kind, tmp_path):
    X, s = _data()
    model = FORESTS[kind](X, s)
    translated = _round_trip(model, tmp_path)
    assert translated.family == "sklearn" and translated.library.startswith("scikit-learn ")
    assert translated.output_space == ("probability" if "regressor" not in kind else None)
    pred, shap = exactness(translated, _rows(model, X))
    assert pred <= 1e-12  # a mean as a sum of value / n: a few ulp
    assert shap <= 1e-9


BOOSTERS = {
    "gradient boosting, binary": lambda X, s: GradientBoostingClassifier(n_estimators=15, max_depth=3,
                                                                         random_state=0).fit(X, s > 1),
    "gradient boosting, 3 classes": lambda X, s: GradientBoostingClassifier(
        n_estimators=6, max_depth=2, random_state=0).fit(X, np.digitize(s, [0.5, 2.0])),
    "gradient boosting, exponential loss": lambda X, s: GradientBoostingClassifier(
        loss="exponential", n_estimators=8, max_depth=2, random_state=0).fit(X, s > 1),
    "gradient boosting, huber, subsample": lambda X, s: GradientBoostingRegressor(
        loss="huber", n_estimators=15, subsample=0.7, random_state=0).fit(X, s),
}


@pytest.mark.parametrize("kind", list(BOOSTERS))
def test_gradient_boosting_predicts_bitwise_and_explains_as_shap(kind, tmp_path):
    X, s = _data(nan=False)  # GradientBoosting refuses missing values
    model = BOOSTERS[kind](X, s)
    translated = _round_trip(model, tmp_path)
    rows = _rows(model, X)
    rows = rows[~np.isnan(rows).any(axis=1)]
    pred, shap = exactness(translated, rows)
    assert pred == 0.0  # init first, then learning_rate * value stage by stage: scikit-learn's order
    assert shap <= 1e-9
    with pytest.raises(WhystreamError, match=r"^scikit-learn's Gradient\w+ refuses the rows: Input X contains NaN"):
        translated.own(np.vstack([rows[:2], [[0.0, np.nan, 1.0, 2.0]]]))


def _hgb_categorical(X, s):
    """Codes 0..6 and missing values in training: the missing side of about half the categorical
    splits is left (the translation swaps their sides), of the others right."""
    missing = np.random.default_rng(1).random(len(X)) < 0.15
    X = X.copy()
    X[missing, 3] = np.nan
    return HistGradientBoostingClassifier(max_iter=12, max_leaf_nodes=8, categorical_features=[3],
                                          random_state=0).fit(X, (s - 2 * missing) > 1.5)


HIST = {
    "hist gradient boosting, binary, NaN": lambda X, s: HistGradientBoostingClassifier(
        max_iter=15, max_leaf_nodes=8, random_state=0).fit(X, s > 1),
    "hist gradient boosting, 3 classes": lambda X, s: HistGradientBoostingClassifier(
        max_iter=6, max_leaf_nodes=6, random_state=0).fit(X, np.digitize(s, [0.5, 2.0])),
    "hist gradient boosting, poisson": lambda X, s: HistGradientBoostingRegressor(
        loss="poisson", max_iter=15, random_state=0).fit(X, np.exp(0.3 * np.nan_to_num(X[:, 0]))),
}


@pytest.mark.parametrize("kind", list(HIST))
def test_hist_gradient_boosting_predicts_bitwise_and_explains_as_shap(kind, tmp_path):
    X, s = _data()
    model = HIST[kind](X, s)
    translated = _round_trip(model, tmp_path)
    pred, shap = exactness(translated, _rows(model, X))
    assert pred == 0.0  # baseline first, then the trees: scikit-learn's order
    assert shap <= 1e-9


def _hgb_route(model, tree_nodes, bitsets, encoded_row, fixed, values):
    """Path-dependent E[f | x_S] of one HistGradientBoosting tree (Lundberg et al., Algorithm 1),
    routing as scikit-learn's _predictor.pyx does on the encoded row."""
    def expect(i):
        node = tree_nodes[i]
        if node["is_leaf"]:
            return node["value"]
        f = int(node["feature_idx"])
        left, right = int(node["left"]), int(node["right"])
        if f in fixed:
            x = encoded_row[f]
            if np.isnan(x):
                go_left = bool(node["missing_go_to_left"])
            elif node["is_categorical"]:
                code = int(x)
                known = code < values[f]
                in_left = known and (int(bitsets[node["bitset_idx"]][code // 32]) >> (code % 32)) & 1
                go_left = True if in_left else (False if known else bool(node["missing_go_to_left"]))
            else:
                go_left = x <= node["num_threshold"]
            return expect(left if go_left else right)
        return (expect(left) * tree_nodes[left]["count"] + expect(right) * tree_nodes[right]["count"]) \
            / node["count"]
    return expect(0)


def test_hist_gradient_boosting_categorical_matches_brute_force_shapley(tmp_path):
    """shap routes HistGradientBoosting's categorical splits wrongly, so the reference here is
    Shapley's formula itself over every subset, on scikit-learn's own routing and counts."""
    X, s = _data()
    model = _hgb_categorical(X, s)
    translated = _round_trip(model, tmp_path)
    sides = [bool(n["missing_go_to_left"]) for it in model._predictors for p in it
             for n in p.nodes if n["is_categorical"] and not n["is_leaf"]]
    assert any(sides) and not all(sides)  # both the swapped and the plain case are exercised
    rows = np.vstack([X[:6], [[0.1, np.nan, 2.0, code] for code in (7.0, 300.0, -1.0, np.nan, 2.0, 5.0)]])
    raw = model._raw_predict(rows)[:, 0]
    assert np.array_equal(translated.booster.predict(rows, raw_score=True), raw)  # unseen codes, NaN: missing side
    encoded = model._preprocessor.transform(rows)
    categories = model._preprocessor.named_transformers_["encoder"].categories_[0]
    n_cats = {0: int((~np.isnan(categories)).sum())}  # encoded column 0: codes below this are known
    to_original = np.r_[3, 0, 1, 2]  # the preprocessor puts the categorical column first
    F = rows.shape[1]
    phi = np.zeros((len(rows), F))
    for r, row in enumerate(encoded):
        for iteration in model._predictors:
            p = iteration[0]
            v = {S: _hgb_route(model, p.nodes, p.raw_left_cat_bitsets, row, set(S), n_cats)
                 for k in range(F + 1) for S in combinations(range(F), k)}
            for i in range(F):
                for S, value in v.items():
                    if i not in S:
                        w = math.factorial(len(S)) * math.factorial(F - len(S) - 1) / math.factorial(F)
                        phi[r, to_original[i]] += w * (v[tuple(sorted(S + (i,)))] - value)
    from whystream.treeshap import TreeShap

    ours = TreeShap(translated.booster).shap_values(rows)
    assert np.abs(ours - phi).max() <= 1e-9
    _, contrib = translated.own(rows)  # LightGBM's pred_contrib of the translation
    assert np.abs(contrib[:, 0, :-1] - phi).max() <= 1e-9


def test_damaged_pickled_and_untrusted_files_end_in_one_line(tmp_path):
    X, s = _data(n=200)
    model = RandomForestClassifier(3, max_depth=3, random_state=0).fit(X, s > 1)
    good = tmp_path / "good.skops"
    sio.dump(model, good)
    data = good.read_bytes()

    truncated = tmp_path / "truncated.skops"
    truncated.write_bytes(data[: len(data) // 2])
    assert "damaged skops file" in refusal(family, truncated)

    for i, cut in enumerate(np.linspace(10, len(data) - 1, 10).astype(int)):  # wherever the file ends
        (tmp_path / f"cut{i}.skops").write_bytes(data[:cut])
        assert "damaged skops file" in refusal(family, tmp_path / f"cut{i}.skops")

    renamed = tmp_path / "model.skops"  # a pickle renamed .skops: refused, never unpickled
    renamed.write_bytes(pickle.dumps(model))
    assert family.recognises(renamed, renamed.read_bytes()[:4096])
    assert "a pickle, which whystream never loads" in refusal(family, renamed)

    lightgbm_text = tmp_path / "model.txt"  # other families' files are not claimed
    lightgbm_text.write_text("tree\nversion=v4\n")
    assert not family.recognises(lightgbm_text, b"tree\nversion=v4\n")
    assert not family.recognises(tmp_path / "model.json", b'{"learner": {"attributes": {}}}')

    text = tmp_path / "notes.skops"
    text.write_text("tree\nversion=v4\n")
    assert "not a skops file" in refusal(family, text)

    evil = tmp_path / "evil.skops"  # a skops file that would call eval: its type is named and refused
    sio.dump(FunctionTransformer(func=eval), evil)
    assert "holds type builtins.eval, which whystream does not trust" in refusal(family, evil)

    tampered = tmp_path / "tampered.skops"  # the forest's schema edited to name os.system as its tree type
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            body = src.read(item)
            if item.filename == "schema.json":
                body = body.replace(b'"sklearn.tree._tree"', b'"os"').replace(b'"Tree"', b'"system"')
            dst.writestr(item, body)
    assert "holds type os.system, which whystream does not trust" in refusal(family, tampered)

    linear = tmp_path / "linear.skops"
    sio.dump(LogisticRegression().fit(X[:, [0]], s > 1), linear)
    assert "not a tree ensemble whystream explains" in refusal(family, linear)


def test_mlflow_sklearn_uris_load_skops_and_refuse_pickles(tmp_path, monkeypatch):
    """whystream[mlflow]: a model logged with mlflow.sklearn in the skops format loads through the
    same trusted-types check; one logged as cloudpickle is refused, never unpickled."""
    import mlflow
    import mlflow.sklearn

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this to use a plain directory
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    X, s = _data(n=300)
    model = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(X, s > 1)
    with mlflow.start_run():
        mlflow.sklearn.log_model(model, name="safe", serialization_format="skops",
                                 skops_trusted_types=list(family.TRUSTED), registered_model_name="credit", pip_requirements=[])
        mlflow.sklearn.log_model(model, name="pickled", serialization_format="cloudpickle",
                                 registered_model_name="pickled", pip_requirements=[])
    translated = family.load_mlflow("models:/credit/1")
    assert np.array_equal(translated.booster.predict(X, raw_score=True), model._raw_predict(X)[:, 0])
    for uri, said in [("models:/pickled/1", "logged with serialization_format='cloudpickle', a pickle, which "
                                            "whystream never loads"),
                      ("models:/credit/9", "MLflow cannot load it")]:
        with pytest.raises(WhystreamError) as caught:
            family.load_mlflow(uri)
        assert str(caught.value).startswith(f"{uri}: {said}") and "\n" not in str(caught.value)
