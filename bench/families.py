"""Benchmark: every model family whystream registers, per core, side by side in one run.

For each family in FAMILIES, a reference model of ~300 trees is trained on the data of
bench/treeshap.py (50 features, 5% NaN, two categorical features), saved as its library
saves it, read by whystream/models/families/ (the translation the registry stores), and
timed on one thread, in turns with:
- shap's TreeExplainer on the library's own model (for LightGBM, XGBoost and CatBoost, shap
  calls the library's own TreeSHAP: booster.predict(pred_contrib / pred_contribs),
  get_feature_importance(type="ShapValues"), forced to one thread; for scikit-learn its
  own C++ TreeSHAP);
- the library's own TreeSHAP on one thread, where the family has one (XGBoost's pred_contribs);
- for XGBoost, the newest XGBoost as well (3.4.1, Quadrature-TreeSHAP on CPU), which
  declares Python >= 3.12: it is installed (once, `pip install --no-deps
  --ignore-requires-python --target bench/results/xgboost-3.4.1 xgboost-cpu==3.4.1`,
  the CPU-only build of the same release) apart from the project's environment and timed
  in a child process against our kernel, in turns, on the same rows and model file.
It reports rows/s (wall clock, best of a few turns) and rows per CPU-second of the
calling thread (which time-sharing on a busy box does not move), the per-core ratios
(targets: >= 10x shap; XGBoost >= 2x its own pred_contribs), single-row p50 (target
<= 0.25 ms), and max |ours - theirs|.

    python bench/families.py [--quick] [--json PATH] [--families lightgbm,xgboost,sklearn-rf,sklearn-hgb,catboost]

A family is one entry of FAMILIES: how to train and save its reference model, and how to
load the library's own model for shap and for its own TreeSHAP.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numba
import numpy as np

if __package__ in (None, ""):  # `python bench/families.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write  # noqa: E402
from bench.treeshap import CATEGORICAL, N_FEATURES, best_rows_per_s, latency_ms, make_data  # noqa: E402
from whystream.models import families  # noqa: E402
from whystream.treeshap import TreeShap  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TREES = 300
NEWEST_XGBOOST = "3.4.1"
NEWEST_XGBOOST_DIR = RESULTS / f"xgboost-{NEWEST_XGBOOST}"


def _train_lightgbm(X, y, path: Path) -> None:
    import lightgbm as lgb

    params = dict(objective="binary", num_leaves=31, learning_rate=0.05, min_data_in_leaf=20, max_bin=63,
                  feature_fraction=0.9, bagging_fraction=0.8, bagging_freq=1, seed=7, verbose=-1, num_threads=1)
    lgb.train(params, lgb.Dataset(X, y, categorical_feature=list(CATEGORICAL)), TREES).save_model(str(path))


def _lightgbm_native(path: Path):
    import lightgbm as lgb
    import shap

    from bench.treeshap import _OneThread

    booster = lgb.Booster(model_file=str(path))
    explainer = shap.TreeExplainer(booster)
    explainer.model.original_model = _OneThread(booster)  # shap calls its predict(pred_contrib=True)
    return explainer, None, None  # shap runs LightGBM's own TreeSHAP


def _xgboost_types() -> list[str]:
    return ["c" if j in CATEGORICAL else "q" for j in range(N_FEATURES)]


def _train_xgboost(X, y, path: Path) -> None:
    import xgboost as xgb

    data = xgb.DMatrix(X, y, feature_types=_xgboost_types(), enable_categorical=True)
    params = dict(objective="binary:logistic", max_depth=5, eta=0.05, max_bin=63, subsample=0.8,
                  colsample_bytree=0.9, max_cat_to_onehot=1, seed=7, nthread=1)
    xgb.train(params, data, TREES).save_model(str(path))


def _xgboost_native(path: Path):
    import shap
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(path))
    booster.set_param({"nthread": 1})  # shap calls its predict(pred_contribs=True) too, with its own DMatrix

    def dmatrix(rows):
        return xgb.DMatrix(rows, missing=np.nan, feature_types=_xgboost_types(), enable_categorical=True, nthread=1)

    own = lambda rows: booster.predict(dmatrix(rows), pred_contribs=True)  # noqa: E731
    return shap.TreeExplainer(booster), own, f"xgboost {xgb.__version__}"


def _train_sklearn_rf(X, y, path: Path) -> None:
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    sio.dump(RandomForestClassifier(TREES, max_depth=8, random_state=7, n_jobs=1).fit(X, y), path)


def _train_sklearn_hgb(X, y, path: Path) -> None:
    import skops.io as sio
    from sklearn.ensemble import HistGradientBoostingClassifier

    # categorical columns as numbers: shap reads HistGradientBoosting's categorical splits wrongly
    sio.dump(HistGradientBoostingClassifier(max_iter=TREES, learning_rate=0.05, early_stopping=False,
                                            random_state=7).fit(X, y), path)


class _ClassOne:
    """shap's TreeExplainer of a binary scikit-learn classifier, for class 1 (what we explain)."""

    def __init__(self, explainer):
        self._explainer = explainer

    def shap_values(self, rows):
        values = np.asarray(self._explainer.shap_values(rows))
        return values[..., 1] if values.ndim == 3 else values


def _sklearn_native(path: Path):
    import shap
    import skops.io as sio

    from whystream.models.families.sklearn import TRUSTED

    model = sio.load(path, trusted=list(TRUSTED))
    return _ClassOne(shap.TreeExplainer(model)), None, None  # shap's own C++ TreeSHAP, one thread


def _train_catboost(X, y, path: Path) -> None:
    from catboost import CatBoostClassifier

    CatBoostClassifier(iterations=TREES, depth=6, learning_rate=0.05, random_seed=7, thread_count=1, verbose=0,
                       allow_writing_files=False).fit(X, y).save_model(str(path))  # categorical columns as numbers


class _CatBoostOneThread:
    """A CatBoost model whose ShapValues (what shap calls on it) run on one thread."""

    def __init__(self, model):
        self._model = model

    def get_feature_importance(self, **kwargs):
        return self._model.get_feature_importance(thread_count=1, **kwargs)


def _catboost_native(path: Path):
    import shap
    from catboost import CatBoost

    model = CatBoost()
    model.load_model(str(path))
    explainer = shap.TreeExplainer(model)
    explainer.model.original_model = _CatBoostOneThread(model)
    return explainer, None, None  # shap runs CatBoost's own ShapValues


@dataclass(frozen=True)
class Family:
    train: Callable  # (X, y, path): train a ~300-tree reference model and save it as its library does
    suffix: str  # of the saved file
    native: Callable  # path -> (shap.TreeExplainer of the library's model, on one thread; the library's own
    #                             TreeSHAP of rows on one thread and its name, or None, None when shap runs it as is)


FAMILIES = {
    "lightgbm": Family(_train_lightgbm, "txt", _lightgbm_native),
    "xgboost": Family(_train_xgboost, "json", _xgboost_native),
    "sklearn-rf": Family(_train_sklearn_rf, "skops", _sklearn_native),  # RandomForestClassifier, depth 8
    "sklearn-hgb": Family(_train_sklearn_hgb, "skops", _sklearn_native),  # HistGradientBoostingClassifier
    "catboost": Family(_train_catboost, "cbm", _catboost_native),  # depth 6 (its own ShapValues is shap's)
}


def cpu_rows_per_s(fns: dict, X: np.ndarray, budget_s: float, repeats: int) -> dict:
    """Best-of-`repeats` rows per CPU-second of the calling thread (time.thread_time) of each
    fn(X[:n]), every fn on one thread in this one: a per-core figure that time-sharing with
    the rest of a busy box does not move (wall-clock rows/s does)."""
    sizes = {}
    for name, fn in fns.items():
        fn(X[:16])
        t0 = time.thread_time()
        fn(X[:16])
        sizes[name] = int(min(len(X), 20_000, max(16, budget_s / max((time.thread_time() - t0) / 16, 1e-7))))
    best = dict.fromkeys(fns, 0.0)
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.thread_time()
            fn(X[:sizes[name]])
            best[name] = max(best[name], sizes[name] / max(time.thread_time() - t0, 1e-9))
    return best


def reference_model(name: str, family: Family, X, y) -> Path:
    path = RESULTS / "models" / f"families-{name}-{TREES}-n{len(X)}.{family.suffix}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        family.train(X, y, path)
        print(f"{name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def bench_family(name: str, family: Family, path: Path, X: np.ndarray, quick: bool) -> dict:
    budget, repeats = (0.15, 2) if quick else (0.6, 5)
    t0 = time.perf_counter()
    translated = families.load(str(path))
    load_s = time.perf_counter() - t0
    ours = TreeShap(translated.booster)
    ours.warm_up()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer, own, own_name = family.native(path)
        check = X[:200]
        theirs = np.asarray(explainer.shap_values(check)).reshape(len(check), -1)[:, :N_FEATURES]

        def ours_1t(rows):
            numba.set_num_threads(1)
            try:
                return ours.shap_values(rows)
            finally:
                numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)

        def shap_1t(rows):
            return explainer.shap_values(rows)

        fns = {"ours_1t": ours_1t, "shap_1t": shap_1t}
        if own_name:
            fns["own_1t"] = own
        tp = best_rows_per_s(fns, X, budget, repeats)
        cpu = cpu_rows_per_s(fns, X, budget, repeats)
        lat_budget = budget * (2 if quick else 3)
        lat = {"ours": latency_ms(ours.shap_values, X, lat_budget), "shap": latency_ms(shap_1t, X, lat_budget)}
    res = {"library": translated.library, "trees": ours.n_trees, "load_and_translate_s": round(load_s, 2),
           "max_abs_diff_vs_shap": float(np.abs(ours.shap_values(check) - theirs).max()),
           "rows_per_s": {k: round(v, 1) for k, v in tp.items()},
           "rows_per_cpu_s": {k: round(v, 1) for k, v in cpu.items()}, "latency_ms": lat,
           "ratio": {"ours_1t / shap_1t (per core)": tp["ours_1t"] / tp["shap_1t"],
                     "ours / shap (per CPU-second)": cpu["ours_1t"] / cpu["shap_1t"],
                     "shap p50 / ours p50": lat["shap"]["p50"] / lat["ours"]["p50"]}}
    if own_name:
        res["own"] = own_name
        res["ratio"][f"ours_1t / {own_name} (per core)"] = tp["ours_1t"] / tp["own_1t"]
        res["ratio"][f"ours / {own_name} (per CPU-second)"] = cpu["ours_1t"] / cpu["own_1t"]
    if name == "xgboost":
        res["newest_xgboost"] = newest_xgboost(path, X, quick)
        if "ratio" in res["newest_xgboost"]:
            res["ratio"][f"ours_1t / xgboost {NEWEST_XGBOOST} (per core)"] = res["newest_xgboost"]["ratio"]
            res["ratio"][f"ours / xgboost {NEWEST_XGBOOST} (per CPU-second)"] = res["newest_xgboost"]["cpu_ratio"]
    return res


# Run by a child process whose sys.path starts with NEWEST_XGBOOST_DIR: that XGBoost's pred_contribs
# and our kernel, one thread each, in turns, on the same rows.
_NEWEST = """
import json, sys
import numba, numpy as np, xgboost as xgb
from bench.treeshap import best_rows_per_s
from bench.families import _xgboost_types, cpu_rows_per_s
from whystream.models import families
from whystream.treeshap import TreeShap
path, rows, budget, repeats = sys.argv[1], np.load(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
booster = xgb.Booster(model_file=path)
booster.set_param({"nthread": 1})
ours = TreeShap(families._family("xgboost").load(families.Path(path)).booster)
numba.set_num_threads(1)
ours.warm_up()
dm = lambda r: xgb.DMatrix(r, missing=np.nan, feature_types=_xgboost_types(), enable_categorical=True, nthread=1)
theirs = lambda r: booster.predict(dm(r), pred_contribs=True)
diff = float(np.abs(ours.shap_values(rows[:200]) - theirs(rows[:200])[:, :-1]).max())
fns = {"ours_1t": ours.shap_values, "xgboost_1t": theirs}
tp = best_rows_per_s(fns, rows, budget, repeats)
cpu = cpu_rows_per_s(fns, rows, budget, repeats)
print(json.dumps({"version": xgb.__version__, "rows_per_s": tp, "rows_per_cpu_s": cpu, "max_abs_diff": diff}))
"""


def newest_xgboost(path: Path, X: np.ndarray, quick: bool) -> dict:
    if not (NEWEST_XGBOOST_DIR / "xgboost").is_dir():
        install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                                  "--ignore-requires-python", "--target", str(NEWEST_XGBOOST_DIR),
                                  f"xgboost-cpu=={NEWEST_XGBOOST}"], capture_output=True, text=True)
        if install.returncode != 0:
            return {"error": f"not measured: pip could not install xgboost-cpu {NEWEST_XGBOOST}: "
                             f"{install.stderr.strip().splitlines()[-1:]}"}
    rows = RESULTS / "families-rows.npy"
    np.save(rows, X)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NEWEST_XGBOOST_DIR), str(root)])}
    budget, repeats = (0.15, 2) if quick else (0.6, 5)
    run = subprocess.run([sys.executable, "-c", _NEWEST, str(path), str(rows), str(budget), str(repeats)],
                         capture_output=True, text=True, env=env, cwd=root)
    if run.returncode != 0:
        return {"error": f"not measured: {run.stderr.strip().splitlines()[-1:]}"}
    out = json.loads(run.stdout.strip().splitlines()[-1])
    out["ratio"] = out["rows_per_s"]["ours_1t"] / out["rows_per_s"]["xgboost_1t"]
    out["cpu_ratio"] = out["rows_per_cpu_s"]["ours_1t"] / out["rows_per_cpu_s"]["xgboost_1t"]
    return out


def print_table(results: dict) -> None:
    print(f"\n{'family':<10} {'method (one thread)':<34} {'rows/s':>9} {'ours x':>7} {'rows/CPU-s':>11} "
          f"{'ours x':>7} {'p50 ms':>8}")
    for name, r in results.items():
        tp, cpu, lat = r["rows_per_s"], r["rows_per_cpu_s"], r["latency_ms"]
        rows = [(f"whystream ({r['trees']} trees)", "ours_1t", tp, cpu, lat["ours"]["p50"]),
                ("shap TreeExplainer", "shap_1t", tp, cpu, lat["shap"]["p50"])]
        if "own_1t" in tp:
            rows.append((f"{r['own']} own TreeSHAP", "own_1t", tp, cpu, None))
        newest = r.get("newest_xgboost", {})
        if "rows_per_s" in newest:
            rows.append((f"xgboost {newest['version']} pred_contribs", "xgboost_1t", newest["rows_per_s"],
                         newest["rows_per_cpu_s"], None))
            rows.append(("  whystream, same turns", "ours_1t", newest["rows_per_s"], newest["rows_per_cpu_s"], None))
        label = name
        for method, key, wall, per_cpu, p50 in rows:
            mine = key == "ours_1t"
            ratio = "" if mine else f"{wall['ours_1t'] / wall[key]:.1f}x"
            cpu_ratio = "" if mine else f"{per_cpu['ours_1t'] / per_cpu[key]:.1f}x"
            print(f"{label:<10} {method:<34} {wall[key]:>9.0f} {ratio:>7} {per_cpu[key]:>11.0f} {cpu_ratio:>7} "
                  f"{'' if p50 is None else f'{p50:.3f}':>8}")
            label = ""
        if "error" in newest:
            print(f"{'':<10} xgboost {NEWEST_XGBOOST}: {newest['error']}")
        print(f"{'':<10} max |ours - shap| = {r['max_abs_diff_vs_shap']:.1e} ({r['library']})")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples")
    parser.add_argument("--json", type=Path, default=RESULTS / "families.json")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated subset")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    X, y = make_data(12_000)
    X_eval, _ = make_data(20_000, seed=1)
    result: dict = {"benchmark": "families", "quick": args.quick,
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
                    "families": {}}
    for name in args.families.split(","):
        path = reference_model(name, FAMILIES[name], X, y)
        result["families"][name] = bench_family(name, FAMILIES[name], path, X_eval, args.quick)
    print_table(result["families"])
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    print(f"\n{result['seconds']:.0f} s; JSON: {args.json}")
    write(result, args.json)
    return result


if __name__ == "__main__":
    main()
