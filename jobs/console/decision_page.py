"""The page of one decision, for an auditor or an adverse-action file: the score against the
threshold (in the model's output space, and as a probability where the objective gives one),
a waterfall from the base value through each attribution to the score, the principal reasons
with their codes beside the adverse reasons (the strongest features toward the adverse
outcome, for approvals too: "what almost made us decline this?"), the producer's score beside
the model's own (the score check's mismatch flag), what explained it (model, explainer,
reason-code table versions, where the features came from), why it was explained (sampling
reason, inclusion weight), how exact it is (source), whether it recomputes (`whystream
verify`, jobs/analytics/verify.py) and who asked for it (the audit trail, `explain_answers`).
A decision in the decision store without an explanation (an approval the sampler left out)
gets a page of its stored features, score and decision (`stored_section`) with an "Explain
now" button where the console was given an explainer (the CLI composes `whystream explain`'s
on-demand path: the decision read from the store, explained by the registered version it was
scored by); its answer (`event_row`: an ExplanationEvent in the shape of the stored rows) is
shown as the page of a stored explanation, said to be computed now and not stored. Printed,
the navigation and buttons drop out and the page reads as one decision's file.
"""

from __future__ import annotations

import math

from whystream.jobs.analytics.verify import MATCH, Verdict
from whystream.jobs.console import figures
from whystream.jobs.console.html import duration, esc, figure, fmt, table, when
from whystream.jobs.console.scores import probability, raw_threshold

WATERFALL_FEATURES = 12  # the rest are summed into one bar
FEATURE_CHARS = 22  # a longer feature name is cut on the waterfall's axis (whole on hover)
SOURCES = {"LIVE": "exact TreeSHAP, computed for this decision",
           "CACHE": "exact TreeSHAP, from the shared cache (the same model version and feature values)",
           "FALLBACK": "approximate (Saabas path attribution): live TreeSHAP failed or the latency budget was spent"}
REASONS = {"ADVERSE": "an adverse decision: always explained", "NEAR_THRESHOLD": "a score near the threshold: always "
           "explained", "FLAGGED": "flagged by the producer: always explained", "NEW_VERSION": "among a new model "
           "version's first decisions: always explained", "RESERVOIR": "drawn at random from its stratum and window",
           "ON_DEMAND": "explained on request"}
FEATURES_SOURCES = {"": "the explanations stream (the decision as the worker consumed it)",
                    "explanations": "a stored explanation's features", "predictions": "the predictions topic",
                    "store": "the decision store (ClickHouse `decisions`)"}


def _value(value, feature: str, redacted: list[str], digits: int = 6) -> str:
    if feature in redacted:
        return "redacted"
    return "missing" if value is None else f"{float(value):.{digits}g}"


def contributions(row: dict) -> list[tuple[str, str, float]]:
    """(axis label, full label, SHAP) of the largest attributions, the rest summed into one.
    The axis label is `feature = value`, the value to 4 significant digits and a long name cut
    (numbered where two cut names would meet: the axis is categorical); the full label, the
    value to 6 digits, is the hover's."""
    items = sorted(zip(row["features"], row["feature_values"], row["shap"]), key=lambda a: -abs(float(a[2])))
    redacted = row["redacted_features"]
    shown, seen = [], set()
    for i, (f, v, s) in enumerate(items[:WATERFALL_FEATURES], start=1):
        label = f"{figures.short_label(f, FEATURE_CHARS)} = {_value(v, f, redacted, 4)}"
        label = label if label not in seen else f"{label} (#{i})"
        seen.add(label)
        shown.append((label, f"{f} = {_value(v, f, redacted)}", float(s)))
    rest = items[WATERFALL_FEATURES:]
    if rest:
        label = f"{len(rest)} other features"
        shown.append((label, label, sum(float(s) for _, _, s in rest)))
    return shown


def latency_text(row: dict) -> str:
    """The latency from broker receipt where the explanation carries `received_at`, else from event time."""
    if row.get("received_at_ms") is not None:
        return (f"latency {duration(float(row['explained_at_ms'] - row['received_at_ms']))} from broker receipt at "
                f"{when(row['received_at_ms'])}")
    return f"latency {duration(float(row['latency_ms']))} from the event time (no broker receipt time stored)"


def adverse_reasons_html(row: dict) -> str:
    """The strongest features toward the adverse outcome, whatever was decided."""
    found = list(zip(row.get("adverse_features") or [], row.get("adverse_values") or [], row.get("adverse_shap") or []))
    head = ("<h2>Adverse reasons</h2><p class='meta'>The features that pushed hardest toward the adverse outcome, "
            "whatever was decided: for an approval, what almost made us decline it.</p>")
    if not found:
        return head + "<p class='empty'>none: no feature pushed toward the adverse outcome (or an explanation " \
                      "written before ExplanationEvent v4)</p>"
    body = [[str(i), esc(f), esc(_value(v, f, row["redacted_features"])), fmt(float(s), 4)]
            for i, (f, v, s) in enumerate(found, start=1)]
    return head + table(["#", "feature", "value", "SHAP"], body, "adverse-reasons")


def answers_html(answers: list[dict]) -> str:
    """The audit trail: every answer given to an explain request about this decision."""
    head = ("<h2>Answers given (audit trail)</h2><p class='meta'>Every answer to an explain request about this "
            "decision, as stored by the sink in <code>explain_answers</code>: who asked, when it was answered, by "
            "which model version, from which features.</p>")
    if not answers:
        return head + "<p class='empty'>no explain request has asked about this decision</p>"
    body = [[esc(a["requested_by"] or "-"), esc(when(a["explained_at_ms"])), esc(a["request_id"]),
             esc(a["model_version"]), esc(a["source"]), esc(a["features_source"] or "-"), esc(a["decision"]),
             esc(a["first_code"] or "-")] for a in answers]
    return head + table(["requested by", "answered at", "request id", "version", "source", "features from",
                         "decision", "first reason"], body, "answers")


def _ms(t) -> int | None:
    """Epoch milliseconds of an event's timestamp-millis (epoch ms, or a datetime as fastavro decodes it)."""
    return None if t is None else int(t.timestamp() * 1000) if hasattr(t, "timestamp") else int(t)


def event_row(e: dict) -> dict:
    """An ExplanationEvent (as `whystream explain --format json` prints it) in the shape of
    queries.decision's rows, so one decision_section draws both."""
    def column(key: str, field: str) -> list:
        return [r[field] for r in e.get(key) or []]

    return {**{k: e.get(k) for k in (
                "prediction_id", "model_name", "model_version", "explainer", "explainer_version", "output_space",
                "base_value", "raw_score", "reason_codes_version", "score", "decision", "threshold",
                "sampling_reason", "inclusion_weight", "stratum", "source", "latency_ms", "worker",
                "explained_class", "role", "champion_prediction_id", "model_score", "score_mismatch",
                "features_source")},
            "event_time_ms": _ms(e["event_time"]), "explained_at_ms": _ms(e["explained_at"]),
            "received_at_ms": _ms(e.get("received_at")), "redacted_features": list(e.get("redacted_features") or []),
            "features": column("attributions", "feature"), "feature_values": column("attributions", "value"),
            "shap": column("attributions", "shap"), "reason_codes": column("principal_reasons", "code"),
            "reason_texts": column("principal_reasons", "text"),
            "reason_features": column("principal_reasons", "feature"),
            "reason_values": column("principal_reasons", "value"), "reason_shap": column("principal_reasons", "shap"),
            "adverse_features": column("adverse_reasons", "feature"),
            "adverse_values": column("adverse_reasons", "value"), "adverse_shap": column("adverse_reasons", "shap")}


def explain_now_html(prediction_id: str, action: str | None, failed: str = "") -> str:
    """The "Explain now" button of a stored decision (or the command that does it, without an explainer)."""
    if action is None:
        return (f"<p class='meta' id='explain-now-off'>Explain it with <code>whystream explain {esc(prediction_id)}"
                "</code> (a running stack), which reads it from the store with the version it was scored by.</p>")
    return ((f"<p class='alert' id='explain-failed'>{esc(failed)}</p>" if failed else "")
            + f"<form class='inline no-print' method='post' action='{esc(action)}'><button type='submit' "
            "id='explain-now'>Explain now</button></form><p class='meta'>Computes its explanation as "
            f"<code>whystream explain {esc(prediction_id)}</code> does: from the stored features, with the registered "
            "model version it was scored by. The answer is shown here and not stored.</p>")


def explained_now_note(row: dict) -> str:
    if row.get("features_source") == "explanations":
        how = "the worker's published explanation, which the sink has not stored yet"
    else:
        how = (f"computed now from {esc(FEATURES_SOURCES.get(row.get('features_source') or '', ''))} with version "
               f"{esc(row['model_version'])}, the one it was scored by")
    return (f"<p class='note' id='explained-now'>Explained on request: no explanation of this decision is stored; "
            f"this is {how}. It is shown here and not stored.</p>")


def stored_section(stored: dict, explain_action: str | None = None, failed: str = "") -> str:
    """A decision the store holds but nothing explained: its stored features, score and decision."""
    features = [[esc(f), "redacted" if f in stored["redacted_features"] else
                 ("missing" if v is None else f"{float(v):.6g}")]
                for f, v in sorted(stored["features"].items())] + [[esc(f), "redacted"]
                                                                   for f in stored["redacted_features"]]
    summary = [["model", f"{esc(stored['model_name'])} version {esc(stored['model_version'])}"],
               ["decision", f"<b>{esc(stored['decision'])}</b>"], ["score", fmt(stored["score"], 4)],
               ["threshold", fmt(stored["threshold"], 4)], ["event time", esc(when(stored["event_time"]))],
               ["received by the broker", esc(when(stored["received_at"])) if stored["received_at"] else "-"],
               ["priority", "yes" if stored["priority"] else "no"],
               ["segment", esc(", ".join(f"{k}={v}" for k, v in sorted(stored["segment"].items())) or "-")]]
    return ("<section class='decision'><p class='print-only meta'>Decision file: printed from whystream</p>"
            f"<h1>Decision {esc(stored['prediction_id'])}</h1><p class='note' id='not-explained'>Not explained; "
            "stored decision. The decision store holds it, but no explanation of it is stored.</p>"
            + explain_now_html(stored["prediction_id"], explain_action, failed) + table(None, summary, "summary")
            + "<h2>Stored features</h2>" + table(["feature", "value"], features, "features") + "</section>")


def verdict_html(verdict: Verdict | None, action: str | None, stored: bool = True) -> str:
    if not stored:
        return ("<h2>Verification</h2><p class='meta'>Computed now and not stored: there is no stored explanation "
                "to recompute. Once the sink stores an explanation of it, <code>whystream verify</code> can.</p>")
    if verdict is None:
        status = "<p>Not recomputed on this page yet.</p>"
    else:
        css = "ok" if verdict.status == MATCH else "alert"
        shown = "" if verdict.max_shap_diff is None else (
            f" Largest attribution difference {verdict.max_shap_diff:.1e}, base value {verdict.base_diff:.1e}, "
            f"raw score {verdict.raw_diff:.1e}, additivity {verdict.additivity:.1e} (from the {esc(verdict.inputs)}).")
        status = (f"<p><span class='{css}' id='verify-status'>{esc(verdict.status)}</span>"
                  f"{': ' + esc(verdict.detail) if verdict.detail else ''}.{shown}</p>")
    button = (f"<form class='inline no-print' method='post' action='{esc(action)}'><button type='submit' "
              "id='verify'>Recompute now</button></form>" if action else
              "<p class='meta'>Recompute: <code>whystream verify PREDICTION_ID</code></p>")
    return ("<h2>Verification</h2><p class='meta'>Recomputes the attributions with the registered model version "
            "and the same explainer, and checks them within 1e-9.</p>" + status + button)


def decision_section(row: dict, verdict: Verdict | None = None, verify_action: str | None = None,
                     anchor: str = "", stored: bool = True) -> str:
    """One explanation as the decision page's body: a stored one, or (`stored` False) one computed now."""
    space, score, threshold = row["output_space"], float(row["score"]), float(row["threshold"])
    raw, base = float(row["raw_score"]), float(row["base_value"])
    raw_t = raw_threshold(threshold, space)
    prob = probability(raw, space, score)
    exact = row["source"] in ("LIVE", "CACHE")
    codes = list(zip(row["reason_codes"], row["reason_texts"], row["reason_features"], row["reason_values"],
                     row["reason_shap"]))
    adverse = bool(codes) or row["sampling_reason"] == "ADVERSE"
    parts = [f"<section class='decision' id='{esc(anchor)}'>" if anchor else "<section class='decision'>",
             f"<p class='print-only meta'>{'Adverse action file' if adverse else 'Decision file'}: "
             f"printed from whystream</p>",
             f"<h1>Decision {esc(row['prediction_id'])}</h1>", "" if stored else explained_now_note(row),
             f"<p class='meta'>{esc(row['model_name'])} version {esc(row['model_version'])} · {esc(when(row['event_time_ms']))}"
             f" · decision <b>{esc(row['decision'])}</b></p>"]
    summary = [["score", fmt(score, 4), "threshold", fmt(threshold, 4)],
               [f"raw score ({esc(space)})", fmt(raw, 4), "threshold in the same space", fmt(raw_t, 4)],
               ["base value", fmt(base, 4), "sum of attributions", fmt(float(sum(row["shap"])), 4)]]
    if row.get("model_score") is not None and math.isfinite(float(row["model_score"])):
        summary.append(["model's own score", fmt(float(row["model_score"]), 4), "score check",
                        "<span class='alert' id='score-mismatch'>MISMATCH: the producer's score is not the model's "
                        "own</span>" if row["score_mismatch"] else "<span class='ok' id='score-mismatch'>matches "
                        "the producer's score</span>"])
    if prob is not None:
        summary.append(["probability", f"{prob:.2%}", "threshold as a probability",
                        f"{threshold:.2%}" if 0 <= threshold <= 1 else "-"])
    parts.append(table(None, summary, "summary"))
    if not exact:
        parts.append(f"<p class='note'>This explanation is approximate: {esc(SOURCES.get(row['source'], ''))}. Base "
                     "value + attributions need not equal the raw score.</p>")
    charts = "<div class='card'>" + figure(figures.waterfall(base, contributions(row), raw, raw_t, space),
                                           f"waterfall{'-' + anchor if anchor else ''}") + "</div>"
    if prob is not None:
        charts += "<div class='card'>" + figure(figures.probability_gauge(prob, threshold if 0 <= threshold <= 1
                                                                          else None),
                                                f"probability{'-' + anchor if anchor else ''}") + "</div>"
    parts.append(f"<div class='grid'>{charts}</div>")
    principal = ""
    if codes:
        body = [[str(i), esc(c), esc(t), esc(f), esc(_value(v, f, row["redacted_features"])), fmt(float(s), 4)]
                for i, (c, t, f, v, s) in enumerate(codes, start=1)]
        principal = ("<h2>Principal reasons</h2><p class='meta'>The features that pushed hardest toward this "
                     "decision, strongest first, with the model's reason codes"
                     + (f" (table version {esc(row['reason_codes_version'])})" if row["reason_codes_version"] else "")
                     + ".</p>" + table(["#", "code", "reason", "feature", "value", "SHAP"], body, "reasons"))
    elif adverse:
        principal = "<h2>Principal reasons</h2><p class='empty'>none stored for this adverse decision</p>"
    # side by side: why it was decided, and what pushed toward the adverse outcome (for an approval: almost)
    parts.append(f"<div class='grid'>{f'<div>{principal}</div>' if principal else ''}"
                 f"<div>{adverse_reasons_html(row)}</div></div>")
    weight = float(row["inclusion_weight"])
    details = [
        ["model", f"{esc(row['model_name'])} {esc(row['model_version'])}"],
        ["explainer", f"{esc(row['explainer'])} {esc(row['explainer_version'])}"],
        ["source", f"{esc(row['source'])}: {esc(SOURCES.get(row['source'], ''))}"],
        ["sampling reason", f"{esc(row['sampling_reason'])}: {esc(REASONS.get(row['sampling_reason'], ''))}"],
        ["inclusion weight", "- (explained on request: not part of any estimate)" if not stored else
         f"{fmt(weight, 3)} (this explanation stands for {fmt(weight, 1)} decisions in the estimates)"
         if math.isfinite(weight) else "-"],
        ["stratum", esc(row["stratum"] or "-")],
        ["event time", esc(when(row["event_time_ms"]))],
        ["explained at", f"{esc(when(row['explained_at_ms']))} ("
                         + ("now, on request" if not stored else latency_text(row)) + ")"],
        ["features from", esc(FEATURES_SOURCES.get(row.get("features_source") or "", row.get("features_source")))],
        ["worker", esc(row["worker"])],
    ]
    if row["explained_class"] is not None:
        details.append(["explained class", esc(row["explained_class"])])
    if row["redacted_features"]:
        details.append(["redacted (values left out by policy)", esc(", ".join(row["redacted_features"]))])
    if row["role"] == "CHALLENGER":
        details.append(["role", f"challenger's shadow explanation of decision {esc(row['champion_prediction_id'])}"])
    parts.append("<h2>How it was explained</h2>" + table(None, details, "details"))
    parts.append(verdict_html(verdict, verify_action, stored))
    parts.append("</section>")
    return "".join(parts)
