"""`TreeShap`, the public explainer: a booster parsed once, rows explained in
chunks by the calling thread and a shared pool (the kernels release the GIL).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from whystream.treeshap.kernels import _raw_block, _shap_rows
from whystream.treeshap.model import _parse_model
from whystream.treeshap.vector import LANES

EXPLAINER_NAME = "whystream-treeshap"
EXPLAINER_VERSION = "1.0.0"

_ALGOS = {"quad": 0, "classic": 1}  # the kernels' `mode`

_PHI_BLOCK_BYTES = 1 << 18  # per-thread lane accumulators of a row block: ~256 KiB (L2)
_MAX_BLOCK_ROWS = 64
_MIN_CHUNK_ROWS = 4  # a batch is cut into at most n / 4 chunks, one a thread


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Worker threads shared by all explainers (the kernels release the GIL)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 1) - 1),
                                       thread_name_prefix="treeshap")
        return _POOL


class TreeShap:
    """Exact path-dependent TreeSHAP of a single-output LightGBM booster.

    >>> import lightgbm as lgb
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> booster = lgb.train({"objective": "regression", "num_leaves": 4, "verbose": -1},
    ...                     lgb.Dataset(X, X[:, 0] + 0.1 * rng.normal(size=200)), num_boost_round=5)
    >>> ts = TreeShap(booster)
    >>> phi = ts.shap_values(X)  # [n, F]: each row's attributions add up to its raw margin
    >>> bool(np.allclose(phi.sum(axis=1) + ts.expected_value, booster.predict(X, raw_score=True)))
    True

    All trees of the booster are explained (as shap's TreeExplainer does, whatever
    booster.best_iteration says); of a multiclass booster, those of `class_index`.  `algorithm`: "quad" (default) or "classic"
    (Lundberg's O(L D^2) recursion as LightGBM runs it; a cross-check).
    """

    def __init__(self, booster, *, algorithm: str = "quad", class_index: int | None = None):
        if algorithm not in _ALGOS:
            raise ValueError(f"algorithm must be one of {sorted(_ALGOS)}, not {algorithm!r}")
        model = _parse_model(booster.model_to_string(num_iteration=-1), class_index)
        self.class_index = class_index
        self._M = model.M
        self._mode = _ALGOS[algorithm]
        self._max_nodes = model.max_nodes
        self._max_d = model.max_d
        self._max_nch = model.max_nch
        self.algorithm = algorithm
        self.n_features: int = model.n_features
        names = list(booster.feature_name())
        self.feature_names: list[str] = names if len(names) == self.n_features else [
            f"Column_{i}" for i in range(self.n_features)]
        self.expected_value: float = float(model.expected_value)
        self.n_trees: int = model.n_trees
        self.n_classic_trees: int = model.n_classic_trees  # zero-cover trees run "classic"
        # rows per block: the block's lane accumulators (rows x F x 8 doubles) stay in L2; an
        # even number, so that trees of 4 Gauss points take every row with a partner
        self._block = 2 * max(1, min(_MAX_BLOCK_ROWS, _PHI_BLOCK_BYTES // (self.n_features * LANES * 8)) // 2)

    def _rows(self, X) -> tuple[np.ndarray, bool]:
        X = np.asarray(X)
        single = X.ndim == 1
        if single:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape [n, {self.n_features}], got {np.shape(X)}")
        if X.dtype != np.float64 or not X.flags.c_contiguous:
            X = np.ascontiguousarray(X, dtype=np.float64)
        return X, single

    def _run(self, X: np.ndarray, r0: int, r1: int, out: np.ndarray) -> None:
        _shap_rows(X, r0, r1, self._block, self._M, self._mode, out, self._max_nodes, self._max_d,
                   self._max_nch)

    def shap_values(self, X: np.ndarray) -> np.ndarray:
        """SHAP values [n, F] (float64) of rows X [n, F] (NaN = missing); a 1-D row gives [F].

        A batch is spread over numba.get_num_threads() threads (the calling thread and a
        shared pool); the kernel releases the GIL, so concurrent callers run in parallel
        too and share the pool's cores."""
        X, single = self._rows(X)
        n = X.shape[0]
        out = np.zeros((n, self.n_features), dtype=np.float64)
        n_chunks = min(numba.get_num_threads(), n // _MIN_CHUNK_ROWS) if n >= 2 * _MIN_CHUNK_ROWS else 1
        if n_chunks <= 1:
            self._run(X, 0, n, out)
        else:
            edges = (np.linspace(0, n, n_chunks + 1) // 2).astype(int) * 2  # even: rows in pairs
            edges[-1] = n
            pool = _pool()
            futures = [pool.submit(self._run, X, int(a), int(b), out) for a, b in zip(edges[1:-1], edges[2:])]
            try:
                self._run(X, 0, int(edges[1]), out)
            finally:
                for f in futures:
                    f.result()
        return out[0] if single else out

    def raw_score(self, X: np.ndarray) -> np.ndarray:
        """Raw margin, == booster.predict(X, raw_score=True) over all trees."""
        X, single = self._rows(X)
        n = X.shape[0]
        out = np.empty(n, dtype=np.float64)
        if n:
            _raw_block(X, 0, n, self._M, out)  # ~10 us a row: no need for threads
        return out[0] if single else out

    def warm_up(self) -> None:
        """Compile (or load from numba's on-disk cache) the kernels, on a tiny input."""
        X = np.zeros((2, self.n_features))
        X[1] = np.nan
        self.shap_values(X)
        self.raw_score(X)
