"""The model registry: versioned LightGBM models with their SHAP reference.

Layout under the root:

    <name>/<version>/model.txt      booster.model_to_string()
    <name>/<version>/meta.json      everything but the arrays, human readable
    <name>/<version>/reference.npz  reference_shap, bin_edges, reference_hist
    <name>/LATEST                   the most recently registered version

A version is a content hash of the model, its threshold and feature names, so
registering the same model twice is a no-op and a version never changes.
"""

from __future__ import annotations

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

from whystream.errors import ModelNotFound, WhystreamError

N_BINS = 10  # drift-histogram bins per feature
ATOM_TOLERANCE = 1e-9  # SHAP values this close (relative to the feature's scale) are one value for binning


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
    threshold: float  # decline when predicted probability >= threshold
    reference_shap: np.ndarray  # [m, F] SHAP values of a held-out sample, raw margin
    bin_edges: np.ndarray  # [F, N_BINS + 1]; -inf .. +inf, strictly increasing
    reference_hist: np.ndarray  # [F, N_BINS] proportions of reference_shap per bin
    created_at: str  # ISO 8601, UTC
    metrics: dict = field(default_factory=dict)
    path: Path | None = None
    redacted_features: frozenset[str] = frozenset()  # values left out of explanations (attributions stay)

    def feature_index(self) -> dict[str, int]:
        """Column of each feature in X and in SHAP arrays."""
        return {name: i for i, name in enumerate(self.feature_names)}


def shap_bin_edges(shap: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Per-feature bin edges [F, n_bins+1] near the deciles of `shap` [m, F].

    Each inner edge lies halfway between two distinct reference values, never
    on one: many features have a few SHAP values shared by most rows (binary
    inputs, features the model barely uses), and an edge sitting on such an atom
    would move the whole atom across it at the slightest change, a false drift.
    Values closer than ATOM_TOLERANCE (relative to the feature's largest |SHAP|)
    count as one: the same atom comes out of the summation a few ulps apart
    from row to row (measured: 294 and 12 rows of one atom 2.5e-21 apart), and
    an edge between such twins splits the atom as surely as one on it (it made
    PSI 0.15 for a binary feature in a drift-free stream).
    Features with fewer distinct gaps than bins get the spare edges above their
    range (bins empty in the reference). The outer edges are -inf and +inf.
    """
    n_features = shap.shape[1]
    edges = np.empty((n_features, n_bins + 1))
    deciles = np.linspace(0, 1, n_bins + 1)[1:-1]
    for j in range(n_features):
        values = np.unique(shap[:, j])
        tolerance = max(ATOM_TOLERANCE * float(np.max(np.abs(values))), np.finfo(float).tiny)
        starts = np.flatnonzero(np.diff(values) > tolerance) + 1  # where a new atom (or value) begins
        lows, highs = values[np.r_[0, starts]], values[np.r_[starts - 1, len(values) - 1]]
        above = np.searchsorted(lows, np.quantile(shap[:, j], deciles), side="right")
        above = above[(above > 0) & (above < len(lows))]
        inner = np.unique((highs[above - 1] + lows[above]) / 2)
        top = values[-1]
        step = max(abs(top), 1.0) * 1e-6
        spare = top + step * np.arange(1, n_bins - len(inner))
        edges[j] = np.concatenate([[-np.inf], inner, spare, [np.inf]])
    return edges


def shap_histogram(shap: np.ndarray, bin_edges: np.ndarray) -> np.ndarray:
    """Counts [F, B] of SHAP values [m, F] per bin; bin k is [edge k, edge k+1)."""
    n_features, n_bins = bin_edges.shape[0], bin_edges.shape[1] - 1
    counts = np.empty((n_features, n_bins), dtype=np.int64)
    for j in range(n_features):
        bins = np.searchsorted(bin_edges[j], shap[:, j], side="right") - 1
        counts[j] = np.bincount(bins, minlength=n_bins)
    return counts


def _content_version(model_str: str, threshold: float, feature_names: list[str], redact: list[str]) -> str:
    h = hashlib.sha256()
    # A redaction list is part of the version (a version's explanations are redacted alike);
    # versions without one keep the hash they always had.
    parts = (model_str, repr(float(threshold)), "\n".join(feature_names)) + (("\n".join(redact),) if redact else ())
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")  # keeps the parts from running into each other
    return h.hexdigest()[:12]


def _categorical_features(model_str: str, feature_names: list[str]) -> list[str]:
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
        threshold: float,
        reference_X: np.ndarray,
        metrics: dict | None = None,
        redact: Iterable[str] = (),
    ) -> RegisteredModel:
        """Store `booster` as a version of `name` and make it the latest.

        `reference_X` is a held-out sample; its SHAP values become the baseline
        that live explanations are compared against. The values of the features
        in `redact` never appear in its explanations (their attributions do).
        """
        model_str = booster.model_to_string()
        feature_names = booster.feature_name()
        redact = sorted(set(redact))
        unknown = [f for f in redact if f not in feature_names]
        if unknown:
            raise WhystreamError(f"cannot redact {', '.join(unknown)}: not features of this model "
                                 f"({', '.join(feature_names[:8])}{', ...' if len(feature_names) > 8 else ''})")
        version = _content_version(model_str, threshold, feature_names, redact)
        model_dir = self.root / name / version
        if not model_dir.exists():
            shap = booster.predict(np.asarray(reference_X, dtype=float), pred_contrib=True)[:, :-1]
            edges = shap_bin_edges(shap)
            hist = shap_histogram(shap, edges) / len(shap)
            meta = {
                "name": name,
                "version": version,
                "feature_names": feature_names,
                "categorical_features": _categorical_features(model_str, feature_names),
                "threshold": float(threshold),
                "created_at": datetime.now(timezone.utc).isoformat(),
                "metrics": metrics or {},
                "n_reference": len(shap),
                "n_bins": N_BINS,
                "redact": redact,
            }
            self._write_version(model_dir, model_str, meta, shap, edges, hist)
        _write_atomic(self.root / name / "LATEST", version + "\n")
        return self.load(name, version)

    def _write_version(self, model_dir, model_str, meta, shap, edges, hist) -> None:
        # Build the whole version in a temp dir beside it, then rename: readers
        # never see half a version, and a concurrent writer of the same content wins harmlessly.
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=f".{model_dir.name}-"))
        tmp.chmod(0o755)  # mkdtemp makes it private; the registry is meant to be shared
        try:
            (tmp / "model.txt").write_text(model_str)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
            np.savez(tmp / "reference.npz", reference_shap=shap, bin_edges=edges, reference_hist=hist)
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

    def _check_name(self, name: str) -> None:
        models = self.models()
        if not models:
            raise ModelNotFound(f"no models in registry {self.root}; run `whystream train` first")
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
    return RegisteredModel(
        name=meta["name"],
        version=meta["version"],
        booster=lgb.Booster(model_str=(version_dir / "model.txt").read_text()),
        feature_names=meta["feature_names"],
        categorical_features=meta["categorical_features"],
        threshold=meta["threshold"],
        created_at=meta["created_at"],
        metrics=meta["metrics"],
        path=version_dir,
        redacted_features=frozenset(meta.get("redact", ())),
        **arrays,
    )
