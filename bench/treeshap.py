"""Benchmark: whystream's TreeSHAP kernel against shap's TreeExplainer and LightGBM's pred_contrib.

LightGBM binary classifiers and one multiclass model on the same synthetic
data (50 features, 5% NaN in the numeric ones, two categorical features, one
zero-inflated feature):

    reference   300 trees,  31 leaves   (the engine's model size)
    deep       1000 trees, 255 leaves   (--quick: 200 trees)
    shallow     100 trees,  15 leaves
    multiclass  3 classes x 100 iterations = 300 trees, 31 leaves
    depth6      300 trees, max_depth 6, up to 64 leaves: the shape of XGBoost's
                (balanced, depth-6) trees
    forest      100 trees, up to 2,000 leaves, min_data_in_leaf 2 (--quick: 30
                trees): the shape of a scikit-learn forest's fully grown trees

Every family's loader translates its model into LightGBM's model text, so these
shapes run the kernel every family runs.

For the multiclass model shap explains every class of a row at once; ours runs
one kernel per class (TreeShap(booster, class_index=k)) and is timed doing all
of them, the same work; the engine explains one class per event, a third of it.

For each, measured side by side in one run:
- throughput, rows/s, on one thread and on all cores, of
  shap.TreeExplainer(booster).shap_values (which runs LightGBM's pred_contrib;
  its one-thread figure forces num_threads=1 on that call),
  booster.predict(pred_contrib=True), and TreeShap.shap_values (one thread via
  numba.set_num_threads(1));
- single-row latency p50/p99 of each (one row a call, one thread);
- max |ours - shap| on the measured rows, and the init (parse) and warm-up
  (numba compile or cache load) times.

    python bench/treeshap.py [--quick] [--json PATH] [--models reference,depth6]
    python bench/treeshap.py --against REV [--rounds 5] [--models ...]

--against REV times this checkout's kernel against REV's (bench/treeshap_against.py):
one thread, rows per CPU-second and single-row p50, side by side, alternating.

Prints a table and writes JSON (default bench/results/treeshap.json). Trained
models are cached in bench/results/models/. Throughput is the best of a few
repeats, sample sizes adapt to each method's speed; the machine is shared, so
compare the ratios, which are measured side by side.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import lightgbm as lgb
import numba
import numpy as np

from whystream.treeshap import EXPLAINER_NAME, EXPLAINER_VERSION, TreeShap

RESULTS = Path(__file__).resolve().parent / "results"
N_FEATURES = 50
CATEGORICAL = (0, 1)
MODELS = {  # name: (iterations, leaves, iterations with --quick, classes, other LightGBM parameters)
    "reference": (300, 31, 300, 1, {}),
    "deep": (1000, 255, 200, 1, {}),
    "shallow": (100, 15, 100, 1, {}),
    "multiclass": (100, 31, 100, 3, {}),
    "depth6": (300, 64, 300, 1, {"max_depth": 6, "min_data_in_leaf": 5}),
    "forest": (100, 2000, 30, 1, {"min_data_in_leaf": 2, "min_sum_hessian_in_leaf": 0, "feature_fraction_bynode": 0.15,
                                  "bagging_fraction": 0.63}),
}


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    X[:, 0] = rng.integers(0, 20, n)  # e.g. merchant category
    X[:, 1] = rng.integers(0, 5, n)  # e.g. entry mode
    X[:, 2] = np.where(rng.random(n) < 0.4, 0.0, rng.exponential(2.0, n))  # zero-inflated amount
    numeric = np.ones(N_FEATURES, dtype=bool)
    numeric[list(CATEGORICAL)] = False
    X[:, numeric] = np.where(rng.random((n, numeric.sum())) < 0.05, np.nan, X[:, numeric])
    x = np.nan_to_num(X)
    logit = (x[:, 3:12].sum(axis=1) * 0.6 + (x[:, 0] % 4 == 1) * 1.5 - (x[:, 1] == 2) + 0.4 * x[:, 2]
             - 0.5 * x[:, 12] * x[:, 13] + np.isnan(X[:, 14]) - 1.0)
    y = (logit + rng.logistic(size=n) > 0).astype(int)
    return X, y


def train(name: str, trees: int, leaves: int, X: np.ndarray, y: np.ndarray,
          classes: int = 1, extra: dict | None = None) -> tuple[lgb.Booster, float]:
    """The model, from bench/results/models/ when an identical one was trained before."""
    path = RESULTS / "models" / f"{name}-{trees}x{leaves}-n{len(X)}-b63-k{classes}-lgb{lgb.__version__}.txt"
    if path.exists():
        return lgb.Booster(model_file=str(path)), 0.0
    t0 = time.perf_counter()
    # one thread: OpenMP barriers on a shared, busy box cost more than the second core gives
    params = dict(objective="binary", num_leaves=leaves, learning_rate=0.05, min_data_in_leaf=20, max_bin=63,
                  feature_fraction=0.9, bagging_fraction=0.8, bagging_freq=1, seed=7, verbose=-1,
                  num_threads=1, force_col_wise=True)
    params.update(extra or {})
    if classes > 1:  # the classes: terciles of a second score of the same features
        x = np.nan_to_num(X)
        score = x[:, 3:9].sum(axis=1) - x[:, 9:12].sum(axis=1) + (x[:, 0] % 5 == 2) + 0.5 * x[:, 2]
        y = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
        params.update(objective="multiclass", num_class=classes)
    booster = lgb.train(params, lgb.Dataset(X, y, categorical_feature=list(CATEGORICAL)), num_boost_round=trees)
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(path))
    return lgb.Booster(model_file=str(path)), seconds


def best_rows_per_s(fns: dict, X: np.ndarray, budget_s: float, repeats: int, max_rows: int = 20_000) -> dict:
    """Best-of-`repeats` rows/s of each fn(X[:n]), n sized from a pilot so that one call takes
    ~budget_s; the methods take turns, so that the box's load swings hit them all alike."""
    sizes = {}
    for name, fn in fns.items():
        pilot = X[: min(len(X), 16)]
        fn(pilot)
        t0 = time.perf_counter()
        fn(pilot)
        per_row = max((time.perf_counter() - t0) / len(pilot), 1e-7)
        sizes[name] = int(min(len(X), max_rows, max(16, budget_s / per_row)))
    best = dict.fromkeys(fns, 0.0)
    for _ in range(repeats):
        for name, fn in fns.items():
            n = sizes[name]
            t0 = time.perf_counter()
            fn(X[:n])
            best[name] = max(best[name], n / (time.perf_counter() - t0))
    return best


def latency_ms(fn, X: np.ndarray, budget_s: float, min_calls: int = 30, max_calls: int = 2000) -> dict:
    """p50/p99 milliseconds of fn(one row), over as many calls as fit in ~budget_s."""
    for i in range(3):
        fn(X[i:i + 1])
    t0 = time.perf_counter()
    fn(X[3:4])
    calls = int(min(max_calls, max(min_calls, budget_s / max(time.perf_counter() - t0, 1e-7))))
    times = np.empty(calls)
    for i in range(calls):
        row = X[i % len(X): i % len(X) + 1]
        t0 = time.perf_counter()
        fn(row)
        times[i] = time.perf_counter() - t0
    return {"p50": float(np.percentile(times, 50) * 1e3), "p99": float(np.percentile(times, 99) * 1e3),
            "calls": calls}


class _AllClasses:
    """A multiclass booster's SHAP values [n, F, K] from one TreeShap per class, the layout
    shap returns; what bench_model needs of TreeShap."""

    def __init__(self, booster: lgb.Booster, classes: int):
        self.kernels = [TreeShap(booster, class_index=k) for k in range(classes)]
        first = self.kernels[0]
        self.n_trees = sum(k.n_trees for k in self.kernels)
        self.n_features, self._max_nodes = first.n_features, max(k._max_nodes for k in self.kernels)
        self._max_d = max(k._max_d for k in self.kernels)
        self.expected_value = first.expected_value

    def warm_up(self) -> None:
        for k in self.kernels:
            k.warm_up()

    def shap_values(self, X: np.ndarray) -> np.ndarray:
        return np.stack([k.shap_values(X) for k in self.kernels], axis=-1)


class _OneThread:
    """A booster whose predict runs on one thread (what shap calls on it)."""

    def __init__(self, booster: lgb.Booster):
        self._booster = booster
        self.params = booster.params

    def predict(self, X, **kwargs):
        return self._booster.predict(X, num_threads=1, **kwargs)


def bench_model(name: str, booster: lgb.Booster, X: np.ndarray, quick: bool, classes: int = 1) -> dict:
    budget = 0.15 if quick else 0.6
    repeats = 2 if quick else 5
    all_threads = numba.config.NUMBA_NUM_THREADS
    import shap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer_all = shap.TreeExplainer(booster)
        # shap's TreeExplainer on a LightGBM booster calls booster.predict(pred_contrib=True);
        # its one-thread figure: the same explainer, whose booster's predict gets num_threads=1
        explainer_one = copy.copy(explainer_all)
        explainer_one.model = copy.copy(explainer_all.model)
        explainer_one.model.original_model = _OneThread(booster)

        def shap_all(rows):
            return explainer_all.shap_values(rows)

        def shap_one(rows):
            return explainer_one.shap_values(rows)

        t0 = time.perf_counter()
        ours = TreeShap(booster) if classes == 1 else _AllClasses(booster, classes)
        init_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours.warm_up()
        warm_s = time.perf_counter() - t0

        def lgb_one(rows):
            return booster.predict(rows, pred_contrib=True, num_threads=1)

        def lgb_all(rows):
            return booster.predict(rows, pred_contrib=True)

        def ours_one(rows):
            numba.set_num_threads(1)
            try:
                return ours.shap_values(rows)
            finally:
                numba.set_num_threads(all_threads)

        res: dict = {"classes": classes, "trees": ours.n_trees, "leaves": ours._max_nodes + 1, "features": ours.n_features,
                     "max_path_features": ours._max_d, "init_s": round(init_s, 3), "warm_up_s": round(warm_s, 3)}
        check = X[:200]
        theirs = np.asarray(shap_all(check))
        res["max_abs_diff_vs_shap"] = float(np.abs(ours.shap_values(check) - theirs.reshape(
            ours.shap_values(check).shape)).max())
        res["expected_value_diff_vs_shap"] = abs(ours.expected_value - float(np.ravel(explainer_all.expected_value)[0]))
        tp = best_rows_per_s({"shap_1t": shap_one, "shap_all": shap_all, "lgb_contrib_1t": lgb_one,
                              "lgb_contrib_all": lgb_all, "ours_1t": ours_one, "ours_all": ours.shap_values},
                             X, budget, repeats)
        lat_budget = budget * (2 if quick else 3)
        lat = {
            "shap": latency_ms(shap_one, X, lat_budget),
            "lgb_contrib": latency_ms(lgb_one, X, lat_budget),
            "ours": latency_ms(ours.shap_values, X, lat_budget),
        }
    res["rows_per_s"] = {k: round(v, 1) for k, v in tp.items()}
    res["latency_ms"] = lat
    res["ratio_vs_shap"] = {
        "ours_1t / shap_1t (per core)": tp["ours_1t"] / tp["shap_1t"],
        "ours_all / shap_all": tp["ours_all"] / tp["shap_all"],
        "ours_1t / lgb_contrib_1t": tp["ours_1t"] / tp["lgb_contrib_1t"],
        "shap p50 / ours p50 (latency)": lat["shap"]["p50"] / lat["ours"]["p50"],
    }
    return res


def print_table(results: dict) -> None:
    threads = numba.config.NUMBA_NUM_THREADS
    print(f"\n{'model':<24} {'method':<22} {'threads':>7} {'rows/s':>10} {'x shap':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for name, r in results.items():
        label = f"{name} {r['trees']}x{r['leaves']}" + (f" ({r['classes']} classes)" if r.get("classes", 1) > 1 else "")
        tp, lat = r["rows_per_s"], r["latency_ms"]
        rows = [
            ("shap TreeExplainer", "1", tp["shap_1t"], tp["shap_1t"], lat["shap"]),
            ("shap TreeExplainer", str(threads), tp["shap_all"], tp["shap_all"], None),
            ("lightgbm pred_contrib", "1", tp["lgb_contrib_1t"], tp["shap_1t"], lat["lgb_contrib"]),
            ("lightgbm pred_contrib", str(threads), tp["lgb_contrib_all"], tp["shap_all"], None),
            (f"{EXPLAINER_NAME}", "1", tp["ours_1t"], tp["shap_1t"], lat["ours"]),
            (f"{EXPLAINER_NAME}", str(threads), tp["ours_all"], tp["shap_all"], None),
        ]
        for method, th, rps, ref, latency in rows:
            p50 = f"{latency['p50']:.3f}" if latency else ""
            p99 = f"{latency['p99']:.3f}" if latency else ""
            print(f"{label:<24} {method:<22} {th:>7} {rps:>10.0f} {rps / ref:>6.2f}x {p50:>8} {p99:>8}")
            label = ""
        print(f"{'':<24} max|ours - shap| = {r['max_abs_diff_vs_shap']:.1e}, init {r['init_s']:.2f} s, "
              f"warm-up {r['warm_up_s']:.2f} s, up to {r['max_path_features']} features on a path")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples and a 200-tree deep model")
    parser.add_argument("--json", type=Path, default=RESULTS / "treeshap.json")
    parser.add_argument("--models", help="comma-separated subset of " + ",".join(MODELS) + " (default: all; with "
                        "--against: reference,depth6,forest)")
    parser.add_argument("--against", help="a git revision: time this checkout's kernel against its kernel")
    parser.add_argument("--rounds", type=int, default=5, help="with --against: rounds, each side once a round")
    args = parser.parse_args(argv)
    if args.against:
        from bench.treeshap_against import run_against
        return run_against(args.against, (args.models or "reference,depth6,forest").split(","), args.rounds,
                           args.quick, args.json if args.json != RESULTS / "treeshap.json"
                           else RESULTS / "treeshap_against.json")
    t_start = time.perf_counter()
    X, y = make_data(12_000)
    X_eval, _ = make_data(20_000, seed=1)
    result: dict = {
        "benchmark": "treeshap",
        "explainer": f"{EXPLAINER_NAME} {EXPLAINER_VERSION}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "versions": {"lightgbm": lgb.__version__, "numba": numba.__version__,
                     "shap": __import__("shap").__version__, "numpy": np.__version__},
        "threads_all": numba.config.NUMBA_NUM_THREADS,
        "quick": args.quick,
        "models": {},
    }
    for name in (args.models or ",".join(MODELS)).split(","):
        trees, leaves, quick_trees, classes, extra = MODELS[name]
        booster, train_s = train(name, quick_trees if args.quick else trees, leaves, X, y, classes, extra)
        print(f"{name}: {booster.num_trees()} trees" + (f" (trained in {train_s:.1f} s)" if train_s else ""),
              flush=True)
        result["models"][name] = bench_model(name, booster, X_eval, args.quick, classes)
        result["models"][name]["train_s"] = round(train_s, 2)
    print_table(result["models"])
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    print(f"\n{result['seconds']:.0f} s; JSON: {args.json}")
    from bench.results import write

    write(result, args.json)
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/treeshap.py`: find bench.*
    main()
