"""`whystream report`: the console's views of one model in one self-contained HTML file.

The overview (health, alerts, principal reasons, adverse decisions), the drift view, a few
adverse decisions' pages and champion vs challenger, as the console shows them
(jobs/console/), with plotly.js from the `plotly` wheel inlined once: the file opens
offline, in any browser, and prints. The decisions shown in full are exact ones (LIVE or
CACHE: TreeSHAP), so their waterfalls add up to the score.
"""

from __future__ import annotations

import datetime as dt
import re

from plotly.offline import get_plotlyjs

from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE
from whystream.jobs.console import queries
from whystream.jobs.console.compare_page import compare_view
from whystream.jobs.console.decision_page import answers_html, decision_section
from whystream.jobs.console.drift_page import drift_view
from whystream.jobs.console.html import page
from whystream.jobs.console.overview import overview
from whystream.jobs.console.period import fit

SHOWCASED = 3  # adverse decisions shown in full
LISTED = 20  # adverse decisions listed


def anchor(prediction_id: str) -> str:
    return "decision-" + re.sub(r"[^A-Za-z0-9_-]+", "-", prediction_id)


def build_report(client, model: str | None, now_ms: int, window_s: int = 3600, history_s: int = 86400,
                 database: str = DEFAULT_DATABASE) -> str:
    """The report's HTML for `model` (None: the one model ClickHouse knows), "now" being the
    `window_s` before `now_ms` and the over-time charts covering up to `history_s`. ModelNotFound
    for a model ClickHouse does not know."""
    model = queries.require_model(client, model, database)
    period = fit(client, model, now_ms, window_s, history_s, database)
    showcased = queries.adverse_decisions(client, model, period.history_start_ms, period.history_end_ms, SHOWCASED,
                                          database, exact_only=True)
    rows = {d["prediction_id"]: queries.decision(client, d["prediction_id"], database) for d in showcased}
    inside = {pid for pid, found in rows.items() if found}

    def href(prediction_id: str) -> str | None:
        return f"#{anchor(prediction_id)}" if prediction_id in inside else None

    generated = dt.datetime.fromtimestamp(now_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    decisions = "".join(decision_section(r, anchor=anchor(pid)) + answers_html(queries.answers(client, pid, database))
                        for pid, found in rows.items() for r in found if r["model_name"] == model)
    body = (f"<p class='meta'>whystream report, generated {generated}. Sections: "
            "<a href='#overview'>overview</a> · <a href='#drift'>drift</a> · <a href='#decisions'>decisions</a> · "
            "<a href='#compare'>champion vs challenger</a></p>"
            f"<div id='overview'>{overview(client, model, period, href, database, LISTED)}</div>"
            f"<div id='drift'>{drift_view(client, model, period, database)}</div>"
            "<div id='decisions'><h1>Adverse decisions in full</h1><p class='meta'>The latest exact (LIVE or CACHE) "
            f"adverse decisions; any other: <code>whystream console</code> or <code>whystream explain ID</code>.</p>"
            f"{decisions or '<p class=empty>none with an exact explanation in this period</p>'}</div>"
            f"<div id='compare'>{compare_view(client, model, href, database)}</div>")
    return page(f"whystream report: {model}", body, f"<script>{get_plotlyjs()}</script>")
