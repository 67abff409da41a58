"""CatBoost models (`.cbm`, or `save_model(format="json")`) translated into LightGBM model text.

What: oblivious-tree models with numeric features and one-hot categorical features
(one_hot_max_size at least the feature's number of categories); objectives Logloss
and CrossEntropy (`binary`: log-odds), MultiClass (`multiclass`: softmax logits),
RMSE (`regression`), MAE / Quantile (`regression_l1` / `quantile`), Poisson and
Tweedie (`poisson` / `tweedie`: log link).  The file is loaded by CatBoost itself
(`CatBoost.load_model`) and read through its JSON export, CatBoost's documented
description of the trees (what shap's CatBoostTreeModelLoader reads too).

Refused, each with one line: CTR-based categorical features (CatBoost replaces the
category by target statistics computed from the training data and hashes of
feature combinations, which an event's integer code does not determine; retrain
with one_hot_max_size above the feature's number of categories), text and
embedding features, non-symmetric trees (grow_policy Depthwise / Lossguide), other
objectives.

Why exact (CatBoost semantics mirrored: catboost/libs/model/cpu/evaluator,
binarization of features):
- an oblivious tree of depth D applies its D splits to every row and adds the
  leaf `sum_d bit_d << d`; it becomes a full binary tree whose root is the last
  split (as shap reads it), each leaf holding its value (MultiClass: K values a
  leaf, one LightGBM tree per class);
- a numeric split's bit is `float32(x) > border` (features are float32, borders
  float32): LightGBM's left child is bit 0 with threshold le_float32(border);
  NaN: nan_mode Min (JSON "AsFalse") gives bit 0 (NaN is below every border),
  Max ("AsTrue") bit 1; a feature that had no NaN in training ("AsIs") compares
  NaN > border, false: bit 0;
- a one-hot split's bit is `hash(category) == value`; CatBoost hashes the category's
  string, and events carry integer codes: which codes give bit 1 is asked of
  CatBoost itself (calc_leaf_indexes on rows with codes 0..MAX_CODE), and the split
  becomes a LightGBM category set (left = bit 1); NaN, negative and unseen codes
  go right, bit 0, as unseen categories do in CatBoost (codes above MAX_CODE are
  taken as unseen: CatBoost would route one of them to bit 1 only on a 32-bit hash
  collision);
- scale_and_bias: the scale multiplies the leaf values, the bias is a one-leaf
  tree added last, where CatBoost adds it (bitwise equal raw scores at scale 1);
- covers are the leaf weights (sums of the training rows' weights in each leaf,
  integers for unweighted data), an internal node's the sum of its leaves', as
  CatBoost's ShapValues uses them.

`own(X)` is CatBoost's RawFormulaVal prediction and `get_feature_importance(type=
"ShapValues")`, categorical columns given to CatBoost as the codes' strings.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import lightgbm as lgb
import numpy as np

from whystream.errors import WhystreamError
from whystream.models.families import Translated, first_line
from whystream.models.families.lgbtext import Leaf, Split, check_feature_names, le_float32, model_text

MAX_CODE = 4095  # one-hot categories are matched against the integer codes 0..MAX_CODE
_OBJECTIVES = {"Logloss": "binary sigmoid:1", "CrossEntropy": "binary sigmoid:1", "RMSE": "regression",
               "MAE": "regression_l1", "Quantile": "quantile", "Poisson": "poisson", "Tweedie": "tweedie"}
_JSON_HEAD = re.compile(rb'^\s*\{\s*"(features_info|model_info|oblivious_trees|scale_and_bias)"\s*:')


def recognises(path: Path, head: bytes) -> bool:
    """CatBoost's binary format starts with CBM1; its JSON export with one of its top-level keys."""
    return head.startswith(b"CBM1") or bool(_JSON_HEAD.match(head))


def load(path: Path) -> Translated:
    path = Path(path)
    where = f"model file {path}"
    try:
        import catboost
    except ImportError:
        raise WhystreamError(f"{where}: CatBoost models need the optional extra: pip install 'whystream[catboost]'") \
            from None
    if not path.is_file():
        raise WhystreamError(f"{where}: no such file")
    fmt = "cbm" if path.read_bytes()[:4] == b"CBM1" else "json"
    model = catboost.CatBoost()
    if fmt == "json":  # CatBoost's own JSON reader takes a truncated file for an empty model
        try:
            json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise WhystreamError(f"{where}: CatBoost cannot load it (not complete JSON: {first_line(exc)})") from None
    try:
        model.load_model(str(path), format=fmt)
        with tempfile.TemporaryDirectory(prefix="whystream-catboost-") as tmp:
            model.save_model(f"{tmp}/model.json", format="json")
            spec = json.loads(Path(f"{tmp}/model.json").read_text())
    except Exception as exc:  # CatBoostError on a damaged file, JSONDecodeError
        raise WhystreamError(f"{where}: CatBoost cannot load it ({first_line(exc)})") from None
    try:
        return _translate(model, spec, where, catboost.__version__)
    except WhystreamError:
        raise
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:  # a JSON CatBoost took but is not whole
        raise WhystreamError(f"{where}: damaged CatBoost model ({type(exc).__name__}: {first_line(exc)})") from None


def _translate(model, spec: dict, where: str, version: str) -> Translated:
    info = spec.get("features_info") or {}
    if spec.get("trees") or spec.get("non_symmetric_trees"):
        raise WhystreamError(f"{where}: non-symmetric trees (grow_policy Depthwise or Lossguide) are not supported; "
                             "retrain with the default grow_policy SymmetricTree")
    if not spec.get("oblivious_trees"):
        raise WhystreamError(f"{where}: a CatBoost model without trees (truncated, or never trained)")
    for kind in ("text_features", "embedding_features"):
        if info.get(kind):
            raise WhystreamError(f"{where}: {kind.replace('_', ' ')} are not supported")
    if info.get("ctrs") or any(s.get("split_type") not in ("FloatFeature", "OneHotFeature")
                               for tree in spec["oblivious_trees"] for s in tree["splits"]):
        raise WhystreamError(f"{where}: CTR-based categorical features (target statistics of the training data, "
                             "which an integer code does not determine); retrain with one_hot_max_size above the "
                             "number of categories of each categorical feature")
    loss = spec.get("model_info", {}).get("params", {}).get("loss_function", {}).get("type", "")
    floats = {f["feature_index"]: f for f in info.get("float_features", [])}
    cats = {f["feature_index"]: f for f in info.get("categorical_features", [])}
    n_features = max(len(model.feature_names_ or ()),
                     1 + max([f["flat_feature_index"] for f in [*floats.values(), *cats.values()]], default=-1))
    names = list(model.feature_names_ or ())
    names = check_feature_names(names, where) if len(names) == n_features else [
        f"Column_{i}" for i in range(n_features)]
    bias = spec.get("scale_and_bias", [1.0, [0.0]])
    scale, biases = float(bias[0]), [float(b) for b in np.ravel(bias[1])]
    n_out = len(biases)
    if loss == "MultiClass":
        objective = f"multiclass num_class:{n_out}"
    else:
        objective = _OBJECTIVES.get(loss) if n_out == 1 else None
    if objective is None:
        raise WhystreamError(f"{where}: loss_function {loss or '(none)'} is not one whystream explains "
                             f"({', '.join([*_OBJECTIVES, 'MultiClass'])})")
    codes = _one_hot_codes(model, spec, cats, names, where)
    trees = []
    for t, tree in enumerate(spec["oblivious_trees"]):
        levels = [_split(s, floats, cats, codes.get((t, d))) for d, s in enumerate(tree["splits"])]
        values = np.asarray(tree["leaf_values"], dtype=np.float64).reshape(-1, n_out) * scale
        weights = np.asarray(tree["leaf_weights"], dtype=np.float64)
        for k in range(n_out):
            trees.append(_full_tree(levels, values[:, k], weights))
    trees += [Leaf(b, 0.0) for b in biases]  # CatBoost adds the bias after the trees
    categorical = sorted(f["flat_feature_index"] for f in cats.values())
    text = model_text(trees, feature_names=names, objective=objective, n_outputs=n_out, categorical=categorical)
    return Translated(family="catboost", booster=lgb.Booster(model_str=text), library=f"catboost {version}",
                      own=_own(model, names, categorical, n_out))


def _cat_columns(cats: dict) -> list[int]:
    return sorted(f["flat_feature_index"] for f in cats.values())


def _split(s: dict, floats: dict, cats: dict, codes: frozenset[int] | None) -> tuple:
    """(feature, threshold, nan_left, categories): LightGBM's left child is bit 0, except for
    one-hot splits, whose left child is bit 1 (the category)."""
    if s["split_type"] == "FloatFeature":
        f = floats[s["float_feature_index"]]
        nan_bit = 1 if f.get("nan_value_treatment") == "AsTrue" else 0
        return f["flat_feature_index"], le_float32(np.float32(s["border"])), nan_bit == 0, None
    return cats[s["cat_feature_index"]]["flat_feature_index"], 0.0, False, codes


def _full_tree(levels: list[tuple], values: np.ndarray, weights: np.ndarray) -> Leaf | Split:
    """The oblivious tree as a binary tree, the last split at the root; leaf index sum bit_d << d."""
    def node(depth: int, index: int) -> tuple[Leaf | Split, float]:
        if depth < 0:
            return Leaf(float(values[index]), float(weights[index])), float(weights[index])
        feature, threshold, nan_left, categories = levels[depth]
        zero, w0 = node(depth - 1, index)
        one, w1 = node(depth - 1, index | (1 << depth))
        if categories is not None:
            return Split(feature, one, zero, w0 + w1, categories=categories), w0 + w1
        return Split(feature, zero, one, w0 + w1, threshold=threshold, default_left=nan_left), w0 + w1

    if not levels:
        return Leaf(float(values[0]), float(weights[0]))
    return node(len(levels) - 1, 0)[0]


def _one_hot_codes(model, spec: dict, cats: dict, names: list[str], where: str) -> dict:
    """{(tree, depth): the integer codes CatBoost sends to bit 1} for every one-hot split."""
    wanted = [(t, d, s) for t, tree in enumerate(spec["oblivious_trees"]) for d, s in enumerate(tree["splits"])
              if s["split_type"] == "OneHotFeature"]
    if not wanted:
        return {}
    from catboost import Pool

    rows = np.arange(MAX_CODE + 1)
    frame = _frame(np.zeros((len(rows), len(names))), names, _cat_columns(cats), rows)
    leaves = model.calc_leaf_indexes(Pool(frame, cat_features=_cat_columns(cats)))
    codes = {}
    for t, d, s in wanted:
        hit = frozenset(rows[(leaves[:, t] >> d) & 1 == 1].tolist())
        if not hit:
            name = names[cats[s["cat_feature_index"]]["flat_feature_index"]]
            raise WhystreamError(f"{where}: categorical feature {name} was trained on a category that is not an "
                                 f"integer code 0..{MAX_CODE}; whystream's events carry integer codes")
        codes[(t, d)] = hit
    return codes


def _frame(X: np.ndarray, names: list[str], cat_columns: list[int], codes: np.ndarray | None = None):
    """Rows for CatBoost: categorical columns as the strings of their integer codes."""
    import pandas as pd

    frame = pd.DataFrame({name: X[:, i] for i, name in enumerate(names)})
    for i in cat_columns:
        col = X[:, i] if codes is None else codes
        frame[names[i]] = ["nan" if np.isnan(v) else str(int(v)) for v in np.asarray(col, dtype=np.float64)]
    return frame


def _own(model, names: list[str], cat_columns: list[int], n_out: int):
    def own(X: np.ndarray, contributions: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        from catboost import CatBoostError, Pool

        try:
            pool = Pool(_frame(np.asarray(X, dtype=np.float64), names, cat_columns), cat_features=cat_columns)
            raw = np.asarray(model.predict(pool, prediction_type="RawFormulaVal"), dtype=np.float64)
            shap = np.asarray(model.get_feature_importance(pool, type="ShapValues"), dtype=np.float64) \
                if contributions else None
        except CatBoostError as exc:
            raise WhystreamError(f"CatBoost refuses the rows: {first_line(exc)}") from None
        return raw.reshape(len(X), n_out), None if shap is None else shap.reshape(len(X), n_out, -1)

    return own
