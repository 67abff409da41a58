"""`python bench/treeshap.py --against REV`: this checkout's TreeSHAP kernel against REV's.

For work on the kernel, where a change of 10-50% must be told from the noise of a
shared machine. Both sides explain the same rows with the same LightGBM models
(bench/treeshap.py's, trained once and cached), each in a fresh process that
imports one side's `whystream` (REV checked out in a temporary git worktree, as
bench/engine.py does), on one thread:

- rows per CPU-second of the explaining thread (time.thread_time(), best of 3
  batches): a per-core figure that other processes on the machine disturb less
  than wall time does;
- single-row latency p50 (wall clock, one row a call, 300 calls).

The sides alternate (ABBA), --rounds times; the report gives per model the
min / median / max over rounds of this checkout's figure against REV's, each
ratio taken within a round. Models with a multiclass objective are left out (the
kernel is the same per class).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH_CPU_S = 0.4  # each timed batch: about this much CPU


def measure(models: dict[str, str], seed: int) -> dict:
    """In the child: time whichever whystream is importable on each model file."""
    import lightgbm as lgb
    import numba

    from bench.treeshap import make_data
    from whystream.treeshap import TreeShap, explainer

    numba.set_num_threads(1)
    X, _ = make_data(4_000, seed=seed)
    figures = {}
    for name, path in models.items():
        booster = lgb.Booster(model_file=path)
        ts = TreeShap(booster)
        ts.warm_up()
        t0 = time.thread_time()
        ts.shap_values(X[:8])
        n = int(min(len(X), max(8, BATCH_CPU_S * 8 / max(time.thread_time() - t0, 1e-6))))
        best = 0.0
        for _ in range(3):
            t0 = time.thread_time()
            ts.shap_values(X[:n])
            best = max(best, n / max(time.thread_time() - t0, 1e-9))
        calls = []
        for i in range(300 if n >= 100 else 60):
            t0 = time.perf_counter()
            ts.shap_values(X[i])
            calls.append(time.perf_counter() - t0)
        figures[name] = {"rows_per_cpu_s": best, "single_row_p50_ms": statistics.median(calls) * 1e3, "rows": n}
    return {"imported_from": str(Path(explainer.__file__).resolve().parents[2]), "figures": figures}


def run_against(rev: str, names: list[str], rounds: int, quick: bool, json_path: Path) -> dict:
    from bench.engine import checkout, remove_checkout, revision_of
    from bench.results import publish
    from bench.treeshap import MODELS, make_data, train

    revision = revision_of(rev)
    X, y = make_data(12_000)
    models = {}
    for name in names:
        if name not in MODELS or MODELS[name][3] != 1:
            raise SystemExit(f"bench/treeshap.py --against: {name!r} is not a single-output model of {list(MODELS)}")
        trees, leaves, quick_trees, _, extra = MODELS[name]
        booster, _ = train(name, quick_trees if quick else trees, leaves, X, y, 1, extra)
        models[name] = str(next((ROOT / "bench" / "results" / "models").glob(
            f"{name}-{booster.num_trees()}x{leaves}-*-lgb*.txt")))
    spec = json.dumps({"models": models, "seed": 1})
    rows = []
    with tempfile.TemporaryDirectory(prefix="whystream-bench-treeshap-") as tmp:
        work = Path(tmp)
        try:
            sides = {"reference": checkout(revision, work / "reference"), "this checkout": None}
            for k in range(rounds):
                figures = {}
                for side in (list(sides) if k % 2 == 0 else list(sides)[::-1]):
                    print(f"round {k + 1}/{rounds}: {side} ...", flush=True)
                    env = dict(os.environ)
                    if sides[side] is not None:
                        env["PYTHONPATH"] = str(sides[side])
                    child = subprocess.run([sys.executable, __file__, "--child", spec], env=env, capture_output=True,
                                           text=True)
                    if child.returncode != 0:
                        sys.stderr.write(child.stderr[-4000:])
                        raise SystemExit(f"{side} failed ({child.returncode})")
                    answer = json.loads(child.stdout.strip().splitlines()[-1])
                    if (sides[side] is not None) != answer["imported_from"].startswith(str(work)):
                        raise SystemExit(f"{side} imported whystream from {answer['imported_from']}")
                    figures[side] = answer["figures"]
                rows.append(figures)
        finally:
            remove_checkout(work / "reference")
    result = {"benchmark": "treeshap_against", "against": revision, "rounds": rows, "quick": quick,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "summary": {}}
    for name in models:
        speed = [r["this checkout"][name]["rows_per_cpu_s"] / r["reference"][name]["rows_per_cpu_s"] for r in rows]
        latency = [r["reference"][name]["single_row_p50_ms"] / r["this checkout"][name]["single_row_p50_ms"]
                   for r in rows]
        result["summary"][name] = {
            "rows_per_cpu_s": {side: statistics.median(r[side][name]["rows_per_cpu_s"] for r in rows)
                               for side in sides},
            "single_row_p50_ms": {side: statistics.median(r[side][name]["single_row_p50_ms"] for r in rows)
                                  for side in sides},
            "speed_ratio": {"min": min(speed), "median": statistics.median(speed), "max": max(speed)},
            "latency_ratio": {"min": min(latency), "median": statistics.median(latency), "max": max(latency)}}
    publish(result, report(result), json_path)
    return result


def report(r: dict) -> str:
    lines = [f"TreeSHAP kernel: this checkout against {r['against']}, one thread, {len(r['rounds'])} rounds "
             f"({r['machine']}); ratios within a round, min / median / max (better > 1)",
             f"  {'model':<11}{'rows/CPU-s ' + r['against']:>20}{'this':>9}{'ratio':>20}"
             f"{'1-row p50 ms ' + r['against']:>24}{'this':>8}{'ratio':>20}"]
    for name, s in r["summary"].items():
        sp, lat = s["speed_ratio"], s["latency_ratio"]
        speed = s["rows_per_cpu_s"]
        lines.append(f"  {name:<11}{speed['reference']:>20,.0f}{speed['this checkout']:>9,.0f}"
                     f"{sp['min']:>8.2f} {sp['median']:>5.2f} {sp['max']:>5.2f}"
                     f"{s['single_row_p50_ms']['reference']:>24.3f}{s['single_row_p50_ms']['this checkout']:>8.3f}"
                     f"{lat['min']:>8.2f} {lat['median']:>5.2f} {lat['max']:>5.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.append(str(ROOT))  # after PYTHONPATH: the reference side's whystream comes first
    if sys.argv[1:2] == ["--child"]:
        spec = json.loads(sys.argv[2])
        print(json.dumps(measure(spec["models"], spec["seed"])))
