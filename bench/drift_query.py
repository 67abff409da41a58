"""Benchmark: the drift query over a day of one-minute attribution histograms.

Fills a fresh chDB directory (a temporary one, in a child process, so it
works from any process) with 24 hours of explanations for one model with 50
features, generated inside ClickHouse (INSERT ... SELECT, so the materialized
views build attribution_hist / attribution_stats / engine_stats exactly as in
production), then times `feature_drift` (PSI, KS, stability, Wasserstein-1 for all
features against the reference) over the last 5 minutes and over 24 hours
(whole hours come from the hourly rollups, the edge minutes from the minute
tables; also 24 whole hours, no edges),
plus `top_features` and `engine_health` over 24 hours.

    python bench/drift_query.py [--minutes 1440] [--features 50] [--per-minute 60] [--repeat 7] [--quick]
    python -m bench --only drift_query

Prints a table and writes JSON (default bench/results/drift_query.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODEL, VERSION = "bench", "v1"


def _reference(n_features: int, seed: int = 7):
    import numpy as np

    from whystream.models.reference import shap_bin_edges, shap_histogram

    class Reference:  # what register_reference reads of a RegisteredModel
        pass

    rng = np.random.default_rng(seed)
    ref = Reference()
    ref.name, ref.version, ref.threshold = MODEL, VERSION, 0.5
    ref.feature_names = [f"f{j:02d}" for j in range(n_features)]
    ref.reference_shap = rng.normal(size=(5000, n_features)) * (0.1 + 0.02 * np.arange(n_features))
    ref.bin_edges = shap_bin_edges(ref.reference_shap)
    ref.reference_hist = shap_histogram(ref.reference_shap, ref.bin_edges) / 5000
    return ref


def fill(client, database: str, n_features: int, minutes: int, per_minute: int, end_minute_ms: int) -> dict:
    """Insert minutes * per_minute explanations ending at end_minute_ms; the
    last hour's feature f03 attributions are shifted (so drift shows)."""
    from whystream.jobs.clickhouse import references as model_reference
    from whystream.jobs.clickhouse.sql import lit, rows

    model_reference.register_reference(client, _reference(n_features), database)
    names = lit([f"f{j:02d}" for j in range(n_features)])
    start_ms = end_minute_ms - minutes * 60_000
    total = minutes * per_minute
    began = time.perf_counter()
    step = 200_000  # rows per INSERT ... SELECT
    for offset in range(0, total, step):
        count = min(step, total - offset)
        client.command(f"""
            INSERT INTO {database}.explanations
                (prediction_id, model_name, model_version, explainer, explainer_version, event_time, explained_at,
                 base_value, raw_score, attributions.feature, attributions.value, attributions.shap,
                 top_reasons.feature, top_reasons.value, top_reasons.shap, score, decision, threshold,
                 sampling_reason, inclusion_weight, stratum, source, redis_available, latency_ms, worker,
                 kafka_partition, kafka_offset)
            SELECT
                concat('bench-', toString(number)), {lit(MODEL)}, {lit(VERSION)}, 'bench', '1',
                fromUnixTimestamp64Milli(toInt64({start_ms} + intDiv(number, {per_minute}) * 60000
                                         + (number % {per_minute}) * intDiv(60000, {per_minute})), 'UTC') AS t,
                t + toIntervalMillisecond(50), -3, 0,
                {names}, arrayMap(i -> CAST(NULL, 'Nullable(Float64)'), range({n_features})),
                arrayMap(i -> randNormal(0, 1, number * 64 + i) * (0.1 + 0.02 * i)
                              + if(i = 3 AND number >= {total - 60 * per_minute}, 0.5, 0), range({n_features})),
                [], [], [], 0.1, 'approve', 0.5,
                if(number % 10 = 0, 'ADVERSE', 'RESERVOIR'), if(number % 10 = 0, 1.0, 12.5), 'US',
                multiIf(number % 20 = 1, 'CACHE', number % 50 = 2, 'FALLBACK', 'LIVE'), true,
                40 + 30 * rand(number) / 4294967295, 'bench', 0, number
            FROM numbers({offset}, {count})
            SETTINGS insert_deduplication_token = 'bench-{offset}',
                     deduplicate_blocks_in_dependent_materialized_views = 1""")
    seconds = time.perf_counter() - began
    counts = rows(client, f"""SELECT
        (SELECT count() FROM {database}.explanations) AS explanations,
        (SELECT count() FROM {database}.attribution_hist) AS attribution_hist_rows,
        (SELECT count() FROM {database}.attribution_stats) AS attribution_stats_rows,
        (SELECT count() FROM {database}.engine_stats) AS engine_stats_rows""")[0]
    return {"fill_seconds": round(seconds, 2), **counts}


def time_query(client, sql: str, repeat: int) -> dict:
    from whystream.jobs.clickhouse.sql import rows

    times, n = [], 0
    for _ in range(repeat + 1):  # the first run warms caches and is reported separately
        began = time.perf_counter()
        n = len(rows(client, sql))
        times.append(time.perf_counter() - began)
    warm = times[1:]
    return {"rows": n, "first_ms": round(times[0] * 1000, 1), "median_ms": round(statistics.median(warm) * 1000, 1),
            "min_ms": round(min(warm) * 1000, 1), "max_ms": round(max(warm) * 1000, 1)}


def run(args) -> dict:
    from whystream.config import Settings
    from whystream.jobs.analytics import drift_sql
    from whystream.jobs.clickhouse import connection as ch
    from whystream.jobs.clickhouse.sql import lit, ms_lit, rows

    folder = Path(args.dir or tempfile.mkdtemp(prefix="whystream-bench-"))
    database = "bench"
    try:
        client = ch.connect(Settings(clickhouse_dsn=f"chdb://{folder}"), database)
        now = int(time.time() * 1000)
        end_minute = now - now % 60_000 + 60_000
        filled = fill(client, database, args.features, args.minutes, args.per_minute, end_minute)
        queries = {
            "feature_drift 5m": drift_sql.feature_drift_sql(MODEL, end_minute - 300_000, end_minute, database),
            "feature_drift 24h": drift_sql.feature_drift_sql(MODEL, end_minute - 86_400_000, end_minute, database),
            # whole hours only: everything from the hourly rollups, no edge minutes
            "feature_drift 24h whole hours": drift_sql.feature_drift_sql(
                MODEL, end_minute - end_minute % 3_600_000 - 86_400_000, end_minute - end_minute % 3_600_000, database),
            "top_features 24h": f"SELECT * FROM {database}.top_features(model = {lit(MODEL)}, "
                                f"start = {ms_lit(end_minute - 86_400_000)}, end = {ms_lit(end_minute)})",
            "engine_health 24h hourly": f"SELECT * FROM {database}.engine_health(model = {lit(MODEL)}, "
                                        f"start = {ms_lit(end_minute - 86_400_000)}, end = {ms_lit(end_minute)}, "
                                        f"bucket_seconds = 3600)",
        }
        timings = {name: time_query(client, sql, args.repeat) for name, sql in queries.items()}
        client.command(f"OPTIMIZE TABLE {database}.attribution_hist FINAL")
        client.command(f"OPTIMIZE TABLE {database}.attribution_stats FINAL")
        merged = {f"{name} (merged)": time_query(client, queries[name], args.repeat)
                  for name in ("feature_drift 5m", "feature_drift 24h")}
        drifted = [r["feature"] for r in drift_sql.feature_drift(client, MODEL, end_minute - 300_000, end_minute, database)
                   if r["psi"] > 0.2]
        return {
            "benchmark": "drift_query", "engine": "chDB " + rows(client, "SELECT version() AS v")[0]["v"],
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "minutes": args.minutes, "features": args.features, "explanations_per_minute": args.per_minute,
            **filled, "queries": {**timings, **merged}, "features_over_psi_0.2_last_5m": drifted,
        }
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)


def report(result: dict) -> str:
    lines = [f"drift query benchmark: {result['minutes']} one-minute buckets x {result['features']} features, "
             f"{result['explanations']:,} explanations ({result['engine']}, {result['machine']})",
             f"  fill {result['fill_seconds']}s -> attribution_hist {result['attribution_hist_rows']:,} rows, "
             f"attribution_stats {result['attribution_stats_rows']:,} rows",
             f"  {'query':<34}{'rows':>6}{'first ms':>10}{'median ms':>11}{'min ms':>9}{'max ms':>9}"]
    for name, t in result["queries"].items():
        lines.append(f"  {name:<34}{t['rows']:>6}{t['first_ms']:>10}{t['median_ms']:>11}{t['min_ms']:>9}{t['max_ms']:>9}")
    lines.append(f"  features with PSI > 0.2 in the last 5 minutes: {', '.join(result['features_over_psi_0.2_last_5m'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...py`: find bench.*
    from bench.processes import run_child
    from bench.results import publish

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=1440)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--per-minute", type=int, default=60, help="explanations per minute")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="6 hours of buckets and 3 repeats, for a first look")
    parser.add_argument("--out", "--json", type=Path, dest="out",
                        default=Path(__file__).resolve().parent / "results" / "drift_query.json")
    parser.add_argument("--dir", help="chDB directory to fill (kept); default a temporary one")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.repeat = min(args.minutes, 360), min(args.repeat, 3)
    if args.child:  # the process that opens chDB
        print(json.dumps(run(args)))
        return {}
    # chDB allows one directory per process: run the engine in a child process.
    result = run_child(__file__, argv if argv is not None else sys.argv[1:])
    publish(result, report(result), args.out)
    return result


if __name__ == "__main__":
    main()
