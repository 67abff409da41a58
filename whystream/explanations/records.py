"""Building ExplanationEvent records (schemas/ExplanationEvent.avsc).

Top reasons are the features that pushed toward the decision taken, strongest
first: toward the adverse outcome for an adverse decision, away from it
otherwise. Which way is adverse is the model's `adverse_direction` (+1: a
higher raw score, the default, as for risk scores and the class a multiclass
decision was taken on; -1: a lower one). For adverse decisions the first
MAX_PRINCIPAL_REASONS of them are also the *principal reasons*, with the
codes and texts of the model's reason-code table (whystream/models/reason_codes.py).

Every decision, approvals too, also names its *adverse reasons*: the same
selection toward the adverse outcome whatever was decided ("what almost made
us decline this?"); for an adverse decision they are its top reasons.
"""

from __future__ import annotations

import math
import time

import numpy as np

from whystream.models.reason_codes import MAX_PRINCIPAL_REASONS
from whystream.models.registry import RegisteredModel
from whystream.treeshap import EXPLAINER_NAME
from whystream.wire.prediction_decoder import NO_CLASS

TOP_REASONS = 5


def toward_sign(model: RegisteredModel, adverse: bool) -> float:
    """+1 when a positive attribution pushes toward the decision taken, else -1."""
    return float(model.adverse_direction) * (1.0 if adverse else -1.0)


def top_reasons(names: list[str], values: np.ndarray, shap_row: np.ndarray, sign: float) -> list[dict]:
    """Features whose attribution times `sign` is positive, largest first (at most TOP_REASONS)."""
    toward = sign * shap_row
    order = np.argsort(-toward, kind="stable")[:TOP_REASONS]
    return [{"feature": names[j], "value": _value(values[j]), "shap": float(shap_row[j])}
            for j in order if toward[j] > 0]


def principal_reasons(model: RegisteredModel, reasons: list[dict]) -> list[dict]:
    """The first MAX_PRINCIPAL_REASONS top reasons of an adverse decision, with code and text."""
    index = model.feature_index()
    out = []
    for reason in reasons[:MAX_PRINCIPAL_REASONS]:
        code, text = model.reason_codes[index[reason["feature"]]] if model.reason_codes else (reason["feature"],) * 2
        out.append({"code": code, "text": text, **reason})
    return out


def _value(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def redact_values(feature_names: list[str], X: np.ndarray, redacted) -> tuple[np.ndarray, list[str]]:
    """The feature values an explanation may show: X with the columns of the
    `redacted` features blanked (written as null), and those features' names
    in model order. The attributions are computed from X itself, before this."""
    hidden = [j for j, f in enumerate(feature_names) if f in redacted]
    if not hidden:
        return X, []
    values = np.array(X, dtype=np.float64)
    values[:, hidden] = np.nan
    return values, [feature_names[j] for j in hidden]


def redact_event(event: dict, redacted) -> dict:
    """A decoded ExplanationEvent with the values of `redacted` features blanked
    too (for one published before this reader's redaction list applied)."""
    hidden = set(event.get("redacted_features", ())) | {a["feature"] for a in event["attributions"]
                                                         if a["feature"] in redacted}
    if not hidden:
        return event

    def blank(items: list[dict]) -> list[dict]:
        return [{**a, "value": None} if a["feature"] in hidden else a for a in items]
    return {**event, "attributions": blank(event["attributions"]), "top_reasons": blank(event["top_reasons"]),
            "principal_reasons": blank(event.get("principal_reasons", [])),
            "redacted_features": [a["feature"] for a in event["attributions"] if a["feature"] in hidden]}


def build_explanations(model: RegisteredModel, records: list[dict], X: np.ndarray, attributions, reasons: list[str],
                       weights: list[float], strata: list[str], *, adverse, explainer_version: str,
                       redis_available: bool, worker: str, redacted=frozenset(), role: str = "CHAMPION",
                       champion_prediction_ids: list[str] | None = None, request_id: str | None = None,
                       requested_by: str | None = None, features_source: str | None = None,
                       model_scores=None, mismatches=None) -> list[dict]:
    """ExplanationEvents (dicts) of these rows. `role` CHALLENGER: shadow explanations of the decisions
    `champion_prediction_ids` (one per row); `request_id`, `requested_by`, `features_source`: answers to
    that ExplainRequest; `model_scores` (NaN: not recomputed) and `mismatches`: the score check's, per row."""
    names = model.feature_names
    values, redacted_names = redact_values(names, np.atleast_2d(X), redacted)
    explained_at = int(time.time() * 1000)
    events = []
    for i, record in enumerate(records):
        row, shap_row = values[i], attributions.shap[i]  # the values shown: redacted ones blanked
        is_adverse = record["decision"] in adverse
        top = top_reasons(names, row, shap_row, toward_sign(model, is_adverse))
        explained_class = int(attributions.classes[i])
        events.append({
            "prediction_id": record["prediction_id"],
            "model_name": model.name,
            "model_version": model.version,
            "explainer": EXPLAINER_NAME,
            "explainer_version": explainer_version,
            "event_time": record["event_time"],
            "explained_at": explained_at,
            "output_space": model.kind.output_space,
            "base_value": float(attributions.base_value[i]),
            "raw_score": float(attributions.raw[i]),
            "attributions": [{"feature": f, "value": _value(row[j]), "shap": float(shap_row[j])}
                             for j, f in enumerate(names)],
            "top_reasons": top,
            "score": record["score"],
            "decision": record["decision"],
            "threshold": record["threshold"],
            "sampling_reason": reasons[i],
            "inclusion_weight": float(weights[i]),
            "stratum": strata[i],
            "source": attributions.source[i],
            "redis_available": redis_available,
            "latency_ms": float(explained_at - record["event_time"]),
            "worker": worker,
            "explained_class": None if explained_class == NO_CLASS else explained_class,
            "principal_reasons": principal_reasons(model, top) if is_adverse else [],
            "reason_codes_version": model.reason_codes_version,
            "redacted_features": redacted_names,
            "role": role,
            "champion_prediction_id": None if champion_prediction_ids is None else champion_prediction_ids[i],
            "request_id": request_id,
            "adverse_reasons": top if is_adverse else top_reasons(names, row, shap_row, toward_sign(model, True)),
            "requested_by": requested_by,
            "received_at": record.get("received_at"),
            "model_score": _value(model_scores[i]) if model_scores is not None else None,
            "score_mismatch": bool(mismatches[i]) if mismatches is not None else False,
            "features_source": features_source,
        })
    return events
