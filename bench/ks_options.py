"""Benchmark: which KS for small windows? The options of issue 23, finding 8, on a
Gaussian feature (attribution = the feature, so a shift of d sd is a shift of d sd).

Each drift-free or shifted window is drawn as the workers weight it (n_eff/2 priority
rows weight 1, n_eff/2 sampled rows weight 20: Kish n_eff about 0.55 of the rows) against
a reference sample of 5,000 drawn anew per window; judged at `--alpha` without a minimum
effect, on n = n_eff n_ref / (n_eff + n_ref):

- `binned B, Kolmogorov`: KS at the reference's B-quantile edges against Kolmogorov's
  critical value (the rule before issue 23);
- `binned B, bridge`: the same statistic against its own null (jobs/analytics/ks_null.py);
- `exact rows, Kolmogorov`: the weighted two-sample KS over every row of the window and
  the reference sample (what storing the reference SHAP sample would allow).

    python bench/ks_options.py [--alpha 1e-4] [--sizes 200,1000] [--windows 2000] [--shift 0.25]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

N_REF = 5000


def window(rng, n_eff: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    rows = int(round(n_eff / 0.55))
    weights = np.where(np.arange(rows) < rows // 2, 1.0, 20.0)
    return rng.standard_normal(rows) + shift, weights


def binned_ks(x, w, reference, bins: int) -> tuple[float, np.ndarray]:
    edges = np.quantile(reference, np.arange(1, bins) / bins)
    ref_cdf = np.searchsorted(np.sort(reference), edges, side="right") / len(reference)
    win_cdf = np.array([w[x <= e].sum() for e in edges]) / w.sum()
    return float(np.abs(win_cdf - ref_cdf).max()), ref_cdf


def exact_ks(x, w, reference) -> float:
    """sup |F_w - F_ref| over every point (weighted ECDF of the window, ECDF of the reference)."""
    values = np.concatenate([x, reference])
    mass = np.concatenate([w / w.sum(), np.full(len(reference), -1.0 / len(reference))])
    order = np.argsort(values, kind="stable")
    values, steps = values[order], np.cumsum(mass[order])
    last = np.r_[values[1:] != values[:-1], True]  # the CDFs at a value count all its ties
    return float(np.abs(steps[last]).max())


def run(args) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from whystream.jobs.analytics.drift_rule import ks_critical

    rng = np.random.default_rng(23)
    began, results = time.perf_counter(), []
    for n_eff in args.sizes:
        counts = {}
        for shift in (0.0, args.shift):
            for _ in range(args.windows):
                x, w = window(rng, n_eff, shift)
                reference = rng.standard_normal(N_REF)
                k = w.sum() ** 2 / (w * w).sum()
                n = k * N_REF / (k + N_REF)
                verdicts = {}
                for bins in args.bins:
                    ks, ref_cdf = binned_ks(x, w, reference, bins)
                    verdicts[f"binned {bins}, Kolmogorov"] = ks > ks_critical(args.alpha, n)
                    verdicts[f"binned {bins}, bridge"] = ks > ks_critical(args.alpha, n, ref_cdf)
                verdicts["exact rows, Kolmogorov"] = exact_ks(x, w, reference) > ks_critical(args.alpha, n)
                for name, above in verdicts.items():
                    counts.setdefault(name, {0.0: 0, args.shift: 0})[shift] += bool(above)
        results.append({"n_eff": n_eff, "options": {
            name: {"false_alarm_rate": c[0.0] / args.windows, "power": c[args.shift] / args.windows}
            for name, c in counts.items()}})
    return {"benchmark": "ks_options", "alpha": args.alpha, "shift_sd": args.shift, "windows": args.windows,
            "seconds": round(time.perf_counter() - began, 1), "results": results}


def report(result: dict) -> str:
    lines = [f"KS options on a Gaussian feature: alpha {result['alpha']:g}, shift {result['shift_sd']:g} sd, "
             f"{result['windows']} windows per cell",
             f"  {'n_eff':>6} {'option':<26}{'false alarms':>14}{'power':>8}"]
    for entry in result["results"]:
        for name, r in entry["options"].items():
            lines.append(f"  {entry['n_eff']:>6,} {name:<26}{r['false_alarm_rate']:>14.4f}{r['power']:>8.2f}")
    lines.append(f"  ({result['seconds']}s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.results import publish

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=1e-4)
    parser.add_argument("--sizes", default="200,1000", help="effective sample sizes of a window")
    parser.add_argument("--bins", default="10,20", help="bin counts of the binned statistic")
    parser.add_argument("--windows", type=int, default=2000, help="windows per size and shift")
    parser.add_argument("--shift", type=float, default=0.25, help="the shift, in sd")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "ks_options.json")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.bins = [int(b) for b in args.bins.split(",")]
    result = run(args)
    publish(result, report(result), args.out)
    return result


if __name__ == "__main__":
    main()
