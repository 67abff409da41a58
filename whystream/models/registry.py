"""The model registry: versioned tree models, as LightGBM model text, with their SHAP reference.

Layout under the root:

    <name>/<version>/model.txt      booster.model_to_string() (of every family: the translation
                                    whystream/models/families/ made of an XGBoost model, say)
    <name>/<version>/meta.json      everything but the arrays, human readable: feature names,
                                    objective and output space, threshold, reason-code table,
                                    family and library the model came from
    <name>/<version>/reference.npz  reference_shap, bin_edges, reference_hist
    <name>/<version>/input_reference.npz  value bins, value proportions, missing rates and
                                    score distribution of the reference rows (whystream/models/input_reference.py)
    <name>/LATEST                   the champion: the most recently registered (or promoted) version
    <name>/CHALLENGER               a version registered with `--challenger-of` (none: no file)

A version is a content hash of the model, its threshold and feature names (and
of its reason-code table and adverse direction when given), so registering the
same model twice is a no-op and a version never changes.

Only versions the TreeSHAP kernel explains exactly get in: `register` reads the
objective (whystream/models/objectives.py; linear trees are refused), checks the kernel
against LightGBM on the reference rows (raw scores and additivity, every output) and,
for a translated model, LightGBM's and the kernel's raw scores and SHAP values against
the library's own (`Translated.own`, whystream/models/reference.py: check_own) before
anything is written. A version that a worker
cannot serve is refused here, in one line, not in the stream.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import lightgbm as lgb
import numpy as np

from whystream.errors import ModelNotFound, UnsupportedModel, WhystreamError
from whystream.models import input_reference
from whystream.models.families import Translated
from whystream.models.objectives import ModelKind, model_kind
from whystream.models.reference import (
    N_BINS,
    check_kernel,
    check_own,
    reference_shap,
    score_scale,
    shap_bin_edges,
    shap_histogram,
)


@dataclass(frozen=True)
class RegisteredModel:
    """A loaded model version: booster, decision threshold and SHAP reference.

    Loaded versions are cached and shared, so the arrays are read-only.
    """

    name: str
    version: str
    booster: lgb.Booster
    feature_names: list[str]
    categorical_features: list[str]
    threshold: float  # what the producer's decision is taken against; NaN when none was registered
    reference_shap: np.ndarray  # [m, F] SHAP values of a held-out sample, raw score (multiclass: its top class)
    bin_edges: np.ndarray  # [F, N_BINS + 1]; -inf .. +inf, strictly increasing
    reference_hist: np.ndarray  # [F, N_BINS] proportions of reference_shap per bin
    created_at: str  # ISO 8601, UTC
    metrics: dict = field(default_factory=dict)
    path: Path | None = None
    kind: ModelKind = ModelKind("binary", 1, "raw_margin")
    score_scale: float = 1.0  # the near-threshold band is in units of this (1 for probabilities)
    adverse_direction: int = 1  # +1: a higher raw score pushes toward the adverse decision; -1: a lower one
    reason_codes: tuple[tuple[str, str], ...] = ()  # (code, text) per feature, in model order
    reason_codes_version: str | None = None  # None: no table registered (the code is the feature name)
    source: str = ""  # where the model was registered from
    redacted_features: frozenset[str] = frozenset()  # values left out of explanations (attributions stay)
    input_reference: object | None = None  # jobs.input_reference.InputReference; None: registered before it was kept
    family: str = "lightgbm"  # the library family it was registered from (whystream/models/families/)
    library: str = ""  # the library and version that wrote the file; "" when registered before it was kept

    def feature_index(self) -> dict[str, int]:
        """Column of each feature in X and in SHAP arrays."""
        return {name: i for i, name in enumerate(self.feature_names)}

    @property
    def has_threshold(self) -> bool:
        return not np.isnan(self.threshold)


def _content_version(model_str: str, threshold: float | None, feature_names: list[str], extra: tuple = ()) -> str:
    h = hashlib.sha256()
    for part in (model_str, "none" if threshold is None else repr(float(threshold)), "\n".join(feature_names),
                 *extra):
        h.update(part.encode())
        h.update(b"\0")  # keeps the parts from running into each other
    return h.hexdigest()[:12]


def categorical_features(model_str: str, feature_names: list[str]) -> list[str]:
    # LightGBM records the declared categorical columns as indices in the parameters block.
    m = re.search(r"^\[categorical_feature: ([\d,]*)\]$", model_str, re.MULTILINE)
    if not m or not m.group(1):
        return []
    return [feature_names[int(i)] for i in m.group(1).split(",")]


class ModelRegistry:
    """Stores and loads model versions under `root`."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def register(
        self,
        name: str,
        booster: lgb.Booster,
        threshold: float | None,
        reference_X: np.ndarray,
        metrics: dict | None = None,
        *,
        reason_codes=None,
        adverse_direction: int = 1,
        source: str = "",
        redact: Iterable[str] = (),
        challenger: bool = False,
        translated: Translated | None = None,
    ) -> RegisteredModel:
        """Store `booster` as a version of `name` and make it the latest.

        `reference_X` is a held-out sample; its SHAP values become the baseline
        that live explanations are compared against. `threshold`: required for
        binary classifiers, optional (None) otherwise. `reason_codes`: a
        jobs.reason_codes.ReasonCodes table. The values of the features in
        `redact` never appear in its explanations (their attributions do).
        Raises UnsupportedModel (nothing written) for a model the kernel cannot
        explain exactly. `challenger`: store the version as the challenger of `name`'s champion,
        not as its latest (`promote` makes it the champion). `translated`: what
        whystream/models/families/ read `booster` from (family, library, its own predictions
        and SHAP values, checked too); None: a LightGBM booster.
        """
        if challenger and not (self.root / name / "LATEST").is_file():
            raise WhystreamError(f"{name} has no champion to challenge: register it without --challenger-of first")
        model_str = booster.model_to_string()
        feature_names = booster.feature_name()
        kind = model_kind(model_str)
        if translated is not None and translated.output_space:
            kind = dataclasses.replace(kind, output_space=translated.output_space)
        if threshold is None and kind.needs_threshold:
            raise UnsupportedModel("a binary classifier needs the threshold its decisions are taken against")
        if adverse_direction not in (1, -1):
            raise ValueError(f"adverse_direction must be 1 or -1, got {adverse_direction}")
        redact = sorted(set(redact))
        unknown = [f for f in redact if f not in feature_names]
        if unknown:
            raise WhystreamError(f"cannot redact {', '.join(unknown)}: not features of this model "
                                 f"({', '.join(feature_names[:8])}{', ...' if len(feature_names) > 8 else ''})")
        # Reason codes, the adverse direction and a redaction list are part of the version
        # (its explanations depend on them); versions without them keep the hash they always had.
        extra = ((() if reason_codes is None else (reason_codes.version,)) + (() if adverse_direction == 1 else ("lower",))
                 + (("redact:" + ",".join(redact),) if redact else ()))
        version = _content_version(model_str, threshold, feature_names, extra)
        model_dir = self.root / name / version
        X = np.asarray(reference_X, dtype=float)
        stored = lgb.Booster(model_str=model_str)  # what workers will load (an early-stopped model: its best trees)
        inputs = input_reference.compute(stored, X, threshold, adverse_direction)
        if not model_dir.exists():
            check_kernel(stored, kind, X)
            if translated is not None and translated.own is not None:
                check_own(stored, kind, translated, X)
            shap = reference_shap(stored, kind, X)
            edges = shap_bin_edges(shap)
            hist = shap_histogram(shap, edges) / len(shap)
            meta = {
                "name": name,
                "version": version,
                "feature_names": feature_names,
                "categorical_features": categorical_features(model_str, feature_names),
                "threshold": None if threshold is None else float(threshold),
                "objective": kind.objective,
                "output_space": kind.output_space,
                "n_outputs": kind.n_outputs,
                "score_scale": score_scale(stored, kind, X),
                "adverse_direction": adverse_direction,
                "reason_codes": None if reason_codes is None else reason_codes.to_json(),
                "reason_codes_version": None if reason_codes is None else reason_codes.version,
                "source": source,
                "created_at": datetime.now(timezone.utc).isoformat(),
                "metrics": metrics or {},
                "n_reference": len(shap),
                "n_bins": N_BINS,
                "redact": redact,
                "family": "lightgbm" if translated is None else translated.family,
                "library": f"lightgbm {lgb.__version__}" if translated is None else translated.library,
            }
            self._write_version(model_dir, model_str, meta, shap, edges, hist, inputs)
        elif input_reference.load(model_dir) is None:  # registered before input references were kept
            input_reference.save(model_dir, inputs)
            _load_version.cache_clear()
        if not challenger:
            _write_atomic(self.root / name / "LATEST", version + "\n")
            (self.root / name / "CHALLENGER").unlink(missing_ok=True)
        elif (self.root / name / "LATEST").is_file() and self.latest(name) != version:
            _write_atomic(self.root / name / "CHALLENGER", version + "\n")
        else:
            raise WhystreamError(f"{name}@{version} is the champion already; a challenger must be another version")
        return self.load(name, version)

    def challenger(self, name: str) -> str | None:
        """The version registered as the challenger of `name`'s champion, if any."""
        path = self.root / name / "CHALLENGER"
        return path.read_text().strip() if path.is_file() else None

    def promote(self, name: str, version: str) -> RegisteredModel:
        """Make `version` (registered before) the champion of `name`; it is no longer a challenger."""
        model = self.load(name, version)  # ModelNotFound for an unknown name or version
        _write_atomic(self.root / name / "LATEST", version + "\n")
        if self.challenger(name) == version:
            (self.root / name / "CHALLENGER").unlink()
        return model

    def _write_version(self, model_dir, model_str, meta, shap, edges, hist, inputs) -> None:
        # Build the whole version in a temp dir beside it, then rename: readers
        # never see half a version, and a concurrent writer of the same content wins harmlessly.
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=f".{model_dir.name}-"))
        tmp.chmod(0o755)  # mkdtemp makes it private; the registry is meant to be shared
        try:
            (tmp / "model.txt").write_text(model_str)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
            np.savez(tmp / "reference.npz", reference_shap=shap, bin_edges=edges, reference_hist=hist)
            input_reference.save(tmp, inputs)
            os.rename(tmp, model_dir)
        except OSError:
            if not model_dir.exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def models(self) -> list[str]:
        """Names of the registered models, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "LATEST").is_file())

    def versions(self, name: str) -> list[str]:
        """Versions of `name`, oldest first. Raises ModelNotFound for an unknown name."""
        self._check_name(name)
        found = [p for p in (self.root / name).iterdir() if (p / "meta.json").is_file()]
        return [p.name for p in sorted(found, key=lambda p: (_created_at(p), p.name))]

    def meta(self, name: str, version: str) -> dict:
        """A version's meta.json (no booster, no arrays: cheap, for listings)."""
        return json.loads((self.root / name / version / "meta.json").read_text())

    def latest(self, name: str) -> str:
        return (self.root / name / "LATEST").read_text().strip()

    def _check_name(self, name: str) -> None:
        models = self.models()
        if not models:
            raise ModelNotFound(f"no models in registry {self.root}; `whystream register` adds one (`whystream train` the demo model)")
        if name not in models:
            raise ModelNotFound(f"no model {name!r} in registry {self.root}; known: {', '.join(models)}")

    def load(self, name: str, version: str | None = None) -> RegisteredModel:
        """Load a version of `name`; None means the latest. Raises ModelNotFound."""
        self._check_name(name)
        if version is None:
            version = (self.root / name / "LATEST").read_text().strip()
        known = self.versions(name)
        if version not in known:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; known: {', '.join(known)}")
        return _load_version(self.root.resolve() / name / version)


def _created_at(version_dir: Path) -> str:
    return json.loads((version_dir / "meta.json").read_text())["created_at"]


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    os.chmod(tmp, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@functools.cache
def _load_version(version_dir: Path) -> RegisteredModel:
    # Cached per directory: a version's content never changes once written.
    meta = json.loads((version_dir / "meta.json").read_text())
    with np.load(version_dir / "reference.npz") as ref:
        arrays = {k: ref[k] for k in ("reference_shap", "bin_edges", "reference_hist")}
    for a in arrays.values():
        a.setflags(write=False)
    model_str = (version_dir / "model.txt").read_text()
    kind = model_kind(model_str)  # UnsupportedModel for a version that bypassed `register`
    kind = dataclasses.replace(kind, output_space=meta.get("output_space", kind.output_space))
    names = meta["feature_names"]
    table = {e["feature"]: (e["code"], e["text"]) for e in meta.get("reason_codes") or []}
    return RegisteredModel(
        name=meta["name"],
        version=meta["version"],
        booster=lgb.Booster(model_str=model_str),
        feature_names=names,
        categorical_features=meta["categorical_features"],
        threshold=float("nan") if meta["threshold"] is None else meta["threshold"],
        created_at=meta["created_at"],
        metrics=meta["metrics"],
        path=version_dir,
        kind=kind,
        score_scale=meta.get("score_scale", 1.0),
        adverse_direction=meta.get("adverse_direction", 1),
        reason_codes=tuple(table.get(f, (f, f)) for f in names),
        reason_codes_version=meta.get("reason_codes_version"),
        source=meta.get("source", ""),
        redacted_features=frozenset(meta.get("redact", ())),
        input_reference=input_reference.load(version_dir),
        family=meta.get("family", "lightgbm"),
        library=meta.get("library", ""),
        **arrays,
    )
