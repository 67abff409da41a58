"""The console's and the report's charts, as Plotly figures (the JavaScript ships inside the
`plotly` wheel: the console serves it from the package, the report inlines it once).

Each function takes rows as the queries return them and gives a `go.Figure`; what the
reader must see without hovering is on the chart itself: histogram bins labelled with
their ranges, one panel per feature where scales differ (a drifted feature is not a flat
line beside a dominant one), alert markers on the statistic that raised them, the
threshold on the waterfall. Times are epoch seconds in, UTC dates out (Plotly picks tick
labels that suit the span, seconds to days).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

REFERENCE, NOW, ALERT = "#9e9e9e", "#1f77b4", "#d62728"
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
TEMPLATE = go.layout.Template(layout=dict(
    font=dict(family="system-ui, sans-serif", size=12, color="#222"), colorway=PALETTE,
    plot_bgcolor="white", paper_bgcolor="white", hovermode="closest",
    margin=dict(l=60, r=20, t=40, b=50),
    xaxis=dict(gridcolor="#eee", linecolor="#999", zerolinecolor="#ccc", automargin=True),
    yaxis=dict(gridcolor="#eee", linecolor="#999", zerolinecolor="#ccc", automargin=True, rangemode="tozero"),
    legend=dict(orientation="h", x=0, y=-0.3, yanchor="top")))


def utc(epoch_s: float) -> str:
    """An epoch second as the UTC text Plotly reads as a date."""
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _figure(title: str, height: int = 300, **layout) -> go.Figure:
    return go.Figure(layout=dict(template=TEMPLATE, title=dict(text=title, x=0, font=dict(size=14)),
                                 height=height, **layout))


def _number(x: float, digits: int) -> str:
    return f"{x:.{digits}g}"


def bin_labels(edges: list[float]) -> list[str]:
    """'< a', '[a, b)', …, '≥ z' for bins [edge k, edge k+1), each edge with the fewest
    significant digits (2 or more) that keep it apart from its neighbours.

    >>> bin_labels([-math.inf, -0.0512, 0.01234, 0.4, 0.400001, math.inf])
    ['< -0.051', '[-0.051, 0.012)', '[0.012, 0.4)', '[0.4, 0.400001)', '≥ 0.400001']
    """
    shown = {}
    for i, e in enumerate(edges):
        if math.isfinite(e):
            near = [n for n in (edges[i - 1] if i else None, edges[i + 1] if i + 1 < len(edges) else None)
                    if n is not None and math.isfinite(n) and n != e]
            digits = next((d for d in range(2, 9) if all(_number(e, d) != _number(n, d) for n in near)), 9)
            shown[i] = _number(e, digits)
    labels = []
    for k in range(len(edges) - 1):
        if k not in shown:
            labels.append(f"< {shown[k + 1]}")
        elif k + 1 not in shown:
            labels.append(f"≥ {shown[k]}")
        else:
            labels.append(f"[{shown[k]}, {shown[k + 1]})")
    return labels


def histogram(feature: str, hist: dict, subtitle: str = "") -> go.Figure:
    """Reference vs now on the reference's bins: share of decisions per SHAP bin, each bin
    labelled with its range. Bins empty on both sides (a feature with fewer distinct
    attributions than bins) are left out."""
    keep = [k for k in range(len(hist["reference"])) if hist["reference"][k] > 0 or hist["window"][k] > 0]
    labels = bin_labels(hist["bin_edges"])
    x = [labels[k] for k in keep]
    fig = _figure(f"{feature}" + (f"<br><sup>{subtitle}</sup>" if subtitle else ""), height=340, barmode="group",
                  bargap=0.15, legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"),
                  margin=dict(t=70))
    fig.add_bar(name="reference", x=x, y=[hist["reference"][k] for k in keep], marker_color=REFERENCE,
                hovertemplate="SHAP in %{x}<br>reference %{y:.1%}<extra></extra>")
    fig.add_bar(name="now", x=x, y=[hist["window"][k] for k in keep], marker_color=NOW,
                hovertemplate="SHAP in %{x}<br>now %{y:.1%}<extra></extra>")
    fig.update_xaxes(title_text="SHAP value (raw score units)", tickangle=-35, type="category")
    fig.update_yaxes(title_text="share of decisions", tickformat=".0%")
    return fig


def per_feature_over_time(title: str, panels: dict[str, dict[str, list[tuple[float, float]]]], y_title: str,
                          reference: dict[str, float] | None = None,
                          alerts: dict[str, list[tuple[float, float, str]]] | None = None) -> go.Figure:
    """One panel per feature (each its own y scale) holding its lines over time, a dashed
    reference level where given, a red marker where an alert was raised (at the end of the
    window it judged, at the value that raised it)."""
    features = list(panels)
    rows = max(len(features), 1)
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=min(0.08, 0.4 / rows),
                        subplot_titles=features or [""])
    height = 120 + 170 * rows
    fig.update_layout(template=TEMPLATE, height=height, title=dict(text=title, x=0, font=dict(size=14)),
                      legend=dict(orientation="h", x=0, y=-50 / height, yanchor="top"))
    shown: set[str] = set()
    for i, feature in enumerate(features, start=1):
        for k, (line, points) in enumerate(panels[feature].items()):
            points = sorted((t, v) for t, v in points if v is not None and math.isfinite(v))
            fig.add_scatter(x=[utc(t) for t, _ in points], y=[v for _, v in points], mode="lines+markers",
                            name=line, legendgroup=line, showlegend=line not in shown,
                            line=dict(color=PALETTE[k % len(PALETTE)]), marker=dict(size=5), row=i, col=1,
                            hovertemplate=f"{_hover_name(feature)} {_hover_name(line)}<br>%{{x}}<br>%{{y:.3g}}"
                                          "<extra></extra>")
            shown.add(line)
        if reference and reference.get(feature) is not None:
            fig.add_hline(y=reference[feature], line=dict(color=REFERENCE, dash="dash"), row=i, col=1,
                          annotation_text="reference", annotation_position="top left")
        marks = sorted((alerts or {}).get(feature, []))
        if marks:
            fig.add_scatter(x=[utc(t) for t, _, _ in marks], y=[v for _, v, _ in marks], mode="markers",
                            name="alert", legendgroup="alert", showlegend="alert" not in shown,
                            text=[s for _, _, s in marks], marker=dict(color=ALERT, size=12, symbol="x"),
                            row=i, col=1, hovertemplate="alert on %{text}<br>%{x}<br>%{y:.3g}<extra></extra>")
            shown.add("alert")
        fig.update_yaxes(title_text=y_title, row=i, col=1)
    return fig


def _hover_name(name: str) -> str:
    return name.replace("%", "%%").replace("{", "(").replace("}", ")")


def lines_over_time(title: str, series: dict[str, list[tuple[float, float]]], y_title: str,
                    percent: bool = False, height: int = 380) -> go.Figure:
    """Several series on one time axis (shares, latencies)."""
    fig = _figure(title, height=height)
    for name, points in series.items():
        points = sorted((t, v) for t, v in points if v is not None and math.isfinite(v))
        fig.add_scatter(x=[utc(t) for t, _ in points], y=[v for _, v in points], mode="lines+markers",
                        name=name, marker=dict(size=5))
    fig.update_yaxes(title_text=y_title, tickformat=".0%" if percent else None)
    return fig


def drift_beside(rows: list[dict]) -> go.Figure:
    """Per feature, attribution PSI (the reasons) beside value PSI (the data)."""
    fig = _figure("Attribution PSI beside input (value) PSI", height=120 + 28 * max(len(rows), 3), barmode="group")
    names = [r["feature"] for r in rows]
    fig.add_bar(name="attribution PSI", y=names, x=[r.get("psi") or 0 for r in rows], orientation="h",
                marker_color=NOW)
    fig.add_bar(name="value PSI", y=names, x=[r.get("value_psi") or 0 for r in rows], orientation="h",
                marker_color="#ff7f0e")
    fig.update_yaxes(autorange="reversed", type="category", rangemode=None)
    fig.update_xaxes(title_text="PSI (0.1: moderate shift, 0.25: large)")
    return fig


def reason_bars(reasons: list[dict]) -> go.Figure:
    """The most frequent principal reasons of adverse decisions."""
    labels = [f"{r['code']}: {r['text']}" if r["text"] and r["text"] != r["code"] else str(r["code"]) for r in reasons]
    fig = _figure("Most frequent principal reasons (adverse decisions)", height=120 + 28 * max(len(reasons), 3))
    fig.add_bar(y=labels, x=[int(r["decisions"]) for r in reasons], orientation="h", marker_color=NOW,
                customdata=[[float(r["share"])] for r in reasons],
                hovertemplate="%{y}<br>%{x} decisions (%{customdata[0]:.1%})<extra></extra>")
    fig.update_yaxes(autorange="reversed", type="category", rangemode=None)
    fig.update_xaxes(title_text="adverse decisions giving this reason")
    return fig


def short_label(text: str, width: int) -> str:
    """`text` cut to `width` characters with an ellipsis.

    >>> short_label("merchant_risk", 22), short_label("a_very_long_feature_name_from_a_producer", 20)
    ('merchant_risk', 'a_very_long_feature…')
    """
    return text if len(text) <= width else text[:width - 1] + "…"


def waterfall(base_value: float, contributions: list[tuple[str, str, float]], raw_score: float,
              threshold: float | None, output_space: str) -> go.Figure:
    """From the base value, each attribution in turn, to the raw score; the threshold (mapped
    into the same space) as a line. `contributions`: (axis label, full label for the hover,
    SHAP). The labels sit on the y axis, which grows its margin to fit them (`automargin`);
    each bar's SHAP is written outside its end, and the x axis is padded on both sides so that
    text stays inside the plot instead of running over the labels."""
    steps = [v for _, _, v in contributions]
    ends = itertools.accumulate(steps, initial=base_value)  # where each bar ends, the base value first
    reach = [0.0, raw_score, *ends] + ([threshold] if threshold is not None else [])
    reach = [x for x in reach if math.isfinite(x)]
    lo, hi = min(reach), max(reach)
    pad = 0.25 * (hi - lo) if hi > lo else 1.0
    fig = _figure(f"From base value to score ({output_space})", height=140 + 26 * (len(contributions) + 2),
                  margin=dict(l=10, r=20, t=50, b=50))
    fig.add_waterfall(orientation="h", measure=["absolute"] + ["relative"] * len(contributions) + ["total"],
                      y=["base value"] + [label for label, _, _ in contributions] + ["score (raw)"],
                      x=[base_value] + steps + [raw_score],
                      customdata=["base value"] + [full for _, full, _ in contributions] + ["score (raw)"],
                      base=0, connector=dict(line=dict(color="#bbb")),
                      increasing=dict(marker=dict(color=ALERT)), decreasing=dict(marker=dict(color="#2ca02c")),
                      totals=dict(marker=dict(color=NOW)), cliponaxis=False,
                      textposition=["inside"] + ["outside"] * len(contributions) + ["inside"],
                      text=[f"{base_value:.3g}"] + [f"{v:+.3g}" for v in steps] + [f"{raw_score:.3g}"],
                      hovertemplate="%{customdata}<br>%{delta:+.4g} → %{x:.4g}<extra></extra>")
    if threshold is not None:
        fig.add_vline(x=threshold, line=dict(color="#000", dash="dash"), annotation_text="threshold",
                      annotation_position="top")
    fig.update_yaxes(autorange="reversed", type="category", rangemode=None, automargin=True)
    fig.update_xaxes(title_text=f"raw score ({output_space})", range=[lo - pad, hi + pad])
    return fig


def probability_gauge(probability: float, threshold: float | None) -> go.Figure:
    """The decision's probability against the threshold."""
    fig = go.Figure(go.Indicator(mode="gauge+number", value=probability, number=dict(valueformat=".1%"),
                                 gauge=dict(axis=dict(range=[0, 1], tickformat=".0%"), bar=dict(color=NOW),
                                            threshold=None if threshold is None else dict(
                                                line=dict(color="#000", width=3), value=threshold))))
    fig.update_layout(template=TEMPLATE, height=220, margin=dict(l=30, r=30, t=50, b=10),
                      title=dict(text="Probability vs threshold", x=0, font=dict(size=14)))
    return fig


def champion_challenger(features: list[dict]) -> go.Figure:
    """Mean |attribution| per feature, champion beside challenger, on the same decisions."""
    fig = _figure("Mean |SHAP| on the same decisions", height=120 + 28 * max(len(features), 3), barmode="group")
    names = [f["feature"] for f in features]
    fig.add_bar(name="champion", y=names, x=[f["champion_mean_abs_shap"] for f in features], orientation="h",
                marker_color=NOW)
    fig.add_bar(name="challenger", y=names, x=[f["challenger_mean_abs_shap"] for f in features], orientation="h",
                marker_color="#ff7f0e")
    fig.update_yaxes(autorange="reversed", type="category", rangemode=None)
    fig.update_xaxes(title_text="mean |SHAP| (raw score units)")
    return fig
