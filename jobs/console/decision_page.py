"""The page of one decision, for an auditor or an adverse-action file: the score against the
threshold (in the model's output space, and as a probability where the objective gives one),
a waterfall from the base value through each attribution to the score, the principal reasons
with their codes beside the adverse reasons (the strongest features toward the adverse
outcome, for approvals too: "what almost made us decline this?"), the producer's score beside
the model's own (the score check's mismatch flag), what explained it (model, explainer,
reason-code table versions, where the features came from), why it was explained (sampling
reason, inclusion weight), how exact it is (source), whether it recomputes (`whystream
verify`, jobs/analytics/verify.py) and who asked for it (the audit trail, `explain_answers`).
A decision in the decision store without an explanation gets a page of its stored features,
score and decision (`stored_section`). Printed, the navigation and buttons drop out and the
page reads as one decision's file.
"""

from __future__ import annotations

import math

from whystream.jobs.analytics.verify import MATCH, Verdict
from whystream.jobs.console import figures
from whystream.jobs.console.html import duration, esc, figure, fmt, table, when
from whystream.jobs.console.scores import probability, raw_threshold

WATERFALL_FEATURES = 12  # the rest are summed into one bar
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


def _value(value, feature: str, redacted: list[str]) -> str:
    if feature in redacted:
        return "redacted"
    return "missing" if value is None else f"{float(value):.6g}"


def contributions(row: dict) -> list[tuple[str, float]]:
    """(label, SHAP) of the largest attributions, the rest summed into one."""
    items = sorted(zip(row["features"], row["feature_values"], row["shap"]), key=lambda a: -abs(float(a[2])))
    shown = [(f"{f} = {_value(v, f, row['redacted_features'])}", float(s)) for f, v, s in items[:WATERFALL_FEATURES]]
    rest = items[WATERFALL_FEATURES:]
    if rest:
        shown.append((f"{len(rest)} other features", sum(float(s) for _, _, s in rest)))
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


def stored_section(stored: dict) -> str:
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
            "stored decision. The decision store holds it, but no explanation of it is stored. Explain it with "
            f"<code>whystream explain {esc(stored['prediction_id'])}</code> (a running stack), which reads it from "
            "the store with the version it was scored by.</p>" + table(None, summary, "summary")
            + "<h2>Stored features</h2>" + table(["feature", "value"], features, "features") + "</section>")


def verdict_html(verdict: Verdict | None, action: str | None) -> str:
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
                     anchor: str = "") -> str:
    """One stored explanation as the decision page's body."""
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
             f"<h1>Decision {esc(row['prediction_id'])}</h1>",
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
        ["inclusion weight", f"{fmt(weight, 3)} (this explanation stands for {fmt(weight, 1)} decisions in the "
                             "estimates)" if math.isfinite(weight) else "-"],
        ["stratum", esc(row["stratum"] or "-")],
        ["event time", esc(when(row["event_time_ms"]))],
        ["explained at", f"{esc(when(row['explained_at_ms']))} ({latency_text(row)})"],
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
    parts.append(verdict_html(verdict, verify_action))
    parts.append("</section>")
    return "".join(parts)
