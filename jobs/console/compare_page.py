"""Champion vs challenger on the same decisions: how often they give the same first reason,
how their scores differ, each feature's mean |attribution| under both, and the decisions they
scored most differently (links to both explanations). The figures are the ClickHouse views of
migration 041, read by jobs/analytics/compare.py.
"""

from __future__ import annotations

from typing import Callable

from whystream.jobs.analytics.compare import comparison
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE
from whystream.jobs.console import figures, queries
from whystream.jobs.console.html import esc, figure, fmt, pct, table, when

FEATURES = 15


def compare_view(client, model: str, href: Callable[[str], str | None], database: str = DEFAULT_DATABASE) -> str:
    found = comparison(client, model, database)
    head = f"<h1>{esc(model)}: champion vs challenger</h1>"
    if not found.summaries:
        return (head + "<p class='empty'>No challenger shadowed this model: register one with "
                "<code>whystream register NAME FILE --challenger-of NAME</code> and let the workers run.</p>")
    parts = [head, "<p class='meta'>Every decision the champion explained is explained by the challenger too, on the "
             "same feature values; score difference = challenger − champion.</p>"]
    parts.append(table(["champion", "challenger", "decisions", "same first reason", "mean score difference",
                        "mean |score difference|", "max |score difference|"],
                       [[esc(s["champion_version"]), esc(s["challenger_version"]), fmt(int(s["decisions"])),
                         pct(s["top_reason_agreement"]), fmt(float(s["mean_score_difference"]), 4),
                         fmt(float(s["mean_abs_score_difference"]), 4), fmt(float(s["max_abs_score_difference"]), 4)]
                        for s in found.summaries], "compare"))
    for s in found.summaries:
        pair = (s["champion_version"], s["challenger_version"])
        shown = [f for f in found.features if (f["champion_version"], f["challenger_version"]) == pair][:FEATURES]
        parts.append(f"<h2>{esc(pair[0])} vs {esc(pair[1])}</h2>"
                     + figure(figures.champion_challenger(shown), f"compare-{pair[0]}-{pair[1]}"))
    pairs = queries.challenger_pairs(client, model, database=database)
    body = []
    for p in pairs:
        target = href(p["prediction_id"])
        pid = f"<a href='{esc(target)}'>{esc(p['prediction_id'])}</a>" if target else esc(p["prediction_id"])
        body.append([pid, esc(when(p["event_time_ms"])), fmt(float(p["champion_score"]), 4),
                     fmt(float(p["challenger_score"]), 4), esc(p["champion_top_reason"] or "-"),
                     esc(p["challenger_top_reason"] or "-")])
    parts.append("<h2>The decisions scored most differently</h2>" + table(
        ["decision", "event time", "champion score", "challenger score", "champion's first reason",
         "challenger's first reason"], body, "pairs"))
    return "".join(parts)
