"""Benchmark: how often the drift rule catches a shift of known size, and how
often it alerts on nothing.

Trains a small fraud model on the generator (jobs/simulation/generator.py) in a temporary
registry, then draws pools of decisions from the same events with one feature's
generating process shifted by 0, 0.1, 0.25, 0.5 and 1 standard deviation of
that feature (a DriftSpec: the value moves, the fraud mechanism reacts as it
says). Windows are sampled as the workers sample: priority decisions
(declined or near the threshold) with weight 1, a uniform reservoir sample of
the rest weighted n/k, about n_eff explanations per window. Each window's
statistics are computed with the formulas of the feature_drift view
(schemas/clickhouse/020_exact_drift.sql: PSI and KS on the reference bins,
stability, Wasserstein-1 from 100 quantile midpoints and the mean difference)
and judged by the monitor's own rule (jobs/analytics/drift_rule.py).

Reported per statistic and window size: the detection rate on the shifted
feature within one window, and the false-alert rate on the untouched features
over the drift-free windows (per feature and window). `combined` is the
monitor's rule: any statistic over its threshold. `ks_kolmogorov` is the same KS
judged as before issue 23 (Kolmogorov's critical value, for every point, though the
statistic is taken at the bin edges only). `--alpha 0.05 --no-floor` measures the
false-alarm rates against a measurable alpha (minimum effects 0).

    python bench/drift_power.py [--windows 200] [--sizes 200,1000,5000] [--feature amount] [--quick]
                                [--alpha 1e-4] [--no-floor]
    python -m bench --only drift_power

Prints a table and writes JSON (default bench/results/drift_power.json).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHIFTS = (0.1, 0.25, 0.5, 1.0)
STATISTICS = ("psi", "ks", "stability", "wasserstein", "combined", "ks_kolmogorov")
JUDGED = STATISTICS[:4]  # `combined` is any of these; ks_kolmogorov is KS against the old critical value
POOL_START = 5_000_000  # events far past the training and reference ranges
LEVELS_100 = (np.arange(100) + 0.5) / 100


def train(folder: Path, n_train: int):
    from whystream.jobs.simulation.train import train_model
    from whystream.models.registry import ModelRegistry

    return train_model(ModelRegistry(folder), n_train=n_train, num_trees=100, progress=False)


def pools(model, feature: str, n_pool: int, seed: int = 7) -> tuple[dict[float, tuple], float]:
    """Per shift (in sd of `feature`): (SHAP [n, F], priority mask) of the same n_pool events."""

    from whystream.jobs.simulation.generator import (
        FEATURE_NAMES,
        DriftSpec,
        TransactionGenerator,
    )
    from whystream.treeshap import TreeShap

    explainer = TreeShap(model.booster)
    j = FEATURE_NAMES.index(feature)
    base = TransactionGenerator(seed).sample(n_pool, start=POOL_START).X
    sd = float(np.nanstd(base[:, j]))
    out = {}
    for shift in (0.0, *SHIFTS):
        X = TransactionGenerator(seed, [DriftSpec(feature, shift * sd, 0)] if shift else []).sample(
            n_pool, start=POOL_START).X
        score = np.asarray(model.booster.predict(X))
        priority = (score >= model.threshold) | (np.abs(score - model.threshold) <= 0.02)
        out[shift] = (np.asarray(explainer.shap_values(X)), priority)
    return out, sd


class Reference:
    """What the feature_drift view reads of model_reference, per feature."""

    def __init__(self, model):
        from whystream.jobs.clickhouse import references as model_reference

        cols = dict(zip(model_reference.REFERENCE_COLUMNS, model_reference.reference_columns(model)))
        self.edges = np.asarray(cols["bin_edges"])
        self.hist = np.asarray(cols["reference_hist"])
        self.q100 = np.asarray(cols["reference_quantiles_100"])
        self.mean_abs = np.asarray(cols["reference_mean_abs_shap"])
        self.mean = np.asarray(cols["reference_mean_shap"])
        self.mean_sq = np.asarray(cols["reference_mean_sq_shap"])
        self.n = float(cols["n_reference"][0])
        u = np.arange(1, 100) / 100
        self.cdf_spread = (np.diff(self.q100, axis=1) * np.sqrt(u * (1 - u))).sum(axis=1)
        self.step = np.diff(self.q100, axis=1).max(axis=1)


def window_rows(shap: np.ndarray, w: np.ndarray, ref: Reference, names: list[str]) -> list[dict]:
    """feature_drift rows of one window (the view's formulas, in numpy)."""
    total, n_eff = w.sum(), w.sum() ** 2 / (w * w).sum()
    rows = []
    for j, name in enumerate(names):
        x = shap[:, j]
        bins = np.searchsorted(ref.edges[j], x, side="right") - 1
        p = np.bincount(bins, weights=w, minlength=ref.hist.shape[1]) / total
        q = ref.hist[j]
        pf, qf = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
        order = np.argsort(x, kind="stable")
        cdf = np.cumsum(w[order]) / total
        quantiles = x[order][np.minimum(np.searchsorted(cdf, LEVELS_100), len(x) - 1)]
        mean_abs, mean = np.average(np.abs(x), weights=w), np.average(x, weights=w)
        rows.append({
            "feature": name, "n": len(x), "weighted_n": total, "effective_n": n_eff,
            "psi": float(((pf - qf) * np.log(pf / qf)).sum()),
            "ks": float(np.abs(np.cumsum(p) - np.cumsum(q)).max()), "psi_bins": int((q > 0).sum()),
            "reference_cdf": np.cumsum(q)[:-1],
            "mean_abs_shap": mean_abs, "reference_mean_abs_shap": ref.mean_abs[j],
            "stability": abs(mean_abs - ref.mean_abs[j]) / ref.mean_abs[j] if ref.mean_abs[j] > 0 else None,
            "wasserstein": max(abs(mean - ref.mean[j]), float(np.abs(quantiles - ref.q100[j]).mean())),
            "mean_shap": mean, "reference_mean_shap": ref.mean[j], "mean_sq_shap": np.average(x * x, weights=w),
            "reference_mean_sq_shap": ref.mean_sq[j], "n_reference": ref.n, "reference_cdf_spread": ref.cdf_spread[j],
            "wasserstein_resolution": max(ref.step[j], float(np.diff(quantiles).max())) / 100,
        })
    return rows


def sample_window(rng, shap: np.ndarray, priority: np.ndarray, n_eff: int) -> tuple[np.ndarray, np.ndarray]:
    """A window of about 10 * n_eff decisions as the workers sample it: every priority one
    (weight 1) and k = n_eff of the others (weight n_others / k)."""
    decisions = 10 * n_eff
    pri, rest = np.flatnonzero(priority), np.flatnonzero(~priority)
    n_pri = rng.binomial(decisions, len(pri) / len(priority))
    chosen = np.concatenate([rng.choice(pri, n_pri), rng.choice(rest, n_eff)])
    weights = np.concatenate([np.ones(n_pri), np.full(n_eff, (decisions - n_pri) / n_eff)])
    return shap[chosen], weights


def verdicts(rule, rows: list[dict]) -> dict[str, np.ndarray]:
    """Per statistic (and combined), per feature: alerted?"""
    total = sum(r["reference_mean_abs_shap"] for r in rows)
    out = {s: np.zeros(len(rows), dtype=bool) for s in STATISTICS}
    for i, row in enumerate(rows):
        for j in rule.judge(row, total):
            out[j.statistic][i] |= j.above
            out["combined"][i] |= j.above
        # before issue 23: Kolmogorov's critical value (every point) for the statistic at the bin edges
        out["ks_kolmogorov"][i] = any(j.above for j in rule.judge({**row, "reference_cdf": None}, total)
                                      if j.statistic == "ks")
    return out


def run(args) -> dict:
    from whystream.jobs.analytics.drift_rule import DriftRule
    from whystream.jobs.simulation.generator import FEATURE_NAMES

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="whystream-power-") as folder:
        model = train(Path(folder), args.train)
    trained = time.perf_counter() - began
    drawn, sd = pools(model, args.feature, args.pool)
    ref = Reference(model)
    rule = DriftRule(alpha=args.alpha, **({"min_effect": dict.fromkeys(JUDGED, 0.0)} if args.no_floor else {}))
    j = FEATURE_NAMES.index(args.feature)
    untouched = np.arange(len(FEATURE_NAMES)) != j
    rng = np.random.default_rng(11)
    results = []
    for size in args.sizes:
        null = {s: [] for s in STATISTICS}
        shap0, pri0 = drawn[0.0]
        judged_null = 0
        for _ in range(args.windows):
            rows = window_rows(*sample_window(rng, shap0, pri0, size), ref, FEATURE_NAMES)
            judged_null += rule.enough_data(rows[0])
            for s, alerted in verdicts(rule, rows).items():
                null[s].append(alerted[untouched].mean())
        entry = {"n_eff": size, "false_alert_rate": {s: float(np.mean(v)) for s, v in null.items()},
                 "detection_rate": {}}
        for shift in SHIFTS:
            shap, pri = drawn[shift]
            hits = {s: 0 for s in STATISTICS}
            for _ in range(args.shift_windows):
                rows = window_rows(*sample_window(rng, shap, pri, size), ref, FEATURE_NAMES)
                for s, alerted in verdicts(rule, rows).items():
                    hits[s] += bool(alerted[j])
            entry["detection_rate"][str(shift)] = {s: hits[s] / args.shift_windows for s in STATISTICS}
        entry["judged_share"] = judged_null / args.windows
        results.append(entry)
        print(f"  n_eff {size:>6,}: done ({time.perf_counter() - began:.0f}s)", flush=True)
    return {
        "benchmark": "drift_power", "feature": args.feature, "feature_sd": round(sd, 4), "shifts_sd": list(SHIFTS),
        "windows_drift_free": args.windows, "windows_per_shift": args.shift_windows,
        "untouched_features": int(untouched.sum()), "alpha": rule.alpha, "min_effect": rule.min_effect,
        "model": {"version": model.version, "n_train": args.train, "train_seconds": round(trained, 1)},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "seconds": round(time.perf_counter() - began, 1), "results": results,
    }


def report(result: dict) -> str:
    shifts = result["shifts_sd"]
    lines = [f"drift power: shift of `{result['feature']}` (sd {result['feature_sd']:g}) in units of its sd; "
             f"detection rate in one window ({result['windows_per_shift']} windows per cell); false alerts per "
             f"untouched feature and window ({result['windows_drift_free']} drift-free windows x "
             f"{result['untouched_features']} features); alpha {result['alpha']:g}, minimum effects "
             + ", ".join(f"{k} {v:g}" for k, v in result["min_effect"].items()),
             f"  {'n_eff':>6} {'statistic':<12}" + "".join(f"{f'{s:g} sd':>9}" for s in shifts) + f"{'false alerts':>14}"]
    for entry in result["results"]:
        for s in STATISTICS:
            cells = "".join(f"{entry['detection_rate'][str(x)][s]:>9.2f}" for x in shifts)
            lines.append(f"  {entry['n_eff']:>6,} {s:<12}{cells}{entry['false_alert_rate'][s]:>14.4f}")
    lines.append(f"  ({result['seconds']}s, model trained in {result['model']['train_seconds']}s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...py`: find bench.*
    from bench.results import publish
    from whystream.jobs.analytics.drift_rule import DriftRule

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feature", default="amount", help="numeric feature whose generating process shifts")
    parser.add_argument("--sizes", default="200,1000,5000", help="effective sample sizes of a window")
    parser.add_argument("--windows", type=int, default=200, help="drift-free windows per size")
    parser.add_argument("--shift-windows", type=int, default=100, help="windows per size and shift")
    parser.add_argument("--pool", type=int, default=100_000, help="decisions drawn per shift")
    parser.add_argument("--train", type=int, default=50_000, help="training events of the model")
    parser.add_argument("--alpha", type=float, default=DriftRule.alpha, help="the rule's alpha (1e-4, the monitor's)")
    parser.add_argument("--no-floor", action="store_true",
                        help="minimum effects 0: the critical values alone (to measure false alarms against alpha)")
    parser.add_argument("--quick", action="store_true", help="fewer windows, a smaller pool")
    parser.add_argument("--out", "--json", type=Path, dest="out",
                        default=Path(__file__).resolve().parent / "results" / "drift_power.json")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        args.windows, args.shift_windows, args.pool, args.train = 40, 20, 40_000, 20_000
    result = run(args)
    publish(result, report(result), args.out)
    return result


if __name__ == "__main__":
    main()
