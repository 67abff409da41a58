"""Every tree-ensemble family whystream registers, read into one representation.

One module per family (`lightgbm`, `xgboost`, `sklearn`, `catboost`) reads the file
a data scientist already has, recognised by its content, and translates its trees
into LightGBM's model text: the one representation the registry stores and the
TreeSHAP kernel reads. A translation re-expresses every split so that LightGBM's
rule (numerical: left iff `x <= threshold` in float64, NaN to the default side;
categorical: a category bitset) routes every row exactly as the family's own
predictor does; e.g. XGBoost's `float32(x) < t` becomes `x <= t'`, with t' the
largest double that rounds to a float32 below t. Base scores become a one-leaf
tree, averaging (forests) and DART weights are folded into the leaf values.

Registration (`whystream.models.register`) then checks the translation against
the library's own raw predictions and SHAP values (`Translated.own`) on the
reference rows; a model that does not match is refused, never stored.

Each family module provides:
    recognises(path: Path, head: bytes) -> bool   # by content (head: the first 4 KiB)
    load(path: Path) -> Translated                # WhystreamError (one line) if damaged
and, for MLflow model URIs (`whystream[mlflow]`), optionally:
    MLFLOW_FLAVOR: str                            # the flavor in the model's MLmodel file
    load_mlflow(uri: str) -> Translated

`load(model)` picks the family: FAMILIES is the table, in the order families are tried.
A family module is imported only when a file is tested against it, and imports its
library only to load a model of its own: the worker never imports any of them (it reads
the stored LightGBM text).
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from whystream.errors import WhystreamError

FAMILIES = ("lightgbm", "xgboost", "catboost", "sklearn")  # modules of this package, tried in this order
# (sklearn last: it also claims pickles and .pkl / .joblib files, to refuse them with one line)
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
HEAD_BYTES = 4096
_XGBOOST_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")  # "[12:00:00] src/file.cc:42: " before its messages


@dataclass(frozen=True)
class Translated:
    family: str  # "lightgbm", "xgboost", "sklearn", "catboost"
    booster: Any  # lightgbm.Booster of the translated model text
    library: str  # the library and version that wrote the file, e.g. "xgboost 3.1.2"
    # None: the output space the objective implies; "probability" for classifier forests
    output_space: str | None = None
    # own(X, contributions=True): the library's own raw predictions [n, K] and contributions
    # [n, K, F + 1] (bias last; None when contributions=False: registration checks predictions
    # on every reference row, SHAP on a sample) of rows [n, F]; None for LightGBM's own text
    own: Callable[..., tuple[np.ndarray, np.ndarray | None]] | None = None
    # the unit roundoff of the arithmetic `own` adds trees in: 0 for float64 (compared within
    # 1e-6), 2^-24 for float32 (XGBoost: the tolerance grows with the number of additions)
    own_roundoff: float = 0.0


def load(model: str) -> Translated:
    """The model in file `model` (or behind an MLflow model URI), translated; WhystreamError
    (one line) for a file no family recognises, a damaged one, or a model none can explain."""
    if model.startswith(MLFLOW_SCHEMES):
        return _load_mlflow(model)
    path = Path(model)
    if not path.is_file():
        raise WhystreamError(f"model file {path}: no such file")
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as exc:
        raise WhystreamError(f"model file {path}: cannot be read ({exc.strerror or exc.__class__.__name__})") from None
    for name in FAMILIES:
        family = _family(name)
        if family.recognises(path, head):
            return family.load(path)
    raise WhystreamError(f"model file {path}: not a model whystream reads ({_known()}); " + _hint(head))


def _family(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def _known() -> str:
    return "LightGBM text, XGBoost JSON / UBJSON" + "".join(
        {"sklearn": ", scikit-learn skops", "catboost": ", CatBoost .cbm / JSON"}.get(n, "") for n in FAMILIES)


def _hint(head: bytes) -> str:
    if head.startswith(b"\x80") or head[:2] in (b"PK",):  # pickles the sklearn family did not claim; zips
        return "a pickle or an archive is never loaded: save the model in its library's own format"
    if not head:
        return "the file is empty"
    return ("save it as its library does (LightGBM: Booster.save_model; XGBoost: Booster.save_model('m.json'); "
            "scikit-learn: skops.io.dump(model, 'm.skops'); CatBoost: model.save_model('m.cbm'))")


def _load_mlflow(uri: str) -> Translated:
    try:
        from mlflow.models import get_model_info
    except ImportError:
        raise WhystreamError(f"{uri}: MLflow model URIs need the optional extra: pip install 'whystream[mlflow]'") \
            from None
    try:
        flavors = get_model_info(uri).flavors
    except Exception as exc:  # MlflowException and friends: no such model, no such run
        raise WhystreamError(f"{uri}: MLflow cannot load it ({first_line(exc)})") from None
    for name in FAMILIES:
        family = _family(name)
        if getattr(family, "MLFLOW_FLAVOR", None) in flavors:
            return family.load_mlflow(uri)
    raise WhystreamError(f"{uri}: an MLflow model of flavor(s) {', '.join(sorted(flavors))}; whystream reads "
                         + ", ".join(getattr(_family(n), "MLFLOW_FLAVOR", n) for n in FAMILIES))


# what the libraries import when they find it installed, and a probe never needs (1.5 s of imports)
_OPTIONAL = ("sklearn", "pandas", "pyarrow", "polars", "cudf", "dask", "datatable", "matplotlib", "graphviz")


def probe(path: Path, load_code: str, library: str) -> None:
    """Run `load_code` (Python, the file's path in sys.argv[1]) in a child process first:
    some damage makes a library's parser crash or abort the whole process instead of
    raising. WhystreamError naming what the child said (or the signal it died of) if it fails."""
    code = f"import sys\nfor m in {_OPTIONAL!r}:\n    sys.modules[m] = None\n{load_code}"
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=600)
    if run.returncode == 0:
        return
    said = [line for line in (run.stdout + run.stderr).splitlines() if "[Fatal]" in line or "Error" in line]
    if said:
        why = said[-1].strip().removeprefix("[LightGBM] ")
        why = why.split("Error: ", 1)[-1]  # the exception's class
        why = _XGBOOST_PREFIX.sub("", why)
    else:
        why = (f"the loader died with signal {-run.returncode}" if run.returncode < 0
               else f"the loader exited with status {run.returncode}")
    raise WhystreamError(f"model file {path}: {library} cannot load it, truncated or damaged ({why[:300]})")


def first_line(exc: BaseException) -> str:
    """What a library's exception says, as one line of at most 300 characters (without a
    log prefix such as XGBoost's "[12:00:00] src/file.cc:42: ")."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return _XGBOOST_PREFIX.sub("", lines[0] if lines else type(exc).__name__)[:300]
