"""scikit-learn tree ensembles from skops files, translated into LightGBM model text.

What: RandomForest and ExtraTrees (classifier, regressor), GradientBoosting
(classifier binary and multiclass, regressor), HistGradientBoosting (classifier,
regressor; missing values, categorical features), from the file
`skops.io.dump(model, "model.skops")` writes, or an MLflow model logged with
`mlflow.sklearn.log_model(..., serialization_format="skops")`.

Why safe: a skops file is a zip of a JSON schema and numpy arrays; `skops.io.load`
builds objects only of the types it is told to trust.  Before loading,
`skops.io.get_untrusted_types` lists every type beyond skops' own safe defaults,
and the file is refused, naming it, if one is not in TRUSTED (the two tree
classes and HistGradientBoosting's input check; nothing else).  A pickle (a
`.pkl`, a `.joblib`, or one renamed `.skops`) is never unpickled: it is refused
with one line, as is an MLflow model logged as cloudpickle or pickle.

Why exact (`sklearn_trees` mirrors the predictors, each split re-expressed in
LightGBM's rule `x <= threshold` in float64):
- scikit-learn's trees compare float32(x) <= t with t a float64; since rounding
  to float32 is monotone that is x <= T for T = le_float32(t) (lgbtext);
- HistGradientBoosting compares float64 x <= t: T = t.  Its categorical splits
  become LightGBM category bitsets over the raw integer codes (the model's
  OrdinalEncoder undone); where its missing side is left, the sides are swapped,
  because LightGBM sends NaN and unknown categories right;
- base scores (GradientBoosting's init, HistGradientBoosting's baseline) become
  one-leaf trees ahead of the others, so LightGBM adds them in scikit-learn's
  order: GradientBoosting and HistGradientBoosting raw scores are bitwise equal;
- forests: each leaf holds value / n_trees (classifiers: the leaf's class
  fractions / n_trees), so the sum is the forest's mean up to the order of the
  rounding (measured <= 2 ulp, i.e. ~1e-16 relative);
- covers are `weighted_n_node_samples` (forests, GradientBoosting) and `count`
  (HistGradientBoosting), what shap's TreeExplainer uses.

Output spaces: classifier forests explain the probability (K = 1 for a binary
forest: class 1's probability; K classes otherwise; no LightGBM objective is
written, so the raw sum is the probability); GradientBoosting and
HistGradientBoosting explain the margin of their loss (log-odds: `binary`,
multiclass logits: `multiclass`, regression losses as LightGBM names them).

`own(X)` is scikit-learn's raw prediction (`predict_proba` for forests, the
private `_raw_predict` for the boosters, as shap reads `_baseline_prediction`)
and shap's TreeExplainer.  Where shap itself differs: it refuses multiclass
GradientBoosting (there, per class, the sum of shap's explanations of each
stage's tree times the learning rate), takes the exponential loss's base score for
the log-odds prior where scikit-learn's is half of it (there too, per stage), and
it routes HistGradientBoosting's
categorical splits by their meaningless numeric threshold on the unencoded
columns (there, `own` SHAP is LightGBM's pred_contrib of the translation; the
tests check those against a brute-force Shapley computation on scikit-learn's own
routing).
"""

from __future__ import annotations

import tempfile
import warnings
import zipfile
from pathlib import Path

import lightgbm as lgb
import numpy as np

from whystream.errors import UnsupportedModel, WhystreamError
from whystream.models.families import Translated, first_line
from whystream.models.families import sklearn_trees as translate
from whystream.models.families.lgbtext import check_feature_names, model_text

# Types beyond skops' defaults that a tree ensemble's file holds, and nothing else.
TRUSTED = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    # HistGradientBoosting with categorical features checks its numerical columns with
    # FunctionTransformer(partial(check_array, ...)): a partial of that one function only
    "functools.partial",
    "sklearn.utils.validation.check_array",
)
_KINDS = {  # class name -> (translator, classifier)
    "RandomForestClassifier": (translate.forest, True),
    "RandomForestRegressor": (translate.forest, False),
    "ExtraTreesClassifier": (translate.forest, True),
    "ExtraTreesRegressor": (translate.forest, False),
    "GradientBoostingClassifier": (translate.gradient_boosting, True),
    "GradientBoostingRegressor": (translate.gradient_boosting, False),
    "HistGradientBoostingClassifier": (translate.hist_gradient_boosting, True),
    "HistGradientBoostingRegressor": (translate.hist_gradient_boosting, False),
}
MLFLOW_FLAVOR = "sklearn"
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".skops")


def recognises(path: Path, head: bytes) -> bool:
    """A skops file (a zip with skops' schema.json), or a pickle (refused by `load`)."""
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                return "schema.json" in archive.namelist()
        except (OSError, zipfile.BadZipFile):
            return Path(path).suffix.lower() == ".skops"
    return _is_pickle(head) or Path(path).suffix.lower() in _PICKLE_SUFFIXES


def _is_pickle(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # PROTO opcode, protocols 2-5


def load(path: Path) -> Translated:
    """The skops file at `path` translated; WhystreamError (one line) if it is damaged, a pickle,
    holds a type whystream does not trust, or is not a supported tree ensemble."""
    path = Path(path)
    where = f"model file {path}"
    model = _load_skops(path, where)
    return translate_model(model, where)


def _load_skops(path: Path, where: str):
    try:
        import skops.io as sio
    except ImportError:
        raise WhystreamError(f"{where}: scikit-learn models need the optional extra: "
                             "pip install 'whystream[sklearn]'") from None
    if not path.is_file():
        raise WhystreamError(f"{where}: no such file")
    if not zipfile.is_zipfile(path):
        head = path.read_bytes()[:4096]
        if head.startswith(b"PK"):
            raise WhystreamError(f"{where}: damaged skops file (no zip directory: truncated?)")
        if _is_pickle(head) or path.suffix.lower() in (".pkl", ".pickle", ".joblib"):
            raise WhystreamError(f"{where}: a pickle, which whystream never loads (unpickling runs code); save the "
                                 "model with skops.io.dump(model, 'model.skops')")
        raise WhystreamError(f"{where}: not a skops file (skops.io.dump writes a zip archive)")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # BadZipFile, a missing or malformed schema.json, ...
        raise WhystreamError(f"{where}: damaged skops file ({first_line(exc)})") from None
    refused = [t for t in untrusted if t not in TRUSTED]
    if refused:
        raise WhystreamError(f"{where}: holds type {refused[0]}, which whystream does not trust (only scikit-learn's "
                             "tree ensembles are loaded); nothing was loaded")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. InconsistentVersionWarning: the translation is checked
            return sio.load(path, trusted=list(untrusted))
    except Exception as exc:
        raise WhystreamError(f"{where}: damaged skops file ({first_line(exc)})") from None


def translate_model(model, where: str) -> Translated:
    """A fitted scikit-learn tree ensemble as a Translated (LightGBM text)."""
    import sklearn

    name = type(model).__name__
    module = type(model).__module__
    if name not in _KINDS or not module.startswith("sklearn.ensemble"):
        supported = ", ".join(sorted({k.removesuffix("Classifier").removesuffix("Regressor") for k in _KINDS}))
        raise WhystreamError(f"{where}: a {module}.{name}, not a tree ensemble whystream explains ({supported})")
    translator, classifier = _KINDS[name]
    n_features = int(getattr(model, "n_features_in_", 0))
    if n_features == 0:
        raise WhystreamError(f"{where}: the {name} is not fitted")
    names = [str(n) for n in getattr(model, "feature_names_in_", [f"Column_{i}" for i in range(n_features)])]
    names = check_feature_names(names, where)
    try:
        trees, objective, n_out, categorical = translator(model, classifier)
    except UnsupportedModel as exc:
        raise UnsupportedModel(f"{where}: {exc}") from None
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise WhystreamError(f"{where}: damaged {name} ({first_line(exc)})") from None
    text = model_text(trees, feature_names=names, objective=objective, n_outputs=n_out, categorical=categorical)
    booster = lgb.Booster(model_str=text)
    version = getattr(model, "_sklearn_version", sklearn.__version__)
    return Translated(family="sklearn", booster=booster, library=f"scikit-learn {version}",
                      output_space="probability" if translator is translate.forest and classifier else None,
                      own=_own(model, translator, classifier, n_out, booster))


def _own(model, translator, classifier: bool, n_out: int, booster: lgb.Booster):
    def own(X: np.ndarray, contributions: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            return raw_and_shap(np.asarray(X, dtype=np.float64), contributions)
        except ValueError as exc:  # e.g. GradientBoosting refuses missing values
            raise WhystreamError(f"scikit-learn's {type(model).__name__} refuses the rows: {first_line(exc)}") \
                from None

    def raw_and_shap(X: np.ndarray, contributions: bool) -> tuple[np.ndarray, np.ndarray | None]:
        import shap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "X does not have valid feature names", shap's notices
            if translator is translate.forest:
                raw = model.predict_proba(X) if classifier else model.predict(X)[:, None]
            elif translator is translate.gradient_boosting:
                raw = (model.decision_function(X) if classifier else model.predict(X)).reshape(len(X), -1)
            else:
                raw = model._raw_predict(X)
            raw = raw[:, 1:] if raw.shape[1] == 2 and n_out == 1 else raw
            if not contributions:
                return np.asarray(raw, dtype=np.float64), None
            if translator is translate.hist_gradient_boosting and model._preprocessor is not None:
                contrib = booster.predict(X, pred_contrib=True).reshape(len(X), n_out, -1)
            elif translator is translate.gradient_boosting and (n_out > 1 or model.loss == "exponential"):
                contrib = _stagewise_shap(model, X, raw)
            else:
                explainer = shap.TreeExplainer(model)
                phi = np.asarray(explainer.shap_values(X, check_additivity=False))
                bias = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
                phi = phi.reshape(len(X), X.shape[1], -1)  # [n, F, outputs]
                if phi.shape[2] == 2 and n_out == 1:
                    phi, bias = phi[:, :, 1:], bias[1:]
                contrib = np.concatenate([phi.transpose(0, 2, 1),
                                          np.broadcast_to(bias[None, :, None], (len(X), n_out, 1))], axis=2)
        return np.asarray(raw, dtype=np.float64), np.asarray(contrib, dtype=np.float64)

    return own


def _stagewise_shap(model, X: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """GradientBoosting where shap refuses it (multiclass) or misreads its base (exponential loss):
    per output, shap's TreeExplainer of each stage's regression tree times the learning rate,
    plus the init's constant as scikit-learn computes it."""
    import shap

    n_out = model.estimators_.shape[1]
    base = model._raw_predict_init(X[:1].astype(np.float32))[0]
    contrib = np.zeros((len(X), n_out, X.shape[1] + 1))
    contrib[:, :, -1] = base
    for stage in model.estimators_:
        for k, est in enumerate(stage):
            explainer = shap.TreeExplainer(est)
            contrib[:, k, :-1] += model.learning_rate * np.asarray(explainer.shap_values(X, check_additivity=False))
            contrib[:, k, -1] += model.learning_rate * float(np.ravel(explainer.expected_value)[0])
    return contrib


def load_mlflow(uri: str) -> Translated:
    """An MLflow model URI (models:/, runs:/) of a model logged with mlflow.sklearn, if it was
    logged in the skops format; a pickled one (cloudpickle, pickle) is refused, never loaded."""
    try:
        import mlflow.artifacts
        import yaml
    except ImportError:
        raise WhystreamError(f"{uri}: MLflow model URIs need the optional extra: pip install 'whystream[mlflow]'") \
            from None
    with tempfile.TemporaryDirectory(prefix="whystream-mlflow-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            spec = yaml.safe_load((local / "MLmodel").read_text())
        except Exception as exc:  # MlflowException: no such model or run; no MLmodel file
            raise WhystreamError(f"{uri}: MLflow cannot load it ({first_line(exc)})") from None
        flavor = (spec or {}).get("flavors", {}).get("sklearn")
        if not flavor:
            raise WhystreamError(f"{uri}: not an mlflow.sklearn model")
        fmt = flavor.get("serialization_format")
        if fmt != "skops":
            raise WhystreamError(f"{uri}: logged with serialization_format={fmt!r}, a pickle, which whystream never "
                                 "loads; log it with mlflow.sklearn.log_model(..., serialization_format='skops')")
        model = _load_skops(local / flavor["pickled_model"], uri)
        return translate_model(model, uri)
