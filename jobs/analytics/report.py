"""`whystream report`: one self-contained HTML page about a model's attributions.

Attribution histograms now vs the reference for the top features, weighted
mean |SHAP| over time per top feature, coverage and latency over time, the
drift table and recent alerts. Charts are inline SVG drawn here (no script, no
network), so the file opens offline anywhere.
"""

from __future__ import annotations

import datetime as dt

from whystream.jobs.analytics import drift_sql, score_consistency
from whystream.jobs.analytics.report_html import bars_svg, esc, fmt, lines_svg, table
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE

TOP = 6
PSI_SHOWN = 0.1  # features drifting at least this much get a histogram whatever their importance


def champion_vs_challenger(client, model: str, database: str) -> str:
    """The report's section on the challenger's shadow explanations (jobs/analytics/compare.py)."""
    from whystream.jobs.analytics.compare import comparison

    found = comparison(client, model, database)
    if not found.summaries:
        return ("<h2>Champion vs challenger</h2><p class='empty'>no challenger shadowed this model "
                "(`whystream register ... --challenger-of`)</p>")
    summary = table(["champion", "challenger", "decisions", "top reason agrees", "mean score diff",
                      "mean |score diff|", "max |score diff|"],
                     [[esc(s["champion_version"]), esc(s["challenger_version"]), fmt(s["decisions"], 0),
                       f"{s['top_reason_agreement']:.1%}", fmt(s["mean_score_difference"]),
                       fmt(s["mean_abs_score_difference"]), fmt(s["max_abs_score_difference"])]
                      for s in found.summaries])
    features = table(["feature", "champion", "challenger", "champion mean SHAP", "challenger mean SHAP",
                       "champion mean |SHAP|", "challenger mean |SHAP|"],
                      [[esc(f["feature"]), esc(f["champion_version"]), esc(f["challenger_version"]),
                        fmt(f["champion_mean_shap"]), fmt(f["challenger_mean_shap"]),
                        fmt(f["champion_mean_abs_shap"]), fmt(f["challenger_mean_abs_shap"])]
                       for f in found.features[:3 * TOP]])
    return ("<h2>Champion vs challenger (the same decisions)</h2><p class='meta'>score diff = challenger - "
            "champion</p>" + summary + features)


def build_report(client, model: str, now_ms: int, window_s: int = 3600, history_s: int = 86400,
                 database: str = DEFAULT_DATABASE) -> str:
    """The report's HTML for `model`, with `window_s` ending at `now_ms` as "now"
    and `history_s` for the over-time charts."""
    start, hist_start = now_ms - window_s * 1000, now_ms - history_s * 1000
    bucket = max(60, (history_s // 120) // 60 * 60)
    # "now" is the window; with nothing in it, the whole history stands in
    drift_all = drift_sql.feature_drift(client, model, start, now_ms, database)
    if not drift_all:
        start = hist_start
        drift_all = drift_sql.feature_drift(client, model, start, now_ms, database)
    # the version with a reference and the most explanations, its top features by weighted mean |SHAP|
    weight: dict[str, float] = {}
    for r in drift_all:
        weight[r["model_version"]] = max(weight.get(r["model_version"], 0.0), r["weighted_n"])
    version = max(weight, key=weight.get) if weight else None
    drift = [r for r in drift_all if r["model_version"] == version]
    # drifting features first (PSI above PSI_SHOWN), then the most important ones
    drifting = [r["feature"] for r in sorted(drift, key=lambda r: -(r["psi"] or 0)) if (r["psi"] or 0) > PSI_SHOWN]
    important = [r["feature"] for r in sorted(drift, key=lambda r: -r["mean_abs_shap"])]
    features = list(dict.fromkeys(drifting + important))[:TOP]
    hists = drift_sql.window_histograms(client, model, version, features, start, now_ms, database) if version else {}
    trend = drift_sql.feature_trend(client, model, features, hist_start, now_ms, bucket, database)
    health_now = drift_sql.engine_health(client, model, start, now_ms, 0, database)
    health = drift_sql.engine_health(client, model, hist_start, now_ms, bucket, database)
    alerts = drift_sql.recent_alerts(client, model, hist_start, 50, database)

    generated = dt.datetime.fromtimestamp(now_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [f"<h1>whystream report: {esc(model)}</h1>",
                f"<p class='meta'>generated {generated}; \"now\" = the last {(now_ms - start) // 60_000} minutes; "
                f"charts over the last {history_s / 3600:g} hours in {bucket // 60}-minute buckets; "
                f"version {esc(version or '-')}. All counts are inclusion-weighted estimates of decisions "
                f"unless marked n.</p>"]
    if not version:
        sections.append("<p class='empty'>No explanations of this model (with a registered reference) in "
                        "ClickHouse for this period.</p>")

    # health summary
    if health_now:
        body = [[esc(h["model_version"]), fmt(h["explained"]), fmt(h["estimated_seen"], 0),
                 f"{h['coverage']:.2%}", f"{h['fallback_rate']:.2%}", f"{h['cache_hit_rate']:.2%}",
                 fmt(h["latency_p50_ms"], 0), fmt(h["latency_p99_ms"], 0)] for h in health_now]
        sections.append("<h2>Explanation health now</h2>" + table(
            ["version", "explained (n)", "estimated decisions", "coverage", "fallback rate", "cache-hit rate",
             "latency p50 ms", "latency p99 ms"], body))

    # histograms
    if hists:
        cards = []
        for f in features:
            h = hists.get(f)
            if not h:
                continue
            d = next((r for r in drift if r["feature"] == f), {})
            cards.append(f"<div class='card'><h3>{esc(f)}</h3><p class='meta'>PSI {fmt(d.get('psi'))} · "
                         f"stability {fmt(d.get('stability'))} · weighted n {fmt(h['weight'], 0)}</p>"
                         + bars_svg(h["reference"], h["window"], h["bin_edges"]) + "</div>")
        sections.append("<h2>Attribution histograms: now (blue) vs reference (grey)</h2>"
                        "<p class='meta'>Share of decisions per SHAP bin (the model's fixed reference bins; "
                        "hover a bar for its range).</p><div class='grid'>" + "".join(cards) + "</div>")

    # mean |SHAP| over time
    series = {f: [(r["bucket"], r["mean_abs_shap"]) for r in trend if r["feature"] == f] for f in features}
    sections.append("<h2>Weighted mean |SHAP| over time (top features)</h2>" + lines_svg(series, y_label="mean |SHAP|"))

    # coverage and latency
    by_version: dict[str, list[dict]] = {}
    for h in health:
        by_version.setdefault(h["model_version"], []).append(h)
    coverage = {f"coverage {v}": [(h["bucket"], h["coverage"]) for h in hs] for v, hs in by_version.items()}
    fallback = {f"fallback {v}": [(h["bucket"], h["fallback_rate"]) for h in hs] for v, hs in by_version.items()}
    cache = {f"cache hits {v}": [(h["bucket"], h["cache_hit_rate"]) for h in hs] for v, hs in by_version.items()}
    latency = {}
    for v, hs in by_version.items():
        latency[f"p50 {v}"] = [(h["bucket"], h["latency_p50_ms"]) for h in hs]
        latency[f"p99 {v}"] = [(h["bucket"], h["latency_p99_ms"]) for h in hs]
    sections.append("<h2>Coverage, fallback and cache hits</h2><p class='meta'>coverage = explained / "
                    "estimated decisions (sum of inclusion weights)</p>"
                    + lines_svg({**coverage, **fallback, **cache}, y_label="share"))
    sections.append("<h2>Latency (event time to explanation)</h2>" + lines_svg(latency, y_label="ms"))

    # drift table
    if drift:
        body = [[esc(r["feature"]), fmt(r["psi"]), fmt(r["ks"]), fmt(r["stability"]), fmt(r["wasserstein"], 4),
                 fmt(r["mean_abs_shap"], 4), fmt(r["reference_mean_abs_shap"], 4), fmt(r["weighted_n"], 0),
                 fmt(r["effective_n"], 0), fmt(r["n"])] for r in sorted(drift, key=lambda r: -(r["psi"] or 0))]
        sections.append("<h2>Drift now, per feature</h2><p class='meta'>Exact (TreeSHAP) attributions only; "
                        f"{drift[0]['fallback_share']:.1%} of this version's explanations in the window came from "
                        "the fallback and are not in these statistics.</p>" + table(
            ["feature", "PSI", "KS", "stability", "Wasserstein-1", "mean |SHAP|", "reference mean |SHAP|",
             "weighted n", "effective n", "n"], body))
    from whystream.jobs.analytics.input_drift import (
        report_sections,  # imports this module's helpers
    )

    sections.extend(report_sections(client, model, version, drift, start, now_ms, database))
    sections.append(score_consistency.report_section(client, model, start, now_ms, database))
    body = [[esc(dt.datetime.fromtimestamp(a["raised_at_ms"] / 1000, dt.timezone.utc).strftime("%m-%d %H:%M")),
             esc(a["model_version"]), esc(a["feature"]), esc(a["statistic"]), fmt(a["value"]),
             fmt(a["threshold"]), fmt(a["weighted_n"], 0)] for a in alerts]
    sections.append("<h2>Drift alerts</h2>" + (table(
        ["raised (UTC)", "version", "feature", "statistic", "value", "threshold", "weighted n"], body)
        if body else "<p class='empty'>none in this period</p>"))
    sections.append(champion_vs_challenger(client, model, database))

    style = ("body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}"
             "h1{font-size:22px}h2{font-size:17px;margin-top:28px}h3{font-size:14px;margin:4px 0}"
             ".meta{color:#666;font-size:12px}.empty{color:#999}.grid{display:flex;flex-wrap:wrap;gap:12px}"
             ".card{border:1px solid #e3e3e3;border-radius:6px;padding:8px}"
             "table{border-collapse:collapse;font-size:13px}th,td{border-bottom:1px solid #eee;padding:4px 10px;"
             "text-align:right}th:first-child,td:first-child{text-align:left}")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>whystream report: {esc(model)}</title><style>{style}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")
