"""XGBoost boosters (`Booster.save_model`, JSON or UBJSON) translated into LightGBM's model text.

XGBoost itself reads the file (both formats, any version it can load) and hands back its
JSON (`save_raw("json")`); the trees are then re-expressed split by split so that
LightGBM's routing (whystream/treeshap/: `x <= threshold` in float64, NaN to the default
side, categories as bitsets) sends every row where XGBoost's predictor sends it
(src/predictor/predict_fn.h, src/common/categorical.h):

- XGBoost rounds each feature to float32 and goes left iff `float32(x) < t`. Rounding is
  monotone, so that is `x <= t'` with t' the largest double that rounds (to nearest, ties
  to even) to a float32 below t: `lgbtext.lt_float32`.
- NaN goes to the node's default child (`default_left`), as with LightGBM's missing type NaN.
- a categorical split sends the categories of its set RIGHT and everything else LEFT,
  invalid codes included (negative, >= 2^24). LightGBM sends the codes of its bitset left
  and everything else (NaN too) right: so the children are swapped and the bitset is
  XGBoost's set. Where XGBoost sends NaN to the set's side (default right), a split
  "NaN or not" on the same feature goes first, its NaN side holding a copy of that
  subtree; each copy carries half the subtree's cover, which leaves every TreeSHAP value
  as it was (a leaf's game is linear in its cover fractions).
- leaf values are float32; DART's tree weights (`weight_drop`) multiply them (exact in
  float64); the base score (`base_score`, in the objective's output space) becomes one
  leaf per output, in margin space (logit, log or identity, as XGBoost's ProbToMargin).
- covers are `sum_hessian` (what XGBoost's own TreeSHAP uses), scaled to integers
  (whystream/models/families/lgbtext.py).
- trees of a multiclass model are reordered into LightGBM's layout (tree i is class
  i % K); `num_parallel_tree` trees are summed, as XGBoost sums them.

Not translated, refused with a line: gblinear, multi-target trees (vector leaves), and
objectives without a LightGBM counterpart. Missing values are NaN, as whystream sends them
(a model trained with `missing=0` reads 0 as missing only in a DMatrix built that way).

`own` is XGBoost's raw margin (`output_margin=True`) and `pred_contribs`, which XGBoost
computes in float32: registration compares within a tolerance that says so
(whystream/models/register.py).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from whystream.errors import WhystreamError
from whystream.models.families import Translated, first_line, probe
from whystream.models.families.lgbtext import Leaf, Split, lt_float32, model_text

# XGBoost objective -> (LightGBM objective line, base score's ProbToMargin)
OBJECTIVES = {
    "binary:logistic": ("binary sigmoid:1", "logit"),
    "reg:logistic": ("cross_entropy", "logit"),
    "binary:logitraw": ("custom", "identity"),
    "reg:squarederror": ("regression", "identity"),
    "reg:squaredlogerror": ("regression", "identity"),
    "reg:pseudohubererror": ("huber", "identity"),
    "reg:absoluteerror": ("regression_l1", "identity"),
    "reg:quantileerror": ("quantile", "identity"),
    "count:poisson": ("poisson", "log"),
    "reg:gamma": ("gamma", "log"),
    "reg:tweedie": ("tweedie", "log"),
    "multi:softprob": ("multiclass num_class:{K}", "identity"),
    "multi:softmax": ("multiclass num_class:{K}", "identity"),
    "rank:pairwise": ("lambdarank", "identity"),
    "rank:ndcg": ("lambdarank", "identity"),
    "rank:map": ("lambdarank", "identity"),
}
MAX_NODES = 1 << 16  # a translated tree's nodes (copies of default-right categorical subtrees included)


MLFLOW_FLAVOR = "xgboost"


def recognises(path: Path, head: bytes) -> bool:
    """XGBoost's JSON (`{"learner": ...`) or UBJSON (`{` then an int-typed length and `learner`)."""
    text = head.lstrip()
    if text.startswith(b"{") and b'"learner"' in text[:200]:
        return True
    return head.startswith(b"{") and b"learner" in head[:32]


def load(path: Path) -> Translated:
    try:
        import xgboost as xgb
    except ImportError:
        raise WhystreamError(f"model file {path}: an XGBoost model; it needs the optional extra: "
                             "pip install 'whystream[xgboost]'") from None
    _probe(path)
    try:
        booster = _read(xgb, path.read_bytes())
        model = json.loads(booster.save_raw(raw_format="json"))
    except Exception as exc:  # XGBoostError on a truncated or damaged file
        raise WhystreamError(f"model file {path}: XGBoost cannot load it, truncated or damaged "
                             f"({first_line(exc)})") from None
    booster.set_param({"nthread": 1})
    try:
        text, K = translate(model, str(path))
    except (KeyError, IndexError, TypeError, ValueError, RecursionError) as exc:  # not trees as XGBoost writes them
        raise WhystreamError(f"model file {path}: damaged XGBoost model ({type(exc).__name__}: "
                             f"{first_line(exc)})") from None
    import lightgbm as lgb

    version = ".".join(map(str, model.get("version", [])))

    def own(X: np.ndarray, contributions: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        dm = xgb.DMatrix(X, missing=np.nan, feature_names=booster.feature_names, feature_types=booster.feature_types,
                         enable_categorical=True)
        raw = np.asarray(booster.predict(dm, output_margin=True), dtype=np.float64).reshape(len(X), K)
        if not contributions:
            return raw, None
        contrib = np.asarray(booster.predict(dm, pred_contribs=True), dtype=np.float64)
        return raw, contrib.reshape(len(X), K, X.shape[1] + 1)

    return Translated(family="xgboost", booster=lgb.Booster(model_str=text), library=f"xgboost {version}",
                      own=own, own_roundoff=2.0 ** -24)


def _read(xgb, data: bytes):
    """A Booster from the file's bytes: XGBoost tells JSON from UBJSON by content (from a
    file name it would guess by the extension)."""
    with warnings.catch_warnings(), xgb.config_context(verbosity=0):
        warnings.simplefilter("ignore")
        booster = xgb.Booster()
        booster.load_model(bytearray(data))
        return booster


def _probe(path: Path) -> None:
    """Some damage to a UBJSON file (a negative parent index, say) makes XGBoost crash the
    whole process (a segmentation fault) instead of raising: the file is loaded in a child first."""
    probe(path, "import xgboost\nfrom whystream.models.families.xgboost import _read\n"
                "_read(xgboost, open(sys.argv[1], 'rb').read()).save_raw('json')", "XGBoost")


def load_mlflow(uri: str) -> Translated:
    """A model logged with mlflow.xgboost: its MLmodel names the native file (`data`, UBJSON by
    default) that `save_model` wrote, read as any other; nothing is unpickled."""
    import tempfile

    import mlflow.artifacts
    import yaml

    with tempfile.TemporaryDirectory(prefix="whystream-mlflow-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["xgboost"]
        except Exception as exc:  # MlflowException, OSError, a malformed MLmodel
            raise WhystreamError(f"{uri}: MLflow cannot load it as an XGBoost model ({first_line(exc)})") from None
        data = (local / str(flavor.get("data", ""))).resolve()
        if not data.is_file() or local.resolve() not in data.parents:
            raise WhystreamError(f"{uri}: the xgboost flavor names no model file inside the model ({flavor.get('data')})")
        return load(data)


def translate(model: dict, where: str) -> tuple[str, int]:
    """LightGBM model text of XGBoost's JSON `model`, and its number of outputs."""
    learner = model["learner"]
    booster = learner["gradient_booster"]
    name = booster.get("name")
    if name not in ("gbtree", "dart"):
        raise WhystreamError(f"{where}: an XGBoost {name} model; only tree boosters (gbtree, dart) can be explained")
    gbtree = booster["gbtree"]["model"] if name == "dart" else booster["model"]
    weights = booster.get("weight_drop") or gbtree.get("weight_drop") or []
    params = learner["learner_model_param"]
    objective = learner["objective"]["name"]
    if objective not in OBJECTIVES:
        raise WhystreamError(f"{where}: XGBoost objective {objective!r} is not one whystream can explain "
                             f"(known: {', '.join(sorted(OBJECTIVES))})")
    n_class = int(params.get("num_class", "0"))
    K = max(1, n_class)
    if int(params.get("num_target", "1")) > 1:
        raise WhystreamError(f"{where}: a multi-target XGBoost model ({params['num_target']} targets); "
                             "whystream explains one output per event")
    n_features = int(params["num_feature"])
    names = learner.get("feature_names") or [f"f{j}" for j in range(n_features)]
    types = learner.get("feature_types") or ["q"] * n_features
    categorical = [j for j, t in enumerate(types) if t == "c"]
    base = _margins(params["base_score"], OBJECTIVES[objective][1], K)

    trees_json = gbtree["trees"]
    classes = gbtree.get("tree_info") or [0] * len(trees_json)
    per_class: list[list[Leaf | Split]] = [[Leaf(b, 1.0)] for b in base]
    for i, tree in enumerate(trees_json):
        if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise WhystreamError(f"{where}: tree {i} has vector leaves (multi_strategy=multi_output_tree); "
                                 "whystream explains trees with one value a leaf")
        weight = float(weights[i]) if i < len(weights) else 1.0
        per_class[classes[i] if K > 1 else 0].append(_tree(tree, weight, f"{where}: tree {i}"))
    counts = {len(ts) for ts in per_class}
    if len(counts) != 1:
        raise WhystreamError(f"{where}: classes have different numbers of trees ({sorted(counts)})")
    trees = [per_class[k][i] for i in range(counts.pop()) for k in range(K)]
    line = OBJECTIVES[objective][0].format(K=K)
    return model_text(trees, objective=line, feature_names=list(names), categorical=categorical, n_outputs=K,
                      where=where), K


def _margins(base_score: str, link: str, K: int) -> list[float]:
    values = [float(np.float32(v)) for v in base_score.strip("[]").split(",") if v.strip()]
    if len(values) == 1:
        values = values * K
    if len(values) != K:
        raise WhystreamError(f"base_score {base_score}: {len(values)} values for {K} outputs")
    if link == "logit":  # XGBoost clamps to (1e-6, 1 - 1e-6) first (kRtEps)
        values = [math.log(p / (1 - p)) for p in np.clip(np.float32(values), 1e-6, 1 - 1e-6).astype(float)]
    elif link == "log":
        values = [math.log(max(p, 1e-16)) for p in values]
    return [float(np.float32(v)) for v in values]  # XGBoost holds the margin as a float32


def _tree(tree: dict, weight: float, where: str) -> Leaf | Split:
    left, right = tree["left_children"], tree["right_children"]
    feature, cond = tree["split_indices"], tree["split_conditions"]
    default_left, cover = tree["default_left"], tree["sum_hessian"]
    split_type = tree.get("split_type") or [0] * len(left)
    cat_nodes = dict(zip(tree.get("categories_nodes", []), zip(tree.get("categories_segments", []),
                                                               tree.get("categories_sizes", []))))
    categories = tree.get("categories", [])
    nodes = 0

    def emit(n: int, scale: float, depth: int = 0) -> Leaf | Split:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_NODES or depth > MAX_NODES:  # a cycle in damaged child indices ends here too
            raise WhystreamError(f"{where}: more than {MAX_NODES} nodes once translated")
        if left[n] == -1:
            return Leaf(float(np.float32(cond[n])) * weight, cover[n] * scale)  # float32 x float32: exact in double
        f, c = int(feature[n]), cover[n] * scale
        if not split_type[n]:
            return Split(f, emit(left[n], scale, depth + 1), emit(right[n], scale, depth + 1), c,
                         threshold=lt_float32(np.float32(cond[n])), default_left=bool(default_left[n]))
        begin, size = cat_nodes[n]
        chosen = frozenset(int(v) for v in categories[begin:begin + size])
        if default_left[n]:  # NaN to the left child, which LightGBM's right side is
            return Split(f, emit(right[n], scale, depth + 1), emit(left[n], scale, depth + 1), c, categories=chosen)
        # NaN to the set's side: "NaN or not" first (threshold inf, NaN right); each side gets
        # half of that subtree's cover
        half = emit(right[n], scale / 2, depth + 1)
        inner = Split(f, half, emit(left[n], scale, depth + 1), c - cover[right[n]] * scale / 2, categories=chosen)
        return Split(f, inner, half, c, threshold=math.inf)

    return emit(0, 1.0)
