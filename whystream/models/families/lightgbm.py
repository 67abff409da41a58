"""LightGBM text models (`Booster.save_model`): already the representation the registry stores.

A damaged file is refused in one line; some damage (a number that is not one) makes
LightGBM's parser abort the whole process instead of raising, so the file is loaded once
in a child process first.

Random forests (`boosting=rf`; the model text says `average_output`): LightGBM's prediction
transforms the MEAN of the trees (GBDT::Predict divides the sum by the number of
iterations before the sigmoid, say), while its raw_score and pred_contrib are sums. The
translation divides every leaf value by the number of iterations and drops
`average_output`: its raw score is that mean, the margin the prediction transforms (so
`output_space` holds, as for a boosted model), and its TreeSHAP values are the forest's
pred_contrib divided by the same number (`own` says so, and registration checks it).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from whystream.errors import WhystreamError
from whystream.models.families import Translated, first_line, probe


MLFLOW_FLAVOR = "lightgbm"


def recognises(path: Path, head: bytes) -> bool:
    return head.startswith(b"tree\n") or head.startswith(b"tree\r\n")


def load(path: Path) -> Translated:
    import lightgbm as lgb

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WhystreamError(f"model file {path}: not a LightGBM text model ({exc.__class__.__name__})") from None
    if "\nend of trees" not in text:
        raise WhystreamError(f"model file {path}: truncated (no 'end of trees' line); save the model again")
    _probe(path)
    try:
        booster = lgb.Booster(model_str=text)
    except Exception as exc:  # LightGBMError on a damaged file
        raise WhystreamError(f"model file {path}: LightGBM cannot load it ({first_line(exc)})") from None
    return from_booster(booster)


def load_mlflow(uri: str) -> Translated:
    """A model logged with mlflow.lightgbm (a Booster, or an sklearn LGBMModel holding one)."""
    import lightgbm as lgb
    import mlflow.lightgbm

    try:
        model = mlflow.lightgbm.load_model(uri)
    except Exception as exc:  # MlflowException and friends: no such model, no such run, not the lightgbm flavor
        raise WhystreamError(f"{uri}: MLflow cannot load it as a LightGBM model ({first_line(exc)})") from None
    booster = getattr(model, "booster_", model)
    if not isinstance(booster, lgb.Booster):
        raise WhystreamError(f"{uri}: not a LightGBM model (MLflow returned {type(model).__name__})")
    return from_booster(booster)


def from_booster(booster) -> Translated:
    """A LightGBM booster as registered: a random forest's averaging folded into its leaves."""
    import lightgbm as lgb

    text = booster.model_to_string(num_iteration=-1)
    head = text[:max(text.find("\nTree="), 0)]
    version = re.search(r"^version=(\S+)$", head, re.MULTILINE)
    library = f"lightgbm {lgb.__version__}, model text {version.group(1) if version else '?'}"
    if "\naverage_output\n" not in head + "\n":
        return Translated(family="lightgbm", booster=booster, library=library)
    K = booster.num_model_per_iteration()
    n_iter = booster.num_trees() // K
    folded = lgb.Booster(model_str=fold_average(text, n_iter))

    def own(X: np.ndarray, contributions: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        raw = np.asarray(booster.predict(X, raw_score=True)).reshape(len(X), K) / n_iter
        if not contributions:
            return raw, None
        contrib = np.asarray(booster.predict(X, pred_contrib=True)).reshape(len(X), K, -1) / n_iter
        return raw, contrib

    return Translated(family="lightgbm", booster=folded, library=library + ", boosting=rf", own=own)


def fold_average(text: str, n_iter: int) -> str:
    """A random forest's text with every leaf value divided by `n_iter` and no `average_output`."""
    start = text.find("\nTree=")
    # tree_sizes (each tree's text length, for parallel parsing) no longer holds: LightGBM parses without
    head = re.sub(r"^tree_sizes=.*\n", "", text[:start].replace("\naverage_output\n", "\n"), flags=re.MULTILINE)

    def divide(m: re.Match) -> str:
        values = np.array(m.group(1).split(), dtype=np.float64) / n_iter
        return "leaf_value=" + " ".join(repr(float(v)) for v in values)

    body = re.sub(r"^leaf_value=(.*)$", divide, text[start:], flags=re.MULTILINE)
    body = body.replace("[boosting: rf]", "[boosting: gbdt]")
    return head + body


def _probe(path: Path) -> None:
    probe(path, "import lightgbm\nlightgbm.Booster(model_file=sys.argv[1])", "LightGBM")
