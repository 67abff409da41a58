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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Translated:
    family: str  # "lightgbm", "xgboost", "sklearn", "catboost"
    booster: Any  # lightgbm.Booster of the translated model text
    library: str  # the library and version that wrote the file, e.g. "xgboost 3.1.2"
    # None: the output space the objective implies; "probability" for classifier forests
    output_space: str | None = None
    # the library's own (raw predictions [n, K], contributions [n, K, F + 1], bias last) of rows
    # [n, F]; None for LightGBM, whose text is the model itself
    own: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None


# --- issue-22c: the scikit-learn and CatBoost families (the lead merges this into the dispatch table) ---
# Module names, imported on use: each family module needs its optional extra ([sklearn], [catboost]),
# and a module-level import here would make an import cycle (the family modules import Translated).
#   sklearn:  recognises skops zips and pickles (load refuses pickles); load_uri(uri) for mlflow.sklearn URIs
#   catboost: recognises .cbm (CBM1) and CatBoost's JSON export
FAMILY_MODULES_22C = {
    "sklearn": "whystream.models.families.sklearn",
    "catboost": "whystream.models.families.catboost",
}
