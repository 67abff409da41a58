"""scikit-learn's tree ensembles as `lgbtext` trees: forests, GradientBoosting,
HistGradientBoosting (the module docstring of `sklearn` says why each is exact).

Each translator returns (trees, objective, n_outputs, categorical feature indices).
Mirrored upstream semantics (scikit-learn 1.9):
- `sklearn/tree/_tree.pyx` (Tree.apply): X as float32, left iff X[i, f] <= threshold
  (a float64), NaN to `missing_go_to_left`; covers `weighted_n_node_samples`;
- `sklearn/ensemble/_forest.py`: predict = mean of the trees' predictions,
  predict_proba = mean of value / value.sum() (a zero sum divides by 1);
- `sklearn/ensemble/_gradient_boosting.pyx` (predict_stages): raw = init + sum of
  learning_rate * value, stage by stage, K trees a stage (one per class);
- `sklearn/ensemble/_hist_gradient_boosting/_predictor.pyx`: X as float64, left iff
  x <= num_threshold, NaN to missing_go_to_left; categorical: after the model's own
  OrdinalEncoder (`_preprocessor`, categorical columns first), left iff the code is
  in raw_left_cat_bitsets, right if it is another known code, else (NaN, unknown,
  negative) the missing side; raw = _baseline_prediction + sum of the trees.
"""

from __future__ import annotations

import numpy as np

from whystream.errors import UnsupportedModel
from whystream.models.families.lgbtext import Leaf, Split, le_float32

_GB_OBJECTIVES = {"squared_error": "regression", "absolute_error": "regression_l1", "huber": "huber",
                  "quantile": "quantile"}
_HGB_OBJECTIVES = {"squared_error": "regression", "absolute_error": "regression_l1", "poisson": "poisson",
                   "gamma": "gamma", "quantile": "quantile"}


def _tree(tree_, values: np.ndarray) -> Leaf | Split:
    """One scikit-learn Tree (tree_) with leaf values `values[node]`; it compares float32(x)."""
    left, right = tree_.children_left, tree_.children_right
    feature, threshold, cover = tree_.feature, tree_.threshold, tree_.weighted_n_node_samples
    nan_left = getattr(tree_, "missing_go_to_left", np.zeros(len(left), dtype=np.uint8))

    split = left != -1
    thresholds = threshold.astype(np.float64)
    thresholds[split] = le_float32(thresholds[split])

    def node(i: int) -> Leaf | Split:
        if left[i] == -1:
            return Leaf(float(values[i]), float(cover[i]))
        return Split(int(feature[i]), node(int(left[i])), node(int(right[i])), float(cover[i]),
                     threshold=float(thresholds[i]), default_left=bool(nan_left[i]))

    return node(0)


def forest(model, classifier: bool):
    """RandomForest / ExtraTrees: each tree's prediction / n_trees in its leaves, one output per
    class (binary: class 1's probability only)."""
    trees, n = [], len(model.estimators_)
    if getattr(model, "n_outputs_", 1) != 1:
        raise UnsupportedModel(f"{type(model).__name__} with {model.n_outputs_} outputs (multi-output) is not supported")
    n_out = 1
    if classifier:
        n_classes = int(model.n_classes_)
        n_out = 1 if n_classes == 2 else n_classes
    for est in model.estimators_:
        value = est.tree_.value[:, 0, :]
        if classifier:
            value = value[:, :n_classes]
            norm = value.sum(axis=1, keepdims=True)
            norm[norm == 0.0] = 1.0
            proba = value / norm
            for k in ([1] if n_out == 1 else range(n_out)):
                trees.append(_tree(est.tree_, proba[:, k] / n))
        else:
            trees.append(_tree(est.tree_, value[:, 0] / n))
    objective = None if classifier else "regression"  # a classifier forest's raw score is the probability
    return trees, objective, n_out, []


def gradient_boosting(model, classifier: bool):
    """GradientBoosting: the init estimator's constant as one-leaf trees, then learning_rate *
    value stage by stage."""
    init = model.init_
    if not (init == "zero" or type(init).__name__ in ("DummyRegressor", "DummyClassifier")):
        raise UnsupportedModel(f"{type(model).__name__} with init={type(init).__name__}: its base score depends on "
                               "the row; only the default (a constant) or init='zero' can be explained exactly")
    n_out = model.estimators_.shape[1]
    base = model._raw_predict_init(np.zeros((1, model.n_features_in_), dtype=np.float32))[0]
    trees: list[Leaf | Split] = [Leaf(float(b), 0.0) for b in base]
    lr = model.learning_rate
    for stage in model.estimators_:
        for est in stage:
            trees.append(_tree(est.tree_, lr * est.tree_.value[:, 0, 0]))
    if classifier:
        if model.loss == "exponential":
            objective = None  # the raw score is half the log-odds: no LightGBM objective says so
        else:
            objective = "binary sigmoid:1" if n_out == 1 else f"multiclass num_class:{n_out}"
    else:
        objective = _GB_OBJECTIVES.get(model.loss)
        if objective is None:
            raise UnsupportedModel(f"GradientBoostingRegressor loss {model.loss!r} is not supported")
    return trees, objective, n_out, []


def _columns(model) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """HistGradientBoosting's column order (categorical first when it has categorical features)
    as original column indices, and each categorical column's categories (code -> raw value)."""
    pre = model._preprocessor
    n = model.n_features_in_
    if pre is None:
        return np.arange(n), {}
    original = np.full(n, -1)
    categories = {}
    for name, transformer, cols in pre.transformers_:
        cols = np.asarray(cols)
        idx = np.flatnonzero(cols) if cols.dtype == bool else cols.astype(np.int64)
        if name == "remainder" and len(idx) == 0:
            continue
        out = pre.output_indices_[name]
        if out.stop - out.start != len(idx):
            raise UnsupportedModel(f"unexpected HistGradientBoosting preprocessor ({name})")
        original[out] = idx
        if name == "encoder":
            for j, cats in zip(idx, transformer.categories_):
                cats = np.asarray(cats)
                if len(cats) and cats.dtype.kind == "f" and np.isnan(cats[-1]):
                    cats = cats[:-1]  # NaN is the missing side, not a category
                if cats.dtype.kind not in "iuf" or np.any(cats < 0) or np.any(cats != np.floor(cats)):
                    raise UnsupportedModel(
                        f"categorical feature {j} was trained on categories {list(cats[:3])}...; whystream's events "
                        "carry non-negative integer codes: train on those codes")
                categories[int(j)] = cats.astype(np.int64)
    if np.any(original < 0):
        raise UnsupportedModel("unexpected HistGradientBoosting preprocessor (a column is not used)")
    return original, categories


def _codes(bitset: np.ndarray) -> list[int]:
    return [w * 32 + b for w, word in enumerate(bitset.tolist()) for b in range(32) if (int(word) >> b) & 1]


def _hgb_tree(predictor, original: np.ndarray, categories: dict[int, np.ndarray]) -> Leaf | Split:
    nodes = predictor.nodes
    bitsets = predictor.raw_left_cat_bitsets

    def node(i: int) -> Leaf | Split:
        n = nodes[i]
        if n["is_leaf"]:
            return Leaf(float(n["value"]), float(n["count"]))
        f = int(original[n["feature_idx"]])
        left, right = node(int(n["left"])), node(int(n["right"]))
        nan_left = bool(n["missing_go_to_left"])
        if not n["is_categorical"]:
            return Split(f, left, right, float(n["count"]), threshold=float(n["num_threshold"]), default_left=nan_left)
        cats = categories[f]
        known = set(cats.tolist())
        goes_left = {int(cats[c]) for c in _codes(bitsets[n["bitset_idx"]]) if c < len(cats)}
        if nan_left:  # LightGBM sends NaN and unknown categories right: swap the sides
            return Split(f, right, left, float(n["count"]), categories=frozenset(known - goes_left))
        return Split(f, left, right, float(n["count"]), categories=frozenset(goes_left))

    return node(0)


def hist_gradient_boosting(model, classifier: bool):
    """HistGradientBoosting: _baseline_prediction as one-leaf trees, then the predictors."""
    original, categories = _columns(model)
    base = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    n_out = len(base)
    trees: list[Leaf | Split] = [Leaf(float(b), 0.0) for b in base]
    for iteration in model._predictors:
        for predictor in iteration:
            trees.append(_hgb_tree(predictor, original, categories))
    if classifier:
        objective = "binary sigmoid:1" if n_out == 1 else f"multiclass num_class:{n_out}"
    else:
        objective = _HGB_OBJECTIVES.get(model.loss)
        if objective is None:
            raise UnsupportedModel(f"HistGradientBoostingRegressor loss {model.loss!r} is not supported")
    return trees, objective, n_out, sorted(categories)
