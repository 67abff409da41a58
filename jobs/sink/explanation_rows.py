"""Explanations as rows of `explanations`: decoded ExplanationEvents into its columns,
inserted with a deduplication token that also deduplicates the materialized views.
The sink's fast path writes the same columns as RowBinary (`columns`).
"""

from __future__ import annotations

import uuid
from typing import Iterable

from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident

# Settings for every insert into `explanations`: the deduplication token must
# also deduplicate the blocks the materialized views write (see docs).
DEDUP_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1}
EXPLANATION_COLUMNS = [
    "prediction_id", "model_name", "model_version", "explainer", "explainer_version", "event_time",
    "explained_at", "output_space", "base_value", "raw_score", "attributions.feature", "attributions.value",
    "attributions.shap", "top_reasons.feature", "top_reasons.value", "top_reasons.shap", "score", "decision",
    "threshold", "sampling_reason", "inclusion_weight", "stratum", "source", "redis_available", "latency_ms", "worker",
    "kafka_partition", "kafka_offset", "explained_class", "principal_reasons.code", "principal_reasons.text",
    "principal_reasons.feature", "principal_reasons.value", "principal_reasons.shap", "reason_codes_version",
    "redacted_features", "role", "champion_prediction_id", "request_id", "adverse_reasons.feature",
    "adverse_reasons.value", "adverse_reasons.shap", "requested_by", "received_at", "model_score", "score_mismatch",
    "features_source",
]


def explanation_columns(events: Iterable[dict], positions: Iterable[tuple[int, int]] | None = None) -> list[list]:
    """Decoded ExplanationEvent records as the columns of `explanations`
    (EXPLANATION_COLUMNS order); positions are (partition, offset) per event."""
    events = list(events)
    positions = list(positions) if positions is not None else [(-1, -1)] * len(events)
    cols: list[list] = [[] for _ in EXPLANATION_COLUMNS]
    (pid, name, version, explainer, explainer_v, event_time, explained_at, space, base, raw, a_feat, a_val, a_shap,
     r_feat, r_val, r_shap, score, decision, threshold, reason, weight, stratum, source, redis, latency, worker,
     part, off, klass, p_code, p_text, p_feat, p_val, p_shap, codes_version, redacted, role, champion, request,
     v_feat, v_val, v_shap, requested_by, received_at, model_score, mismatch, features_source) = cols
    for e, (p, o) in zip(events, positions):
        pid.append(e["prediction_id"])
        name.append(e["model_name"])
        version.append(e["model_version"])
        explainer.append(e["explainer"])
        explainer_v.append(e["explainer_version"])
        event_time.append(int(e["event_time"]))
        explained_at.append(int(e["explained_at"]))
        space.append(e.get("output_space", "raw_margin"))
        base.append(float(e["base_value"]))
        raw.append(float(e["raw_score"]))
        attrs = e["attributions"]
        a_feat.append([a["feature"] for a in attrs])
        a_val.append([a["value"] for a in attrs])
        a_shap.append([a["shap"] for a in attrs])
        reasons = e["top_reasons"]
        r_feat.append([a["feature"] for a in reasons])
        r_val.append([a["value"] for a in reasons])
        r_shap.append([a["shap"] for a in reasons])
        score.append(float(e["score"]))
        decision.append(e["decision"])
        threshold.append(float(e["threshold"]))
        reason.append(str(e["sampling_reason"]))
        weight.append(float(e["inclusion_weight"]))
        stratum.append(e["stratum"])
        source.append(str(e["source"]))
        redis.append(bool(e.get("redis_available", e.get("cached", True))))  # `cached` before v3
        latency.append(float(e["latency_ms"]))
        worker.append(e.get("worker", ""))
        redacted.append(list(e.get("redacted_features", ())))
        part.append(int(p))
        off.append(int(o))
        klass.append(e.get("explained_class"))
        principal = e.get("principal_reasons") or []
        p_code.append([a["code"] for a in principal])
        p_text.append([a["text"] for a in principal])
        p_feat.append([a["feature"] for a in principal])
        p_val.append([a["value"] for a in principal])
        p_shap.append([a["shap"] for a in principal])
        codes_version.append(e.get("reason_codes_version") or "")
        role.append(str(e.get("role", "CHAMPION")))
        champion.append(e.get("champion_prediction_id") or "")
        request.append(e.get("request_id") or "")
        adverse = e.get("adverse_reasons") or []  # version 4
        v_feat.append([a["feature"] for a in adverse])
        v_val.append([a["value"] for a in adverse])
        v_shap.append([a["shap"] for a in adverse])
        requested_by.append(e.get("requested_by") or "")
        received_at.append(e.get("received_at"))
        model_score.append(e.get("model_score"))
        mismatch.append(bool(e.get("score_mismatch", False)))
        features_source.append(e.get("features_source") or "")
    return cols


def insert_explanations(client, events: list[dict], database: str = DEFAULT_DATABASE, token: str | None = None,
                        positions=None) -> None:
    """Insert decoded explanations with a deduplication token (random if none):
    the same token inserted twice writes once, in the table and in its views."""
    insert_columns(client, explanation_columns(events, positions), database, token)


def insert_columns(client, columns: list[list], database: str = DEFAULT_DATABASE, token: str | None = None) -> None:
    """Insert `explanations` columns (EXPLANATION_COLUMNS order), deduplicated by `token`."""
    client.insert("explanations", columns, database=ident(database),
                  column_names=EXPLANATION_COLUMNS, column_oriented=True,
                  settings={**DEDUP_SETTINGS, "insert_deduplication_token": token or uuid.uuid4().hex})
