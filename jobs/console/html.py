"""The HTML around the console's and the report's views: escaping, number and time
formats, tables, a Plotly figure as a <div>, the page shell with its screen and print
styles. Every value from ClickHouse (ids, feature names, reason texts) is escaped here or
travels inside Plotly's JSON, which escapes `<` and `/` for a <script> block.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re

import plotly.io as pio

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True,
                 "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"]}

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:16px 24px;background:#fff}
nav{background:#243447;padding:8px 24px}nav a{color:#fff;margin-right:18px;text-decoration:none}
nav a.here{font-weight:bold;text-decoration:underline}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #eee;padding-bottom:4px}
h3{font-size:14px;margin:8px 0 4px}
.meta{color:#555;font-size:13px}.empty{color:#888}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}
.card{border:1px solid #e3e3e3;border-radius:6px;padding:6px}
.kpis{display:flex;flex-wrap:wrap;gap:12px}.kpi{border:1px solid #e3e3e3;border-radius:6px;padding:8px 14px;min-width:150px}
.kpi b{display:block;font-size:20px}.kpi span{font-size:12px;color:#555}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border-bottom:1px solid #eee;padding:4px 10px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.alert{color:#c62828;font-weight:bold}.ok{color:#2e7d32;font-weight:bold}
form.inline{display:inline}button{padding:4px 12px}
.print-only{display:none}
@media print{nav,.no-print,form,.modebar-container{display:none !important}.print-only{display:block}
 body{background:#fff}main{max-width:none;padding:0}h2{break-after:avoid}.card,table,.js-plotly-plot{break-inside:avoid}
 a{color:#222;text-decoration:none}}
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value, digits: int = 3) -> str:
    """A number for a table: rounded, thousands separated; '-' for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.{digits}g}"
    return f"{value:,}" if isinstance(value, int) else esc(value)


def pct(value, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.{digits}%}"


def when(epoch_ms: float | None) -> str:
    """Epoch milliseconds as UTC text to the second."""
    if epoch_ms is None:
        return "-"
    return dt.datetime.fromtimestamp(float(epoch_ms) / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(ms: float) -> str:
    """'850 ms', '12.5 s', '5.0 min', '2.0 h'."""
    if ms < 1000:
        return f"{ms:,.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min" if ms < 3_600_000 else f"{ms / 3_600_000:.1f} h"


NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+(e[-+]?\d+)?%?$|^-$")


def table(headers: list[str] | None, body: list[list[str]], css: str = "") -> str:
    """A table of cells already escaped (or built from escaped parts); numbers right-aligned.
    `headers` None: a table of label / value pairs, without a head."""
    head = "" if headers is None else "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead>"
    rows = "".join("<tr>" + "".join(f"<td class='n'>{c}</td>" if NUMBER.match(c) else f"<td>{c}</td>" for c in r)
                   + "</tr>" for r in body)
    return f"<table class='{css}'>{head}<tbody>{rows}</tbody></table>"


def figure(fig, name: str) -> str:
    """A Plotly figure as a <div id='fig-NAME'> and the script that draws it (plotly.js
    loaded once by the page). The id lets tests and links find a chart."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "chart"
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, config=PLOTLY_CONFIG,
                       div_id=f"fig-{slug}", default_height=f"{fig.layout.height or 300}px")


def link(href: str, text: str) -> str:
    return f"<a href='{esc(href)}'>{esc(text)}</a>"


def page(title: str, body: str, plotly_js: str, nav: str = "") -> str:
    """A whole page: `plotly_js` is a <script> element (inline in the report, a src in the console)."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{STYLE}</style>{plotly_js}</head><body>"
            f"{nav}<main>{body}</main></body></html>\n")
