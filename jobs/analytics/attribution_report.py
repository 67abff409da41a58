"""`whystream report`: one self-contained HTML page about a model's attributions.

Attribution histograms now vs the reference for the top features, weighted
mean |SHAP| over time per top feature, coverage and latency over time, the
drift table and recent alerts. Charts are inline SVG drawn here (no script, no
network), so the file opens offline anywhere.
"""

from __future__ import annotations

import datetime as dt
import html
import math

from whystream.jobs.analytics import drift_sql
from whystream.jobs.analytics.clickhouse import DEFAULT_DATABASE

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
TOP = 6
PSI_SHOWN = 0.1  # features drifting at least this much get a histogram whatever their importance


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else _esc(value)


def _hhmm(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).strftime("%H:%M")


def _edge(x: float) -> str:
    return "-inf" if x == -math.inf else "+inf" if x == math.inf else f"{x:.3g}"


def bars_svg(reference: list[float], window: list[float], edges: list[float], width: int = 380,
             height: int = 190) -> str:
    """Grouped bars: reference (grey) and window (blue) proportion per bin."""
    pad_l, pad_b, pad_t = 36, 22, 8
    n = len(reference)
    top = max(max(reference, default=0), max(window, default=0), 1e-9) * 1.1
    plot_w, plot_h = width - pad_l - 6, height - pad_b - pad_t
    slot = plot_w / max(n, 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for frac in (0, 0.5, 1):
        y = pad_t + plot_h * (1 - frac)
        parts.append(f'<line x1="{pad_l}" x2="{width - 6}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{pad_l - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{top * frac:.2f}</text>')
    for k in range(n):
        x0 = pad_l + k * slot
        title = f"bin {k}: [{_edge(edges[k])}, {_edge(edges[k + 1])})" if len(edges) > k + 1 else f"bin {k}"
        for i, (value, color) in enumerate(((reference[k], "#9e9e9e"), (window[k], "#1f77b4"))):
            h = plot_h * value / top
            parts.append(f'<rect x="{x0 + 2 + i * (slot - 4) / 2:.1f}" y="{pad_t + plot_h - h:.1f}" '
                         f'width="{(slot - 4) / 2:.1f}" height="{h:.1f}" fill="{color}">'
                         f'<title>{_esc(title)}: {"reference" if i == 0 else "now"} {value:.3f}</title></rect>')
        parts.append(f'<text x="{x0 + slot / 2:.1f}" y="{height - 8}" font-size="10" text-anchor="middle">{k}</text>')
    parts.append("</svg>")
    return "".join(parts)


def lines_svg(series: dict[str, list[tuple[float, float]]], width: int = 760, height: int = 240,
              y_label: str = "", y_min: float | None = 0.0) -> str:
    """Line chart of several series of (epoch seconds, value) points."""
    points = [p for s in series.values() for p in s if p[1] is not None and math.isfinite(p[1])]
    if not points:
        return '<p class="empty">no data in this period</p>'
    pad_l, pad_r, pad_t, pad_b = 56, 210, 10, 26
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo = min(p[1] for p in points) if y_min is None else min(y_min, min(p[1] for p in points))
    y_hi = max(p[1] for p in points)
    if x_hi == x_lo:
        x_hi = x_lo + 60
    if y_hi == y_lo:
        y_hi = y_lo + 1
    y_hi += (y_hi - y_lo) * 0.05
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(x):
        return pad_l + plot_w * (x - x_lo) / (x_hi - x_lo)

    def sy(y):
        return pad_t + plot_h * (1 - (y - y_lo) / (y_hi - y_lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for frac in (0, 0.25, 0.5, 0.75, 1):
        y = y_lo + (y_hi - y_lo) * frac
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{pad_l - 4}" y="{sy(y) + 4:.1f}" font-size="10" text-anchor="end">{y:.3g}</text>')
    for frac in (0, 0.25, 0.5, 0.75, 1):
        x = x_lo + (x_hi - x_lo) * frac
        parts.append(f'<text x="{sx(x):.1f}" y="{height - 8}" font-size="10" text-anchor="middle">{_hhmm(x)}</text>')
    if y_label:
        parts.append(f'<text x="12" y="{pad_t + plot_h / 2:.1f}" font-size="10" text-anchor="middle" '
                     f'transform="rotate(-90 12 {pad_t + plot_h / 2:.1f})">{_esc(y_label)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        good = sorted(p for p in pts if p[1] is not None and math.isfinite(p[1]))
        if not good:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{path}">'
                     f'<title>{_esc(name)}</title></polyline>')
        if len(good) == 1:
            parts.append(f'<circle cx="{sx(good[0][0]):.1f}" cy="{sy(good[0][1]):.1f}" r="3" fill="{color}"/>')
        ly = pad_t + 12 + 15 * i
        parts.append(f'<rect x="{pad_l + plot_w + 10}" y="{ly - 8}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{pad_l + plot_w + 24}" y="{ly + 1}" font-size="11">'
                     f'{_esc(name if len(name) <= 30 else name[:29] + "…")}</text>')
    parts.append("</svg>")
    return "".join(parts)


def champion_vs_challenger(client, model: str, database: str) -> str:
    """The report's section on the challenger's shadow explanations (jobs/analytics/compare.py)."""
    from whystream.jobs.analytics.compare import comparison

    found = comparison(client, model, database)
    if not found.summaries:
        return ("<h2>Champion vs challenger</h2><p class='empty'>no challenger shadowed this model "
                "(`whystream register ... --challenger-of`)</p>")
    summary = _table(["champion", "challenger", "decisions", "top reason agrees", "mean score diff",
                      "mean |score diff|", "max |score diff|"],
                     [[_esc(s["champion_version"]), _esc(s["challenger_version"]), _fmt(s["decisions"], 0),
                       f"{s['top_reason_agreement']:.1%}", _fmt(s["mean_score_difference"]),
                       _fmt(s["mean_abs_score_difference"]), _fmt(s["max_abs_score_difference"])]
                      for s in found.summaries])
    features = _table(["feature", "champion", "challenger", "champion mean SHAP", "challenger mean SHAP",
                       "champion mean |SHAP|", "challenger mean |SHAP|"],
                      [[_esc(f["feature"]), _esc(f["champion_version"]), _esc(f["challenger_version"]),
                        _fmt(f["champion_mean_shap"]), _fmt(f["challenger_mean_shap"]),
                        _fmt(f["champion_mean_abs_shap"]), _fmt(f["challenger_mean_abs_shap"])]
                       for f in found.features[:3 * TOP]])
    return ("<h2>Champion vs challenger (the same decisions)</h2><p class='meta'>score diff = challenger - "
            "champion</p>" + summary + features)


def _table(headers: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


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
    sections = [f"<h1>whystream report: {_esc(model)}</h1>",
                f"<p class='meta'>generated {generated}; \"now\" = the last {(now_ms - start) // 60_000} minutes; "
                f"charts over the last {history_s / 3600:g} hours in {bucket // 60}-minute buckets; "
                f"version {_esc(version or '-')}. All counts are inclusion-weighted estimates of decisions "
                f"unless marked n.</p>"]
    if not version:
        sections.append("<p class='empty'>No explanations of this model (with a registered reference) in "
                        "ClickHouse for this period.</p>")

    # health summary
    if health_now:
        body = [[_esc(h["model_version"]), _fmt(h["explained"]), _fmt(h["estimated_seen"], 0),
                 f"{h['coverage']:.2%}", f"{h['fallback_rate']:.2%}", f"{h['cache_hit_rate']:.2%}",
                 _fmt(h["latency_p50_ms"], 0), _fmt(h["latency_p99_ms"], 0)] for h in health_now]
        sections.append("<h2>Explanation health now</h2>" + _table(
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
            cards.append(f"<div class='card'><h3>{_esc(f)}</h3><p class='meta'>PSI {_fmt(d.get('psi'))} · "
                         f"stability {_fmt(d.get('stability'))} · weighted n {_fmt(h['weight'], 0)}</p>"
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
        body = [[_esc(r["feature"]), _fmt(r["psi"]), _fmt(r["ks"]), _fmt(r["stability"]), _fmt(r["wasserstein"], 4),
                 _fmt(r["mean_abs_shap"], 4), _fmt(r["reference_mean_abs_shap"], 4), _fmt(r["weighted_n"], 0),
                 _fmt(r["effective_n"], 0), _fmt(r["n"])] for r in sorted(drift, key=lambda r: -(r["psi"] or 0))]
        sections.append("<h2>Drift now, per feature</h2><p class='meta'>Exact (TreeSHAP) attributions only; "
                        f"{drift[0]['fallback_share']:.1%} of this version's explanations in the window came from "
                        "the fallback and are not in these statistics.</p>" + _table(
            ["feature", "PSI", "KS", "stability", "Wasserstein-1", "mean |SHAP|", "reference mean |SHAP|",
             "weighted n", "effective n", "n"], body))
    from whystream.jobs.analytics.input_drift import report_sections  # imports this module's helpers

    sections.extend(report_sections(client, model, version, drift, start, now_ms, database))
    body = [[_esc(dt.datetime.fromtimestamp(a["raised_at_ms"] / 1000, dt.timezone.utc).strftime("%m-%d %H:%M")),
             _esc(a["model_version"]), _esc(a["feature"]), _esc(a["statistic"]), _fmt(a["value"]),
             _fmt(a["threshold"]), _fmt(a["weighted_n"], 0)] for a in alerts]
    sections.append("<h2>Drift alerts</h2>" + (_table(
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
            f"<title>whystream report: {_esc(model)}</title><style>{style}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")
