"""The overview of one model: explanation health (coverage, the fallback's share and what it
means, latency, cache hits), score consistency (the producer's scores against the model's
own, jobs/analytics/score_consistency.py), drift alerts, the most frequent principal
reasons, and the adverse decisions with links to their decision pages.

Latency is measured from broker receipt: explanation time minus `received_at` (the Kafka
timestamp of the decision's PredictionEvent, ExplanationEvent v4), of the priority decisions
(as `make demo` prints it: sampled ones wait for their reservoir window by design). Explanations without
it (written before v4, or a broker that gave no timestamp) fall back to `latency_ms`:
explanation time minus the decision's event time. When event times are replayed (`make
demo` streams the last 20 minutes of decisions in a minute or two) that measures how old
the replayed events were, not how fast the engine is; `replayed` detects it from the spans
of the two clocks and the page labels those figures "replay".
"""

from __future__ import annotations

from typing import Callable

from whystream.jobs.analytics import drift_sql, score_consistency
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE
from whystream.jobs.console import figures, queries
from whystream.jobs.console.html import duration, esc, figure, fmt, pct, table, when
from whystream.jobs.console.period import Period

FALLBACK_MEANS = ("<b>Fallback</b>: when live TreeSHAP fails, or a priority decision's latency budget is spent, the "
                  "worker explains it with Saabas path attribution, an approximation (source FALLBACK) whose "
                  "attributions need not add up exactly. Fallback explanations are kept out of every drift "
                  "statistic; LIVE and CACHE explanations are exact TreeSHAP (base value + attributions = raw score).")
COVERAGE_MEANS = ("<b>Coverage</b>: explained decisions / estimated decisions (the sum of the inclusion weights: "
                  "every priority decision counts 1, a sampled one n/k).")


def replayed(spans: dict) -> bool:
    """Event times replayed: the decisions' event times spread far wider than the times they were
    explained at (a live stream explains at the pace it decides).

    >>> replayed({"n": 500, "event_span_ms": 1_200_000, "explained_span_ms": 90_000})
    True
    >>> replayed({"n": 500, "event_span_ms": 600_000, "explained_span_ms": 598_000})
    False
    """
    return spans["n"] >= 20 and spans["event_span_ms"] > 2 * spans["explained_span_ms"] + 60_000


RECEIPT = ("Latency = explanation time − when the broker received the decision (received_at), of the priority "
           "decisions (explained at once; a sampled decision waits for its reservoir window to close): the "
           "engine's latency, whatever the event times say.")


def latency_label(spans: dict) -> str:
    """What the latency figures measure, in one paragraph for the page: from broker receipt where
    the explanations carry `received_at`; from event time (and "replay" if replayed) where not.

    >>> "broker received" in latency_label({"n": 500, "received": 500, "event_span_ms": 1_200_000,
    ...                                     "explained_span_ms": 90_000})
    True
    >>> "Replayed" in latency_label({"n": 500, "received": 500, "event_span_ms": 1_200_000,
    ...                              "explained_span_ms": 90_000})
    False
    """
    if spans.get("received", 0) >= spans["n"]:
        return f"<p class='meta'>{RECEIPT}</p>"
    base = ("Latency = explanation time − the decision's event time (latency_ms), so it includes any time "
            "before the event reached the broker.")
    if spans.get("received", 0):
        base = (f"{RECEIPT} Versions whose explanations have no receipt time (written before ExplanationEvent v4): "
                f"{base[0].lower()}{base[1:]}")
    if replayed(spans):
        return (f"<p class='note'><b>Replayed event times</b>: these decisions span "
                f"{duration(spans['event_span_ms'])} of event time but were explained within "
                f"{duration(spans['explained_span_ms'])}, so the latency below is the age of replayed events "
                f"(replay), not the engine's latency. {base}</p>")
    return f"<p class='meta'>{base}</p>"


def health_section(client, model: str, period: Period, database: str = DEFAULT_DATABASE) -> str:
    now = drift_sql.engine_health(client, model, period.start_ms, period.end_ms, 0, database)
    spans = queries.time_spans(client, model, period.start_ms, period.end_ms, database)
    fallback_label = "latency (replay)" if replayed(spans) else "latency from event time"
    receipt_now = {r["model_version"]: r for r in queries.receipt_latency(client, model, period.start_ms,
                                                                          period.end_ms, 0, database)}
    # "fallback" is defined where it first appears: before the figures that use the word
    parts = ["<h2>Explanation health now</h2>", f"<p class='meta'>{FALLBACK_MEANS}</p><p class='meta'>{COVERAGE_MEANS}</p>",
             latency_label(spans)]
    if not now:
        return "".join(parts) + "<p class='empty'>no explanations in this period</p>"
    shadows = queries.challenger_versions(client, model, period.history_start_ms, period.history_end_ms, database)
    for h in sorted(now, key=lambda h: h["model_version"] in shadows):  # the champion first
        role = " (the challenger's shadow explanations)" if h["model_version"] in shadows else ""
        lat, label = (receipt_now[h["model_version"]], "latency from receipt") if h["model_version"] in receipt_now \
            else (h, fallback_label)
        kpis = [(fmt(int(h["explained"])), "explained (n)"), (pct(h["coverage"]), "coverage"),
                (pct(h["fallback_rate"]), "fallback share"), (pct(h["cache_hit_rate"]), "cache hits"),
                (duration(float(lat["latency_p50_ms"])), f"{label} p50"),
                (duration(float(lat["latency_p99_ms"])), f"{label} p99")]
        parts.append(f"<h3>version {esc(h['model_version'])}{role}</h3><div class='kpis'>"
                     + "".join(f"<div class='kpi'><b>{v}</b><span>{k}</span></div>" for v, k in kpis) + "</div>")
    over = drift_sql.engine_health(client, model, period.history_start_ms, period.history_end_ms, period.bucket_s,
                                   database)
    by_version: dict[str, list[dict]] = {}
    for h in over:
        by_version.setdefault(h["model_version"], []).append(h)
    received: dict[str, list[dict]] = {}
    for r in queries.receipt_latency(client, model, period.history_start_ms, period.history_end_ms, period.bucket_s,
                                     database):
        received.setdefault(r["model_version"], []).append(r)
    timed = {v: received.get(v, hs) for v, hs in by_version.items()}  # from receipt where the versions have it
    shares, latency = {}, {}
    scale, unit = (1000, "s") if max((h["latency_p99_ms"] for hs in timed.values() for h in hs),
                                     default=0) >= 2000 else (1, "ms")
    for v, hs in by_version.items():
        suffix = (f" ({v}{', challenger' if v in shadows else ''})") if len(by_version) > 1 else ""
        shares[f"coverage{suffix}"] = [(h["bucket"], h["coverage"]) for h in hs]
        shares[f"fallback share{suffix}"] = [(h["bucket"], h["fallback_rate"]) for h in hs]
        shares[f"cache hits{suffix}"] = [(h["bucket"], h["cache_hit_rate"]) for h in hs]
        latency[f"p50{suffix}"] = [(h["bucket"], h["latency_p50_ms"] / scale) for h in timed[v]]
        latency[f"p99{suffix}"] = [(h["bucket"], h["latency_p99_ms"] / scale) for h in timed[v]]
    title = ("Latency from broker receipt" if all(v in received for v in by_version)
             else "Latency from receipt where known, else " + fallback_label.removeprefix("latency ")
             if received else fallback_label.capitalize())
    parts.append("<div class='grid'><div class='card'>" + figure(figures.lines_over_time(
        f"Coverage, fallback share, cache hits ({period.bucket_s // 60}-minute buckets)", shares, "share",
        percent=True), "health") + "</div><div class='card'>" + figure(figures.lines_over_time(
            f"{title} ({unit})", latency, unit), "latency") + "</div></div>")
    return "".join(parts)


def score_section(client, model: str, period: Period, database: str = DEFAULT_DATABASE) -> str:
    """Per version: how often the producer's score was not the model's own (the window's rate and
    whether it passes the drift monitor's alert threshold)."""
    found = score_consistency.score_consistency(client, model, period.start_ms, period.end_ms, database)
    intro = ("<h2>Score consistency</h2><p class='meta'>The producer's score against the registered model's own "
             "score of the same features, checked for every explained decision (WHYSTREAM_SCORE_TOLERANCE). A "
             "high rate: the producer scores with another version, or sends features transformed after scoring; "
             "the explanations then explain a score it did not use. Alert above "
             f"{score_consistency.MAX_RATE:.0%} (estimated over all decisions), as the drift monitor raises it.</p>")
    if not found:
        return intro + "<p class='empty'>no checked explanations in this period</p>"
    body = []
    for r in found:
        flag = score_consistency.judge(r)
        state = ("<span class='alert'>ALERT</span>" if flag is not None and flag.above
                 else "too few checked" if flag is None else "<span class='ok'>ok</span>")
        body.append([esc(r["model_version"]), pct(r["rate"]), fmt(r["mismatched"]), fmt(r["checked"]),
                     fmt(r["max_difference"], 4), state])
    return intro + table(["version", "mismatch rate (estimated)", "mismatched", "checked", "largest difference",
                          "alert"], body, "score-consistency")


def alerts_section(client, model: str, period: Period, database: str = DEFAULT_DATABASE) -> str:
    alerts = drift_sql.recent_alerts(client, model, period.history_start_ms, 50, database)
    body = [[esc(when(a["raised_at_ms"])), esc(a["model_version"]), esc(a["feature"]), esc(a["statistic"]),
             fmt(float(a["value"])), fmt(float(a["threshold"])), fmt(float(a["weighted_n"]), 0)] for a in alerts]
    return "<h2>Drift alerts</h2>" + (table(["raised", "version", "feature", "statistic", "value", "threshold",
                                             "weighted n"], body) if body
                                      else "<p class='empty'>none in this period</p>")


def reasons_section(client, model: str, period: Period, database: str = DEFAULT_DATABASE) -> str:
    reasons = queries.reason_frequencies(client, model, period.history_start_ms, period.history_end_ms,
                                         database=database)
    if not reasons:
        return "<h2>Principal reasons</h2><p class='empty'>no adverse decisions with principal reasons</p>"
    return "<h2>Principal reasons</h2>" + figure(figures.reason_bars(reasons), "reasons")


def adverse_section(client, model: str, period: Period, href: Callable[[str], str | None],
                    database: str = DEFAULT_DATABASE, limit: int = 50) -> str:
    found = queries.adverse_decisions(client, model, period.history_start_ms, period.history_end_ms, limit,
                                      database)
    if not found:
        return "<h2>Adverse decisions</h2><p class='empty'>none in this period</p>"
    body = []
    for d in found:
        target = href(d["prediction_id"])
        pid = f"<a href='{esc(target)}'>{esc(d['prediction_id'])}</a>" if target else esc(d["prediction_id"])
        reason = f"{esc(d['first_code'])}: {esc(d['first_text'])}" if d["first_code"] else "-"
        body.append([pid, esc(when(d["event_time_ms"])), esc(d["model_version"]), fmt(float(d["score"]), 4),
                     fmt(float(d["threshold"]), 4), esc(d["decision"]), esc(d["source"]), reason])
    return (f"<h2>Adverse decisions (latest {len(found)})</h2>"
            "<p class='meta'>source LIVE or CACHE: exact TreeSHAP; FALLBACK: the approximation above.</p>"
            + table(["prediction_id", "event time", "version", "score", "threshold", "decision", "source",
                     "first principal reason"], body, "adverse"))


def overview(client, model: str, period: Period, href: Callable[[str], str | None],
             database: str = DEFAULT_DATABASE, listed: int = 50) -> str:
    """The overview's HTML (without the page around it)."""
    return (f"<h1>{esc(model)}: overview</h1><p class='meta'>\"now\" = {when(period.start_ms)} to "
            f"{when(period.end_ms)} ({period.window_minutes} minutes); over time: from "
            f"{when(period.history_start_ms)} in {period.bucket_s // 60}-minute buckets. Counts of decisions are "
            "inclusion-weighted estimates unless marked n.</p>"
            + (f"<p class='note'>{esc(period.note)}</p>" if period.note else "")
            + health_section(client, model, period, database) + score_section(client, model, period, database)
            + alerts_section(client, model, period, database)
            + reasons_section(client, model, period, database)
            + adverse_section(client, model, period, href, database, listed))
