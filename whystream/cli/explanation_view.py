"""One explanation for a person (`whystream explain ID`): what was decided against what,
why, and how the explanation was made, instead of 150 lines of JSON in log-odds.

The figures are the ExplanationEvent's (schemas/ExplanationEvent.avsc), nothing is
recomputed. The score and threshold are the producer's; the raw score is the model's
output in `output_space`, shown also as what it means where a link is known: a
probability for `raw_margin` (binary, cross-entropy, one-vs-all classes: sigmoid of
the log-odds), exp(r) for `log_link`, log(1 + exp(r)) for `softplus_link` (the links
of whystream/models/objectives.py). Attributions are sorted by |SHAP|, largest first;
they add up from the base value to the raw score for LIVE and CACHE explanations.
Beside the principal reasons, the adverse reasons (ExplanationEvent v4): the strongest
features toward the adverse outcome, for approvals too ("what almost made us decline
this?"); beside the producer's score, the model's own (`model_score`) and the score
check's verdict (`score_mismatch`); where the features came from (`features_source`); and
the latency from broker receipt (`received_at`) where the event carries it.
Times are UTC, not epoch milliseconds.

`--format csv` (`rows`): one row per feature, largest |SHAP| first (`rank`), with the
feature's value (empty when missing or redacted; `redacted` says which), its SHAP, the
direction it pushed the raw score and, where the feature is a principal reason, its code,
text and place among the reasons (`reason_rank`), and its place among the adverse reasons
(`adverse_rank`). The explanation's own facts (id, model and version, decision, score,
threshold, raw score and base value in `output_space`, source, sampling reason, weight,
times in ISO 8601 UTC) lead every row, the same on each: a file a spreadsheet or
`pandas.read_csv` reads as it is, and rows of several explanations concatenate.
"""

from __future__ import annotations

import datetime as dt
import math

from rich.table import Table

from whystream.cli.output import print_line, print_table, readable_time, utc_ms

SOURCES = {
    "LIVE": "exact TreeSHAP, computed for this decision",
    "CACHE": "exact TreeSHAP of an identical feature vector, from the shared cache",
    "FALLBACK": "approximation (Saabas path attribution), used when exact TreeSHAP failed or the batch's "
                "latency budget was spent; not additive like TreeSHAP",
}
FEATURES_SOURCES = {None: "the decision as the worker consumed it from the stream",
                    "explanations": "a stored explanation's features", "predictions": "the predictions topic",
                    "store": "the decision store (ClickHouse `decisions`)"}
# output_space -> (what the link gives, the link, its inverse: a producer's score into the output space)
_MEANING = {"raw_margin": ("probability", lambda r: 1 / (1 + math.exp(-r)), lambda p: math.log(p / (1 - p))),
            "log_link": ("prediction exp(r)", math.exp, math.log),
            "softplus_link": ("prediction log(1 + exp(r))", lambda r: math.log1p(math.exp(r)),
                              lambda y: math.log(math.expm1(y)))}


def meaning(output_space: str, raw: float) -> str:
    """' = probability 0.912' where `output_space` has a known link; else ''."""
    link = _MEANING.get(output_space)
    if link is None or raw is None or not math.isfinite(raw):
        return ""
    try:
        return f" = {link[0]} {link[1](raw):.4g}"
    except OverflowError:
        return ""


def in_output_space(output_space: str, score: float) -> float | None:
    """The producer's score (or threshold) in the model's output space, where the link is known."""
    link = _MEANING.get(output_space)
    if output_space in ("identity", "raw_score", "probability"):
        return score
    try:
        return None if link is None else link[2](score)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def show(e: dict) -> None:
    """Print explanation `e` (a decoded ExplanationEvent) for a person."""
    space = e["output_space"]
    line = print_line
    line(f"decision {e['prediction_id']}: {e['decision']} (score {e['score']:.4g} vs threshold "
         f"{e['threshold']:.4g}, as the producer reported)")
    line(f"  model        {e['model_name']} version {e['model_version']}"
         + (f", {e['role'].lower()}" if e.get("role") else "")
         + (f", class {e['explained_class']}" if e.get("explained_class") is not None else ""))
    line(f"  model score  {score_check(e)}")
    line(f"  raw score    {e['raw_score']:.6g} in {space}{meaning(space, e['raw_score'])}")
    threshold = in_output_space(space, e["threshold"])
    if threshold is not None and math.isfinite(e["threshold"]):
        side = "above" if e["raw_score"] > threshold else "below" if e["raw_score"] < threshold else "at"
        line(f"  threshold    {threshold:.6g} in {space} (the producer's {e['threshold']:.4g}): the raw score "
             f"is {side} it")
    line(f"  base value   {e['base_value']:.6g}{meaning(space, e['base_value'])} (the model's average output)")
    line(f"  explained by {e['explainer']} {e['explainer_version']}: {e['source']}, "
         f"{SOURCES.get(e['source'], '')}")
    line(f"  sampled      {e['sampling_reason']} (inclusion weight {e['inclusion_weight']:g}), stratum "
         f"{e['stratum'] or '-'}")
    line(f"  event time   {readable_time(e['event_time'])}; explained {readable_time(e['explained_at'])} "
         f"by {e['worker']} ({e['latency_ms']:,.0f} ms after the event time)")
    if e.get("received_at") is not None:
        line(f"  received     by the broker {readable_time(e['received_at'])}; explained "
             f"{_ms(e['explained_at']) - _ms(e['received_at']):,} ms after broker receipt")
    source = e.get("features_source") or None
    line(f"  features     from {FEATURES_SOURCES.get(source, source)}")
    if e.get("redacted_features"):
        line(f"  redacted     {', '.join(e['redacted_features'])} (values left out by policy)")
    if e.get("principal_reasons"):
        table = Table(title="principal reasons (adverse-action notice)" + (
            f", reason codes {e['reason_codes_version']}" if e.get("reason_codes_version") else ""))
        for name in ("code", "reason", "feature", "value", "SHAP"):
            table.add_column(name, justify="right" if name in ("value", "SHAP") else "left")
        for r in e["principal_reasons"]:
            table.add_row(r["code"], r["text"], r["feature"], _value(r, e), f"{r['shap']:+.4f}")
        print_table(table)
    if e.get("adverse_reasons"):
        line("adverse reasons: the strongest features toward the adverse outcome, whatever was decided (for an "
             "approval: what almost declined it)")  # a line, not a title: a title folds to the narrow table's width
        table = Table()
        for name in ("feature", "value", "SHAP"):
            table.add_column(name, justify="left" if name == "feature" else "right")
        for r in e["adverse_reasons"]:
            table.add_row(r["feature"], _value(r, e), f"{r['shap']:+.4f}")
        print_table(table)
    else:
        line("adverse reasons: none (no feature pushed toward the adverse outcome, or an explanation written "
             "before they were recorded)")
    total = e["base_value"] + sum(a["shap"] for a in e["attributions"])
    line(f"attributions in {space}, largest |SHAP| first: base value {e['base_value']:.4f} + their sum "
         f"{total - e['base_value']:+.4f} = {total:.4f} (raw score {e['raw_score']:.4f})")
    table = Table()
    for name in ("feature", "value", "SHAP", "toward"):
        table.add_column(name, justify="right" if name in ("value", "SHAP") else "left")
    for a in sorted(e["attributions"], key=lambda a: -abs(a["shap"])):
        table.add_row(a["feature"], _value(a, e), f"{a['shap']:+.4f}",
                      "higher score" if a["shap"] > 0 else "lower score" if a["shap"] < 0 else "-")
    print_table(table)


HEADER_COLUMNS = ["prediction_id", "model_name", "model_version", "decision", "score", "threshold", "output_space",
                  "raw_score", "base_value", "source", "sampling_reason", "inclusion_weight", "event_time",
                  "explained_at"]
FEATURE_COLUMNS = ["rank", "feature", "value", "redacted", "shap", "direction", "reason_code", "reason_text",
                   "reason_rank", "adverse_rank"]
CSV_COLUMNS = HEADER_COLUMNS + FEATURE_COLUMNS


def rows(e: dict) -> list[dict]:
    """Explanation `e` as one row per feature (the columns CSV_COLUMNS), largest |SHAP| first."""
    header = {c: e.get(c) for c in HEADER_COLUMNS}
    header["event_time"], header["explained_at"] = utc_ms(e["event_time"]), utc_ms(e["explained_at"])
    reasons = {}
    for i, r in enumerate(e.get("principal_reasons") or [], start=1):
        reasons.setdefault(r["feature"], (i, r["code"], r["text"]))
    adverse = {}
    for i, r in enumerate(e.get("adverse_reasons") or [], start=1):
        adverse.setdefault(r["feature"], i)
    redacted = set(e.get("redacted_features") or ())
    out = []
    for rank, a in enumerate(sorted(e["attributions"], key=lambda a: -abs(a["shap"])), start=1):
        reason_rank, code, text = reasons.get(a["feature"], (None, None, None))
        out.append({**header, "rank": rank, "feature": a["feature"],
                    "value": None if a["feature"] in redacted else a["value"], "redacted": a["feature"] in redacted,
                    "shap": a["shap"],
                    "direction": "higher score" if a["shap"] > 0 else "lower score" if a["shap"] < 0 else "none",
                    "reason_code": code, "reason_text": text, "reason_rank": reason_rank,
                    "adverse_rank": adverse.get(a["feature"])})
    return out


def score_check(e: dict) -> str:
    """The model's own score of the features against the producer's, and the score check's verdict."""
    own = e.get("model_score")
    if own is None or not math.isfinite(own):
        return "not checked (the model's own score was not recomputed for this explanation)"
    verdict = ("MISMATCH: the producer's score is not the model's own (another version, or features changed "
               "after scoring); the attributions explain the model's" if e.get("score_mismatch")
               else "matches the producer's")
    return f"{own:.4g}, the registered version's own score of these features (producer {e['score']:.4g}): {verdict}"


def _ms(t) -> int:
    """Epoch milliseconds of a decoded timestamp-millis (a datetime) or of epoch ms."""
    return int(t.timestamp() * 1000) if isinstance(t, dt.datetime) else int(t)


def _value(row: dict, e: dict) -> str:
    if row["feature"] in (e.get("redacted_features") or ()):
        return "redacted"
    return "missing" if row["value"] is None else f"{row['value']:.6g}"
