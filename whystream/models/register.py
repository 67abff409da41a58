"""`whystream register`: put a tree ensemble trained anywhere into the registry.

    whystream register NAME MODEL_FILE --reference DATA_FILE [--threshold T] [--reason-codes CODES_FILE]

MODEL_FILE is what the library's own `save_model` writes (LightGBM's text format,
XGBoost's JSON or UBJSON with `whystream[xgboost]`; recognised by content and translated
into LightGBM's model text: whystream/models/families/), or, with the `whystream[mlflow]`
extra, an MLflow model URI (`models:/NAME/VERSION`, `runs:/RUN_ID/PATH`, `models:/m-...`)
of a model logged with mlflow.lightgbm or mlflow.xgboost.
DATA_FILE holds held-out rows (Parquet or CSV), one column per model feature,
named as the model names them: missing values empty / null / NaN, categorical
features as the integer codes the model was trained on. Their SHAP values
become the reference the stream's attributions are compared against, and their
deciles the drift histograms' bin edges.

Everything is checked before anything is written, and each problem ends in one
line naming the file and the column, row or count (a WhystreamError): not a
model whystream reads, a truncated one, a model the kernel cannot explain exactly
(or whose translation differs from its library's own predictions and SHAP values),
fewer than MIN_REFERENCE_ROWS rows, missing or extra columns, text in a numeric
column, a fraction in a categorical one. The registry then writes the version
in a temporary directory and renames it into place (whystream/models/registry.py).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import lightgbm as lgb
import numpy as np

from whystream.errors import UnsupportedModel, WhystreamError
from whystream.models import families
from whystream.models.families import first_line
from whystream.models.objectives import model_kind
from whystream.models.reason_codes import load_reason_codes
from whystream.models.registry import (
    ModelRegistry,
    RegisteredModel,
    categorical_features,
)

MIN_REFERENCE_ROWS = 1_000
_MISSING = {"", "na", "nan", "null", "none"}


@dataclass(frozen=True)
class Reference:
    X: np.ndarray  # [m, F] in the model's feature order, NaN = missing
    path: Path


def load_reference(path: Path | str, feature_names: list[str], categorical: list[str]) -> Reference:
    """Rows of `path` (.parquet / .pq, else CSV) as a matrix in the model's feature order."""
    path = Path(path)
    if not path.is_file():
        raise WhystreamError(f"reference {path}: no such file")
    if path.suffix.lower() in (".parquet", ".pq"):
        columns = _parquet_columns(path)
    else:
        columns = _csv_columns(path)
    missing = [f for f in feature_names if f not in columns]
    if missing:
        raise WhystreamError(f"reference {path}: missing column(s) {_names(missing)}; it needs one column per "
                             f"model feature ({len(feature_names)})")
    extra = [c for c in columns if c not in set(feature_names)]
    if extra:
        raise WhystreamError(f"reference {path}: column(s) {_names(extra)} are not features of the model")
    n = len(next(iter(columns.values()))) if columns else 0
    if n < MIN_REFERENCE_ROWS:
        raise WhystreamError(f"reference {path}: {n:,} rows; at least {MIN_REFERENCE_ROWS:,} held-out rows are "
                             "needed for a SHAP reference and drift bins")
    X = np.column_stack([columns[f] for f in feature_names])
    for j, f in enumerate(feature_names):
        column = X[:, j]
        infinite = np.flatnonzero(np.isinf(column))
        if len(infinite):
            raise WhystreamError(f"reference {path}: column {f}, row {infinite[0] + 1}: {float(column[infinite[0]])}; "
                                 "values must be finite (missing is empty / null)")
        if f in categorical:
            bad = np.flatnonzero(~np.isnan(column) & ((column != np.floor(column)) | (column < 0)))
            if len(bad):
                raise WhystreamError(f"reference {path}: column {f}, row {bad[0] + 1}: {float(column[bad[0]]):g} is not "
                                     "a category code; categorical features are the non-negative integer codes "
                                     "the model was trained on")
    return Reference(X, path)


def _names(names: list[str], shown: int = 8) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _parquet_columns(path: Path) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # ArrowInvalid & co.: not Parquet, truncated
        raise WhystreamError(f"reference {path}: not a readable Parquet file ({first_line(exc)})") from None
    columns = {}
    for name, column in zip(table.column_names, table.columns):
        kind = column.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
                or pa.types.is_null(kind)):
            raise WhystreamError(f"reference {path}: column {name} has type {kind}; features must be numbers "
                                 "(categorical features as integer codes)")
        columns[name] = np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    return columns


def _csv_columns(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise WhystreamError(f"reference {path}: not a readable CSV file ({first_line(exc)})") from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise WhystreamError(f"reference {path}: empty (a CSV reference needs a header of feature names)")
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if r]
    columns = {name: np.empty(len(body)) for name in header}
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise WhystreamError(f"reference {path}: line {i} has {len(row)} fields, the header {len(header)}")
        for name, cell in zip(header, row):
            text = cell.strip()
            if text.lower() in _MISSING:
                value = math.nan
            else:
                try:
                    value = float(text)
                except ValueError:
                    raise WhystreamError(f"reference {path}: column {name}, line {i}: {text[:40]!r} is not a "
                                         "number (categorical features as integer codes)") from None
            columns[name][i - 2] = value
    return columns


def register_model(registry: ModelRegistry, name: str, model: str, reference: Path | str,
                   threshold: float | None = None, reason_codes: Path | str | None = None,
                   adverse_direction: int = 1, redact: Iterable[str] = (), challenger: bool = False) -> RegisteredModel:
    """Check everything, then register; WhystreamError (one line) on any problem, nothing written.
    `challenger`: as the challenger of `name`'s champion (whystream/models/registry.py), not its latest."""
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise WhystreamError(f"model name {name!r}: it must not be empty, contain '/', start with '.' or have "
                             "spaces around it")
    translated = families.load(model)
    booster = translated.booster
    try:
        kind = model_kind(booster.model_to_string())
    except UnsupportedModel as exc:
        raise WhystreamError(f"{model}: cannot be explained exactly: {exc}") from None
    if translated.output_space:  # a classifier forest: its raw score is the probability
        kind = dataclasses.replace(kind, output_space=translated.output_space)
    if kind.needs_threshold and threshold is None:
        raise WhystreamError(f"{model}: a binary classifier needs --threshold (the probability its decisions "
                             "are taken against)")
    if threshold is not None and not math.isfinite(threshold):
        raise WhystreamError(f"--threshold: {threshold} is not a finite number")
    if threshold is not None and kind.probability and not 0.0 < threshold < 1.0:
        raise WhystreamError(f"--threshold: {threshold} is not a probability in (0, 1), which this "
                             f"{kind.objective if kind.objective != 'custom' else kind.output_space} model's scores are")
    features = booster.feature_name()
    categorical = _declared_categorical(booster, features)
    ref = load_reference(reference, features, categorical)
    codes = load_reason_codes(reason_codes, features) if reason_codes is not None else None
    unknown = sorted(set(redact) - set(features))
    if unknown:
        raise WhystreamError(f"--redact: {', '.join(unknown)} not features of {model}")
    try:
        return registry.register(name, booster, threshold, ref.X, reason_codes=codes,
                                 adverse_direction=adverse_direction, source=str(model), redact=redact,
                                 challenger=challenger, translated=translated)
    except UnsupportedModel as exc:
        raise WhystreamError(f"{model}: cannot be explained exactly: {exc}") from None


def _declared_categorical(booster: lgb.Booster, features: list[str]) -> list[str]:
    return categorical_features(booster.model_to_string(), features)


def describe(model: RegisteredModel) -> list[tuple[str, str]]:
    """(label, value) lines that `register` and `models NAME` print."""
    kind = model.kind
    return [
        ("model", f"{model.name} version {model.version}"),
        ("objective", f"{kind.objective}" + (f" ({kind.n_outputs} classes)" if kind.multiclass else "")
         + f", explained in {kind.output_space}"),
        ("family", f"{model.family} ({model.library})" if model.library else model.family),
        ("features", f"{len(model.feature_names)}"),
        ("categorical", ", ".join(model.categorical_features) or "none"),
        ("threshold", f"{model.threshold:g}" if model.has_threshold else "none"),
        ("reference rows", f"{len(model.reference_shap):,}"),
        ("reason codes", f"table {model.reason_codes_version}" if model.reason_codes_version
         else "none (codes are the feature names)"),
        ("adverse when", "the raw score is higher" if model.adverse_direction > 0 else "the raw score is lower"),
        ("redacted", ", ".join(sorted(model.redacted_features)) or "none"),
        ("registered at", model.created_at),
        ("from", model.source or "-"),
        ("stored in", str(model.path)),
    ]

