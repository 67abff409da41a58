"""The drift view of one model version: per feature, the reference's attribution histogram
beside now's on the same bins (labelled with their ranges), PSI, KS and stability over time
with the alerts raised, mean |SHAP| over time against the reference, by stratum, and input
(value) drift beside attribution drift.

The statistics are the ClickHouse views' (jobs/analytics/drift_sql.py, input_drift.py);
PSI over time is the `feature_drift` view run once per time bucket (at most
period.MAX_DRIFT_POINTS), so each point is exactly what `whystream drift` says for that window.
"""

from __future__ import annotations

from typing import Callable

from whystream.jobs.analytics import drift_source, drift_sql, input_drift
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE
from whystream.jobs.console import figures, queries
from whystream.jobs.console.html import esc, figure, fmt, pct, table
from whystream.jobs.console.period import Period

TOP = 6  # features with a histogram
OVER_TIME = 4  # features with statistics over time
PSI_SHOWN = 0.1  # features drifting at least this much come first, whatever their importance
STATISTICS = ("psi", "ks", "stability")
MAX_STRATA = 8


def pick_version(drift_rows: list[dict], shadows: set[str] = frozenset()) -> str | None:
    """The version with the most (weighted) explanations in the window, a champion before a
    challenger's shadow (which explains the same decisions, so weighs as much).

    >>> rows = [{"model_version": v, "weighted_n": n} for v, n in (("c", 10.0), ("s", 10.0), ("old", 3.0))]
    >>> pick_version(rows, {"s"}), pick_version(rows, {"c"}), pick_version([])
    ('c', 's', None)
    """
    weight: dict[str, float] = {}
    for r in drift_rows:
        weight[r["model_version"]] = max(weight.get(r["model_version"], 0.0), float(r["weighted_n"]))
    return max(sorted(weight), key=lambda v: (v not in shadows, weight[v])) if weight else None


def ranked_features(drift_rows: list[dict], top: int = TOP) -> list[str]:
    """Drifting features (PSI above PSI_SHOWN) first, then the most important ones."""
    drifting = [r["feature"] for r in sorted(drift_rows, key=lambda r: -(r["psi"] or 0)) if (r["psi"] or 0) > PSI_SHOWN]
    important = [r["feature"] for r in sorted(drift_rows, key=lambda r: -r["mean_abs_shap"])]
    return list(dict.fromkeys(drifting + important))[:top]


def _choices(label: str, options: list[str], chosen: str | None, href: Callable[..., str] | None, key: str,
             names: dict[str, str] | None = None) -> str:
    if not options:
        return ""
    shown = []
    for o in options:
        text = esc((names or {}).get(o, o) or "all")
        if o == chosen:
            shown.append(f"<b>{text}</b>")
        else:
            shown.append(f"<a href='{esc(href(**{key: o}))}'>{text}</a>" if href else text)
    return f"<p class='meta no-print'>{esc(label)}: " + " · ".join(shown) + "</p>"


def statistics_over_time(client, model: str, version: str, features: list[str], period: Period,
                         stratum: str | None, database: str) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{feature: {statistic: [(bucket end, value)]}} from one feature_drift query per bucket."""
    panels = {f: {s: [] for s in STATISTICS} for f in features}
    for start, end in period.drift_buckets():
        for r in drift_sql.feature_drift(client, model, start, end, database, stratum):
            if r["model_version"] == version and r["feature"] in panels:
                for s in STATISTICS:
                    if r[s] is not None:
                        panels[r["feature"]][s].append((end / 1000, float(r[s])))
    return panels


def drift_view(client, model: str, period: Period, database: str = DEFAULT_DATABASE, version: str | None = None,
               stratum: str | None = None, href: Callable[..., str] | None = None) -> str:
    """The drift view's HTML; `href(version=…)` / `href(stratum=…)` link to other slices (None: no links)."""
    rows = drift_sql.feature_drift(client, model, period.start_ms, period.end_ms, database, stratum)
    versions = sorted({r["model_version"] for r in rows})
    shadows = queries.challenger_versions(client, model, period.start_ms, period.end_ms, database)
    version = version or pick_version(rows, shadows)
    head = (f"<h1>{esc(model)}: drift</h1><p class='meta'>\"now\" = the {period.window_minutes} minutes to "
            f"{esc(figures.utc(period.end_ms / 1000))} UTC, against the version's reference; exact (TreeSHAP) "
            "attributions only" + (f"; stratum <b>{esc(stratum)}</b>" if stratum else "; all strata") + "</p>"
            + (f"<p class='note'>{esc(period.note)}</p>" if period.note else ""))
    strata = drift_sql.strata(client, model, period.start_ms, period.end_ms, database)[:MAX_STRATA]
    head += _choices("version", versions, version, href, "version",
                     {v: f"{v} (challenger's shadow)" for v in shadows})
    head += _choices("stratum", [""] + strata, stratum or "", href, "stratum") if href else ""
    drift = [r for r in rows if r["model_version"] == version]
    if not drift:
        return head + "<p class='empty'>No exact explanations of this model (version, stratum) with a registered " \
                      "reference in this period.</p>"
    features = ranked_features(drift)
    by_feature = {r["feature"]: r for r in drift}
    alerts = [a for a in drift_sql.recent_alerts(client, model, period.history_start_ms, 500, database)
              if a["model_version"] == version]
    alerted_now = {}
    for a in alerts:
        if a["window_end_ms"] > period.start_ms:
            alerted_now.setdefault(a["feature"], set()).add(a["statistic"])
    inputs = [r for r in drift_source.input_rows(client, model, period.start_ms, period.end_ms, database)
              if r["model_version"] == version]
    merged = input_drift.beside(drift, inputs)
    body = [[esc(r["feature"]), fmt(r["psi"]), fmt(r["ks"]), fmt(r["stability"]), fmt(r["wasserstein_rel"]),
             fmt(r["value_psi"]), input_drift.missing_cell(r), fmt(float(r["weighted_n"]), 0),
             fmt(float(r["effective_n"]), 0),
             f"<span class='alert'>{esc(', '.join(sorted(alerted_now[r['feature']])))}</span>"
             if r["feature"] in alerted_now else "-"]  # the monitor judges all strata together
            for r in sorted(merged, key=lambda r: -(r["psi"] or 0))]
    parts = [head, f"<h2>Per feature, version {esc(version)}</h2><p class='meta'>"
             f"{pct(float(drift[0]['fallback_share'] or 0))} of this version's explanations in the window came from "
             "the fallback (an approximation) and are not in these statistics. PSI: population stability index of "
             "the attribution histogram (0.1 moderate, 0.25 large); KS: weighted Kolmogorov-Smirnov on the reference "
             "bins; stability: relative change of mean |SHAP|; W1/ref: Wasserstein-1 over the reference's spread.</p>",
             table(["feature", "PSI", "KS", "stability", "W1/ref", "value PSI", "missing (ref)", "weighted n",
                    "n eff", "alerts now"], body, "drift")
             + ("<p class='meta'>Value PSI, missing rates and alerts are of all strata: input drift and the drift "
                "monitor do not slice by stratum.</p>" if stratum else "")]

    hists = drift_sql.window_histograms(client, model, version, features, period.start_ms, period.end_ms, database,
                                        stratum)
    cards = []
    for f in features:
        if f in hists:
            r = by_feature[f]
            sub = f"PSI {fmt(r['psi'])} · KS {fmt(r['ks'])} · weighted n {fmt(float(hists[f]['weight']), 0)}"
            if not float(r["reference_mean_abs_shap"]) and not float(r["mean_abs_shap"]):
                sub += " · every attribution 0: the model does not use this feature"
            cards.append("<div class='card'>" + figure(figures.histogram(f, hists[f], sub), f"hist-{f}") + "</div>")
    parts.append("<h2>Attribution histograms: reference (grey) vs now (blue)</h2><p class='meta'>Share of decisions "
                 "per SHAP bin; the bins are the reference's deciles, labelled with their ranges.</p>"
                 f"<div class='grid'>{''.join(cards)}</div>")

    shown = features[:OVER_TIME]
    marks = {f: [(a["window_end_ms"] / 1000, float(a["value"]), a["statistic"]) for a in alerts
                 if a["feature"] == f and a["statistic"] in STATISTICS] for f in shown}
    panels = statistics_over_time(client, model, version, shown, period, stratum, database)
    parts.append(f"<h2>PSI, KS and stability over time</h2><p class='meta'>Each point: the statistic of the "
                 f"{period.drift_bucket_s // 60}-minute window ending there; red crosses: alerts raised by the "
                 "drift monitor (at the end of the window they judged).</p>"
                 + figure(figures.per_feature_over_time("Drift statistics over time", panels, "value", alerts=marks),
                          "drift-over-time"))
    trend = drift_sql.feature_trend(client, model, shown, period.history_start_ms, period.history_end_ms,
                                    period.bucket_s, database, version, stratum)
    means = {f: {"mean |SHAP|": [(float(r["bucket"]), float(r["mean_abs_shap"])) for r in trend if r["feature"] == f]}
             for f in shown}
    reference = {f: float(by_feature[f]["reference_mean_abs_shap"]) for f in shown}
    parts.append("<h2>Mean |SHAP| over time</h2><p class='meta'>One panel per feature, each on its own scale; dashed: "
                 f"the reference's mean |SHAP|. Version {esc(version)}.</p>"
                 + figure(figures.per_feature_over_time("Weighted mean |SHAP|", means, "mean |SHAP|", reference),
                          "mean-abs-shap"))
    parts.append(strata_section(client, model, version, strata, period, database, href))
    parts.append(input_section(client, model, version, merged, inputs, period, database))
    return "".join(parts)


def strata_section(client, model: str, version: str, strata: list[str], period: Period, database: str,
                   href: Callable[..., str] | None) -> str:
    body = []
    for s in strata:
        found = [r for r in drift_sql.feature_drift(client, model, period.start_ms, period.end_ms, database, s)
                 if r["model_version"] == version]
        if found:
            worst = max(found, key=lambda r: r["psi"] or 0)
            name = f"<a href='{esc(href(stratum=s))}'>{esc(s or '(none)')}</a>" if href else esc(s or "(none)")
            body.append([name, esc(worst["feature"]), fmt(worst["psi"]), fmt(worst["ks"]),
                         fmt(float(worst["weighted_n"]), 0)])
    if not body:
        return ""
    return ("<h2>By stratum</h2><p class='meta'>The feature with the largest PSI in each sampling stratum.</p>"
            + table(["stratum", "feature", "PSI", "KS", "weighted n"], body, "strata"))


def input_section(client, model: str, version: str, merged: list[dict], inputs: list[dict], period: Period,
                  database: str) -> str:
    """`inputs`: the version's input drift rows, each with its `source` (jobs/analytics/drift_source.py)."""
    counted = "" if not inputs else (
        "; the figures count every decision in the window, from the decision store" if inputs[0]["source"] ==
        drift_source.ALL else "; the figures are inclusion-weighted estimates from the sample of explanations (the "
        "decision store does not cover this period)")
    intro = ("<h2>Input drift beside attribution drift</h2><p class='meta'>Did the data move (value PSI, missing "
             "values) or did the reasons move (attribution PSI)? Inputs are binned on the reference rows' value "
             f"deciles{counted}.</p>"
             + (f"<p class='meta'>{esc(drift_source.input_source_line(inputs))}.</p>" if inputs else ""))
    why = input_drift.unavailable(client, model, [version], database).get(version)
    if why:
        return intro + f"<p class='empty'>Input drift unavailable for version {esc(version)}: {esc(why)}.</p>"
    ordered = sorted(merged, key=lambda r: -max(r["psi"] or 0, r["value_psi"] or 0))
    parts = [intro + figure(figures.drift_beside(ordered), "input-drift")]
    decisions = [d for d in drift_source.decision_rows(client, model, period.start_ms, period.end_ms, database)
                 if d["model_version"] == version]
    body = [[fmt(d["score_psi"]), fmt(float(d["mean_score"]), 4),
             fmt(d["reference_mean_score"], 4), pct(d["decline_rate"]),
             pct(d["reference_decline"]), pct(d["adverse_rate"]),
             fmt(float(d["weighted_n"]), 0), esc(d["counted_over"])] for d in decisions]
    if body:
        parts.append("<h3>Scores and decisions</h3><p class='meta'>decline rate: share of decisions on the adverse "
                     "side of the threshold; adverse decisions: by the producer's labels.</p>"
                     + table(["score PSI", "mean score", "reference mean score", "decline rate",
                              "reference decline rate", "adverse decisions", "weighted n", "counted over"], body))
    return "".join(parts)
