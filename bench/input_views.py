"""Benchmark: what the input-drift views (migration 030) cost each insert into `explanations`.

The same batches of explanations (one model, 39 features, values 5% missing) go into
two databases of one chDB directory, alternating which goes first: one with every
materialized view, one with the input-drift views (input_hist_mv, decision_stats_mv,
score_hist_mv) dropped. Then `input_drift` and `decision_drift` are timed over the window.

    python bench/input_views.py [--batches 10] [--per-batch 2300] [--features 39] [--quick]
    python -m bench --only input_views

Prints a table and writes JSON (default bench/results/input_views.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

INPUT_VIEWS = ("input_hist_mv", "decision_stats_mv", "score_hist_mv")


class _Model:  # what register_reference reads of a RegisteredModel
    pass


def model(n_features: int):
    import numpy as np

    from whystream.models import input_reference as ir
    from whystream.models.reference import shap_bin_edges, shap_histogram

    rng = np.random.default_rng(7)
    m = _Model()
    m.name, m.version, m.threshold, m.adverse_direction = "bench", "v1", 0.5, 1
    m.feature_names = [f"f{j}" for j in range(n_features)]
    m.reference_shap = rng.laplace(size=(5000, n_features))
    m.bin_edges = shap_bin_edges(m.reference_shap)
    m.reference_hist = shap_histogram(m.reference_shap, m.bin_edges) / 5000
    X = rng.normal(size=(5000, n_features))
    X[rng.random(X.shape) < 0.05] = np.nan
    m.input_reference = ir.compute(_Scores(), X, 0.5)
    return m


class _Scores:  # a booster stand-in: scores uniform on [0, 1)
    def predict(self, X):
        import numpy as np

        return np.random.default_rng(3).random(len(X))


def batches(m, n_batches: int, per_batch: int, start_ms: int) -> list[list[dict]]:
    import numpy as np

    rng = np.random.default_rng(11)
    out = []
    for b in range(n_batches):
        values = rng.normal(size=(per_batch, len(m.feature_names)))
        shap = rng.laplace(size=values.shape)
        out.append([{
            "prediction_id": f"b{b}-{i}", "model_name": m.name, "model_version": m.version, "explainer": "bench",
            "explainer_version": "1", "event_time": start_ms + b * 60_000 + i, "explained_at": start_ms + b * 60_000 + i,
            "output_space": "raw_margin", "base_value": 0.0, "raw_score": float(shap[i].sum()),
            "attributions": [{"feature": f, "value": None if rng.random() < 0.05 else float(values[i, j]),
                              "shap": float(shap[i, j])} for j, f in enumerate(m.feature_names)],
            "top_reasons": [], "score": float(rng.random()), "decision": "approve", "threshold": 0.5,
            "sampling_reason": "RESERVOIR", "inclusion_weight": 20.0, "stratum": "all", "source": "LIVE",
            "cached": True, "latency_ms": 5.0, "worker": "bench"} for i in range(per_batch)])
    return out


def run(args) -> dict:
    from whystream.config import Settings
    from whystream.jobs.analytics import input_drift
    from whystream.jobs.clickhouse import connection as ch
    from whystream.jobs.clickhouse import references as model_reference
    from whystream.jobs.sink import explanation_rows

    folder = Path(tempfile.mkdtemp(prefix="whystream-bench-"))
    try:
        settings = Settings(clickhouse_dsn=f"chdb://{folder}")
        m = model(args.features)
        sides = {"all views": "with_inputs", "without the input-drift views": "without_inputs"}
        clients = {}
        for side, database in sides.items():
            clients[side] = ch.connect(settings, database)
            model_reference.register_reference(clients[side], m, database)
        for view in INPUT_VIEWS:
            clients["without the input-drift views"].command(f"DROP VIEW without_inputs.{view}")
        now = int(time.time() * 1000)
        start = now - now % 60_000 - args.batches * 60_000
        times: dict[str, list[float]] = {side: [] for side in sides}
        for b, batch in enumerate(batches(m, args.batches, args.per_batch, start)):
            columns = explanation_rows.explanation_columns(batch)
            for side in (list(sides) if b % 2 == 0 else list(sides)[::-1]):
                began = time.perf_counter()
                explanation_rows.insert_columns(clients[side], columns, sides[side], token=f"bench-{b}")
                times[side].append(time.perf_counter() - began)
        inserts = {side: {"median_ms_per_batch": round(statistics.median(t) * 1000, 1),
                          "explanations_per_s": round(args.per_batch * len(t) / sum(t))} for side, t in times.items()}
        client, end = clients["all views"], start + args.batches * 60_000
        queries = {}
        for name, fn in (("input_drift", input_drift.input_drift), ("decision_drift", input_drift.decision_drift)):
            spent = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                found = fn(client, m.name, start, end, "with_inputs")
                spent.append(time.perf_counter() - began)
            queries[name] = {"rows": len(found), "median_ms": round(statistics.median(spent) * 1000, 1)}
        ratio = statistics.median(times["all views"]) / statistics.median(times["without the input-drift views"])
        return {"benchmark": "input_views", "features": args.features, "batches": args.batches,
                "per_batch": args.per_batch, "inserts": inserts, "insert_time_ratio": round(ratio, 2),
                "queries": queries}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(result: dict) -> str:
    lines = [f"input-drift views: {result['batches']} batches of {result['per_batch']:,} explanations, "
             f"{result['features']} features"]
    for side, figures in result["inserts"].items():
        lines.append(f"  {side:<32}{figures['median_ms_per_batch']:>8} ms/batch {figures['explanations_per_s']:>9,}/s")
    lines.append(f"  insert time with / without the input-drift views: {result['insert_time_ratio']}x")
    for name, q in result["queries"].items():
        lines.append(f"  {name:<32}{q['median_ms']:>8} ms median ({q['rows']} rows)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...py`: find bench.*
    from bench.processes import run_child
    from bench.results import publish

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--per-batch", type=int, default=2300)
    parser.add_argument("--features", type=int, default=39)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="4 batches, 3 repeats")
    parser.add_argument("--out", "--json", type=Path, dest="out",
                        default=Path(__file__).resolve().parent / "results" / "input_views.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.repeat = min(args.batches, 4), min(args.repeat, 3)
    if args.child:  # the process that opens chDB
        print(json.dumps(run(args)))
        return {}
    result = run_child(__file__, argv if argv is not None else sys.argv[1:])
    publish(result, report(result), args.out)
    return result


if __name__ == "__main__":
    main()
