"""The HTML building blocks of `whystream report`: escaping, number formats, tables and
inline SVG charts (no script, no network), shared by every section of the report."""

from __future__ import annotations

import datetime as dt
import html
import math

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else esc(value)


def hhmm(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).strftime("%H:%M")


def edge(x: float) -> str:
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
        title = f"bin {k}: [{edge(edges[k])}, {edge(edges[k + 1])})" if len(edges) > k + 1 else f"bin {k}"
        for i, (value, color) in enumerate(((reference[k], "#9e9e9e"), (window[k], "#1f77b4"))):
            h = plot_h * value / top
            parts.append(f'<rect x="{x0 + 2 + i * (slot - 4) / 2:.1f}" y="{pad_t + plot_h - h:.1f}" '
                         f'width="{(slot - 4) / 2:.1f}" height="{h:.1f}" fill="{color}">'
                         f'<title>{esc(title)}: {"reference" if i == 0 else "now"} {value:.3f}</title></rect>')
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
        parts.append(f'<text x="{sx(x):.1f}" y="{height - 8}" font-size="10" text-anchor="middle">{hhmm(x)}</text>')
    if y_label:
        parts.append(f'<text x="12" y="{pad_t + plot_h / 2:.1f}" font-size="10" text-anchor="middle" '
                     f'transform="rotate(-90 12 {pad_t + plot_h / 2:.1f})">{esc(y_label)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        good = sorted(p for p in pts if p[1] is not None and math.isfinite(p[1]))
        if not good:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{path}">'
                     f'<title>{esc(name)}</title></polyline>')
        if len(good) == 1:
            parts.append(f'<circle cx="{sx(good[0][0]):.1f}" cy="{sy(good[0][1]):.1f}" r="3" fill="{color}"/>')
        ly = pad_t + 12 + 15 * i
        parts.append(f'<rect x="{pad_l + plot_w + 10}" y="{ly - 8}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{pad_l + plot_w + 24}" y="{ly + 1}" font-size="11">'
                     f'{esc(name if len(name) <= 30 else name[:29] + "…")}</text>')
    parts.append("</svg>")
    return "".join(parts)


def table(headers: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
