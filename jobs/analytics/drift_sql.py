"""Drift and health queries over the ClickHouse tables.

The statistics themselves are parameterised views in
schemas/clickhouse/007_drift_views.sql (so analysts get them in plain SQL):

- `feature_drift(model, start, end)` and `feature_drift_by_stratum(model, start,
  end, stratum)`: per model version and feature (of one stratum, '*' all), PSI
  and weighted KS of the attribution histogram against the reference (bins
  floored at 1e-4), stability = |weighted mean |SHAP| - reference mean |SHAP||
  / reference mean |SHAP|, Wasserstein-1 distance from 100 t-digest quantiles
  (never below the difference of the means), weighted and effective counts,
  the reference's size and spread, the window's fallback share (schemas/
  clickhouse/020_exact_drift.sql; exact attributions only);
- `top_features(model, start, end)`: features of each version by weighted mean |SHAP|;
- `engine_health(model, start, end, bucket_seconds)`: coverage (explained /
  sum of inclusion weights), latency quantiles, fallback and cache-hit rates.

The functions here call them with literal parameters (the text is complete
SQL, so it also goes through a running sink's query port) and return rows as
dicts. Times are epoch milliseconds (UTC); windows are whole minutes of event
time, [toStartOfMinute(start), end).
"""

from __future__ import annotations

import datetime as dt

from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident, lit, ms_lit, rows

ALL_STRATA = "*"  # feature_drift_by_stratum's stratum for all strata together


def _window(model: str, start_ms: int, end_ms: int) -> str:
    # Literals, not expressions: ClickHouse before 24.6 takes only literals as view arguments.
    return f"model = {lit(model)}, start = {time_lit(start_ms)}, end = {time_lit(end_ms)}"


def time_lit(ms: int) -> str:
    """Epoch milliseconds as a string literal of a UTC DateTime64(3), e.g. '2026-01-02 03:04:05.678'."""
    seconds, millis = divmod(int(ms), 1000)
    return f"'{dt.datetime.fromtimestamp(seconds, dt.timezone.utc):%Y-%m-%d %H:%M:%S}.{millis:03d}'"


def feature_drift_sql(model: str, start_ms: int, end_ms: int, database: str = DEFAULT_DATABASE,
                      stratum: str | None = None) -> str:
    """The feature_drift rows of one stratum (None: all strata together)."""
    return (f"SELECT * EXCEPT (window_hist) FROM {ident(database)}.feature_drift_by_stratum("
            f"{_window(model, start_ms, end_ms)}, stratum = {lit(ALL_STRATA if stratum is None else stratum)})")


def feature_drift(client, model: str, start_ms: int, end_ms: int, database: str = DEFAULT_DATABASE,
                  stratum: str | None = None) -> list[dict]:
    """Rows of feature_drift_by_stratum: model_version, feature, feature_index,
    stratum, n, weighted_n, effective_n, psi, ks, psi_bins, mean_abs_shap,
    reference_mean_abs_shap, stability, wasserstein, wasserstein_rel, mean_shap,
    reference_mean_shap, mean_sq_shap, reference_mean_sq_shap, n_reference,
    reference_cdf_spread, fallback_share. `stratum` slices by the sampling
    stratum (None: all strata)."""
    return [_floats(r) for r in rows(client, feature_drift_sql(model, start_ms, end_ms, database, stratum))]


def strata(client, model: str, start_ms: int, end_ms: int, database: str = DEFAULT_DATABASE) -> list[str]:
    """The strata with exact explanations of `model` in the window, largest first."""
    return [r["stratum"] for r in rows(client, f"""
        SELECT stratum, sum(weight) AS w FROM {ident(database)}.attribution_stats
        WHERE model_name = {lit(model)} AND minute >= toStartOfMinute({ms_lit(start_ms)}) AND minute < {ms_lit(end_ms)}
        GROUP BY stratum ORDER BY w DESC, stratum""")]


def top_features(client, model: str, start_ms: int, end_ms: int, limit: int = 10,
                 database: str = DEFAULT_DATABASE) -> list[dict]:
    """The `limit` features of each model version by weighted mean |SHAP| in the
    window: model_version, feature, mean_abs_shap, mean_shap, weighted_n, n."""
    sql = (f"SELECT * FROM {ident(database)}.top_features({_window(model, start_ms, end_ms)}) "
           f"LIMIT {int(limit)} BY model_version")
    return [_floats(r) for r in rows(client, sql)]


def engine_health(client, model: str, start_ms: int, end_ms: int, bucket_seconds: int = 0,
                  database: str = DEFAULT_DATABASE) -> list[dict]:
    """engine_health rows per model version (and bucket, unless bucket_seconds is
    0); `bucket` comes back as epoch seconds."""
    sql = (f"SELECT * EXCEPT (bucket, latency_q), toUnixTimestamp(bucket) AS bucket "
           f"FROM {ident(database)}.engine_health({_window(model, start_ms, end_ms)}, "
           f"bucket_seconds = {int(bucket_seconds)})")
    return [_floats(r) for r in rows(client, sql)]


def top_reason_flips(client, model: str, start_ms: int, end_ms: int, reference_start_ms: int,
                     reference_end_ms: int, top: int = 3, database: str = DEFAULT_DATABASE) -> list[dict]:
    """Did the top reasons flip? Per model version and decision: n, weighted_n, `flipped` (the
    weighted share of the window's decisions whose first top reason is not among the `top` most
    frequent ones of the reference period), `reference_flipped` (that share in the reference
    period itself) and `reference_reasons`."""
    sql = (f"SELECT * FROM {ident(database)}.top_reason_flips({_window(model, start_ms, end_ms)}, "
           f"ref_start = {time_lit(reference_start_ms)}, ref_end = {time_lit(reference_end_ms)}, top = {int(top)})")
    return [_floats(r) for r in rows(client, sql)]


def monitored_models(client, database: str = DEFAULT_DATABASE) -> list[str]:
    """Model names that have a registered reference."""
    return [r["model_name"] for r in rows(
        client, f"SELECT DISTINCT model_name FROM {ident(database)}.model_reference ORDER BY model_name")]


def window_histograms(client, model: str, version: str, features: list[str], start_ms: int, end_ms: int,
                      database: str = DEFAULT_DATABASE, stratum: str | None = None) -> dict[str, dict]:
    """Per feature: bin_edges, reference proportions and the window's weighted
    proportions (and weight) on the same bins; of one stratum, or (None) all."""
    db = ident(database)
    names = ", ".join(lit(f) for f in features) or "''"
    only = "" if stratum is None else f" AND stratum = {lit(stratum)}"
    ref = rows(client, f"""
        SELECT feature, bin_edges, reference_hist FROM {db}.model_reference FINAL
        WHERE model_name = {lit(model)} AND model_version = {lit(version)} AND feature IN ({names})""")
    live = rows(client, f"""
        SELECT feature, bin, sum(weight) AS w FROM {db}.attribution_hist
        WHERE model_name = {lit(model)} AND model_version = {lit(version)} AND feature IN ({names}){only}
          AND minute >= toStartOfMinute({ms_lit(start_ms)}) AND minute < {ms_lit(end_ms)}
        GROUP BY feature, bin""")
    out: dict[str, dict] = {}
    for r in ref:
        edges = [float(e) for e in r["bin_edges"]]
        out[r["feature"]] = {"bin_edges": edges, "reference": [float(p) for p in r["reference_hist"]],
                             "window": [0.0] * (len(edges) - 1), "weight": 0.0}
    for r in live:
        h = out.get(r["feature"])
        if h is not None and 0 <= int(r["bin"]) < len(h["window"]):
            h["window"][int(r["bin"])] += float(r["w"])
            h["weight"] += float(r["w"])
    for h in out.values():
        if h["weight"] > 0:
            h["window"] = [w / h["weight"] for w in h["window"]]
    return out


def feature_trend(client, model: str, features: list[str], start_ms: int, end_ms: int, bucket_seconds: int = 60,
                  database: str = DEFAULT_DATABASE, version: str | None = None, stratum: str | None = None) -> list[dict]:
    """Weighted mean |SHAP| per feature and time bucket: feature, bucket (epoch
    seconds), mean_abs_shap, weighted_n; of one model version, or (None) of all
    (a challenger's shadows included), and of one stratum, or (None) all."""
    step = max(60, int(bucket_seconds))
    names = ", ".join(lit(f) for f in features) or "''"
    only = ("" if version is None else f" AND model_version = {lit(version)}") + \
        ("" if stratum is None else f" AND stratum = {lit(stratum)}")
    return [_floats(r) for r in rows(client, f"""
        SELECT feature, intDiv(toUInt32(minute), {step}) * {step} AS bucket,
               sum(sum_abs_shap) / sum(weight) AS mean_abs_shap, sum(weight) AS weighted_n
        FROM {ident(database)}.attribution_stats
        WHERE model_name = {lit(model)} AND feature IN ({names}){only}
          AND minute >= toStartOfMinute({ms_lit(start_ms)}) AND minute < {ms_lit(end_ms)}
        GROUP BY feature, bucket ORDER BY feature, bucket""")]


def recent_alerts(client, model: str | None = None, since_ms: int = 0, limit: int = 50,
                  database: str = DEFAULT_DATABASE) -> list[dict]:
    """Drift alerts raised since `since_ms`, newest first (times as epoch ms:
    window_start_ms, window_end_ms, raised_at_ms; effective_n and fallback_share
    are 0 for alerts raised before migration 020)."""
    where = f"raised_at >= {ms_lit(since_ms)}" + (f" AND model_name = {lit(model)}" if model else "")
    return [_floats(r) for r in rows(client, f"""
        SELECT alert_id, model_name, model_version, feature, statistic, value, threshold, reference,
               toUnixTimestamp64Milli(window_start) AS window_start_ms,
               toUnixTimestamp64Milli(window_end) AS window_end_ms,
               toUnixTimestamp64Milli(raised_at) AS raised_at_ms, weighted_n, n, effective_n, fallback_share
        FROM {ident(database)}.drift_alerts FINAL WHERE {where}
        ORDER BY raised_at DESC, feature LIMIT {int(limit)}""")]


def _floats(row: dict) -> dict:
    """Values that came through JSON (the sink's query port) as strings back to floats."""
    for key, value in row.items():
        if value in ("inf", "-inf"):
            row[key] = float(value)
    return row
