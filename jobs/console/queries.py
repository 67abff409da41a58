"""The console's and the report's reads beyond the drift views (jobs/analytics/drift_sql.py):
one decision, the answers given about it (`explain_answers`, the audit trail), the adverse
decisions, their principal reasons, the time spans that tell a replay from a live stream,
the latency from broker receipt (`received_at`, ExplanationEvent v4), and the decisions a
challenger scored differently. A decision without an explanation is read from the decision
store (jobs/clickhouse/decision_store.py).

Every statement is complete SQL with literal values, so it runs through the SQL guard on a
read-only session or through a running sink's query port alike (jobs/clickhouse/query_port.py).
Times come back as epoch milliseconds. Answers to explain requests (`request_id` set) are
kept apart by the sink in `explain_answers`; `request_id = ''` keeps rows written into
`explanations` before that rule out too.
"""

from __future__ import annotations

from whystream.errors import ModelNotFound
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident, lit, ms_lit, rows

ADVERSE = "(length(principal_reasons.code) > 0 OR sampling_reason = 'ADVERSE')"
EXACT_SOURCES = ("LIVE", "CACHE")  # TreeSHAP: base value + attributions = raw score


def _where(model: str, start_ms: int, end_ms: int) -> str:
    return (f"model_name = {lit(model)} AND event_time >= {ms_lit(start_ms)} AND event_time < {ms_lit(end_ms)} "
            "AND request_id = ''")


def known_models(client, database: str = DEFAULT_DATABASE) -> list[str]:
    """Model names with a registered reference or stored explanations."""
    db = ident(database)
    return [r["model_name"] for r in rows(client, f"""
        SELECT DISTINCT model_name FROM (SELECT model_name FROM {db}.model_reference
                                         UNION ALL SELECT DISTINCT model_name FROM {db}.explanations)
        ORDER BY model_name""")]


def decision(client, prediction_id: str, database: str = DEFAULT_DATABASE) -> list[dict]:
    """The stored explanations of one decision (one per model name; usually one)."""
    return rows(client, f"""
        SELECT prediction_id, model_name, model_version, explainer, explainer_version,
               toUnixTimestamp64Milli(event_time) AS event_time_ms,
               toUnixTimestamp64Milli(explained_at) AS explained_at_ms, output_space, base_value, raw_score,
               attributions.feature AS features, attributions.value AS feature_values, attributions.shap AS shap,
               principal_reasons.code AS reason_codes, principal_reasons.text AS reason_texts,
               principal_reasons.feature AS reason_features, principal_reasons.value AS reason_values,
               principal_reasons.shap AS reason_shap, reason_codes_version, score, decision, threshold,
               sampling_reason, inclusion_weight, stratum, source, latency_ms, worker, explained_class,
               redacted_features, role, champion_prediction_id,
               adverse_reasons.feature AS adverse_features, adverse_reasons.value AS adverse_values,
               adverse_reasons.shap AS adverse_shap, toUnixTimestamp64Milli(received_at) AS received_at_ms,
               model_score, score_mismatch, features_source
        FROM {ident(database)}.explanations FINAL
        WHERE prediction_id = {lit(prediction_id)} AND request_id = ''
        ORDER BY model_name""")


def answers(client, prediction_id: str, database: str = DEFAULT_DATABASE) -> list[dict]:
    """The answers given to explain requests about one decision (the audit trail, oldest first):
    request_id, requested_by, explained_at_ms, model_version, source, features_source, score,
    model_score, score_mismatch, decision, first_code."""
    return rows(client, f"""
        SELECT request_id, requested_by, toUnixTimestamp64Milli(explained_at) AS explained_at_ms, model_name,
               model_version, source, features_source, score, model_score, score_mismatch, decision,
               principal_reasons.code[1] AS first_code
        FROM {ident(database)}.explain_answers FINAL
        WHERE prediction_id = {lit(prediction_id)}
        ORDER BY explained_at, request_id""")


def adverse_decisions(client, model: str, start_ms: int, end_ms: int, limit: int = 50,
                      database: str = DEFAULT_DATABASE, exact_only: bool = False) -> list[dict]:
    """The latest adverse decisions of `model` (the champion's), newest first: prediction_id,
    model_version, event_time_ms, score, threshold, decision, source, the first principal reason."""
    exact = f" AND source IN {lit(list(EXACT_SOURCES))}" if exact_only else ""
    return rows(client, f"""
        SELECT prediction_id, model_version, toUnixTimestamp64Milli(event_time) AS event_time_ms, score, threshold,
               decision, source, sampling_reason, principal_reasons.code[1] AS first_code,
               principal_reasons.text[1] AS first_text, length(principal_reasons.code) AS reasons
        FROM {ident(database)}.explanations FINAL
        WHERE {_where(model, start_ms, end_ms)} AND role = 'CHAMPION' AND {ADVERSE}{exact}
        ORDER BY event_time DESC, prediction_id LIMIT {int(limit)}""")


def reason_frequencies(client, model: str, start_ms: int, end_ms: int, limit: int = 15,
                       database: str = DEFAULT_DATABASE) -> list[dict]:
    """Principal reasons of the adverse decisions, most frequent first: code, text, feature,
    decisions (that gave the reason), first (decisions where it came first), share (of adverse decisions)."""
    db = ident(database)
    where = f"{_where(model, start_ms, end_ms)} AND role = 'CHAMPION'"
    return rows(client, f"""
        SELECT code, any(text) AS text, any(feature) AS feature, count() AS decisions,
               countIf(position = 1) AS first,
               count() / (SELECT greatest(count(), 1) FROM {db}.explanations FINAL
                          WHERE {where} AND length(principal_reasons.code) > 0) AS share
        FROM {db}.explanations FINAL
        ARRAY JOIN principal_reasons.code AS code, principal_reasons.text AS text,
                   principal_reasons.feature AS feature, arrayEnumerate(principal_reasons.code) AS position
        WHERE {where}
        GROUP BY code ORDER BY decisions DESC, code LIMIT {int(limit)}""")


def time_spans(client, model: str, start_ms: int, end_ms: int, database: str = DEFAULT_DATABASE) -> dict:
    """How far the event times and the explanation times of a period spread (ms): a replay of
    old events explains in minutes what was decided over hours, so its latency is not the engine's."""
    [found] = rows(client, f"""
        SELECT count() AS n,
               toUnixTimestamp64Milli(max(event_time)) - toUnixTimestamp64Milli(min(event_time)) AS event_span_ms,
               toUnixTimestamp64Milli(max(explained_at)) - toUnixTimestamp64Milli(min(explained_at))
                   AS explained_span_ms,
               quantile(0.5)(latency_ms) AS latency_p50_ms, countIf(received_at IS NOT NULL) AS received
        FROM {ident(database)}.explanations
        WHERE {_where(model, start_ms, end_ms)} AND role = 'CHAMPION'""")
    return {k: float(v or 0) for k, v in found.items()}


def receipt_latency(client, model: str, start_ms: int, end_ms: int, bucket_s: int = 0,
                    database: str = DEFAULT_DATABASE) -> list[dict]:
    """Per model version (and `bucket` in epoch seconds, unless `bucket_s` is 0) of the priority explanations
    (explained at once; a sampled one waits for its reservoir window to close): `received` (those whose
    decision has a broker receipt time), latency_p50_ms and latency_p99_ms of explained_at − received_at:
    the engine's latency, whatever the event times say."""
    waited = "toUnixTimestamp64Milli(explained_at) - toUnixTimestamp64Milli(received_at)"
    bucket = f"toUnixTimestamp(toStartOfInterval(event_time, INTERVAL {int(bucket_s)} SECOND))" if bucket_s else "0"
    return [{**r, "received": int(r["received"]), "latency_p50_ms": float(r["latency_p50_ms"]),
             "latency_p99_ms": float(r["latency_p99_ms"])} for r in rows(client, f"""
        SELECT model_version, {bucket} AS bucket, count() AS received,
               quantile(0.5)({waited}) AS latency_p50_ms, quantile(0.99)({waited}) AS latency_p99_ms
        FROM {ident(database)}.explanations
        WHERE {_where(model, start_ms, end_ms)} AND received_at IS NOT NULL AND sampling_reason != 'RESERVOIR'
        GROUP BY model_version, bucket ORDER BY model_version, bucket""")]


def data_extent(client, model: str, start_ms: int, end_ms: int, database: str = DEFAULT_DATABASE) -> tuple[int, int] | None:
    """(first minute, end of the last minute) in epoch ms holding exact explanations of `model`."""
    [found] = rows(client, f"""
        SELECT count() AS n, toUnixTimestamp(min(minute)) * 1000 AS first_ms, toUnixTimestamp(max(minute)) * 1000 AS last_ms
        FROM {ident(database)}.attribution_stats
        WHERE model_name = {lit(model)} AND minute >= toStartOfMinute({ms_lit(start_ms)}) AND minute < {ms_lit(end_ms)}""")
    if not int(found["n"]):
        return None
    return int(found["first_ms"]), int(found["last_ms"]) + 60_000


def challenger_pairs(client, model: str, limit: int = 20, database: str = DEFAULT_DATABASE) -> list[dict]:
    """The decisions a challenger scored most differently from the champion: prediction_id,
    versions, event_time_ms, both scores and first top reasons."""
    return rows(client, f"""
        SELECT prediction_id, champion_version, challenger_version,
               toUnixTimestamp64Milli(event_time) AS event_time_ms, champion_score, challenger_score,
               champion_top_reason, challenger_top_reason
        FROM {ident(database)}.champion_challenger_pairs WHERE model_name = {lit(model)}
        ORDER BY abs(challenger_score - champion_score) DESC, prediction_id LIMIT {int(limit)}""")


def require_model(client, model: str | None, database: str = DEFAULT_DATABASE) -> str:
    """`model` if ClickHouse knows it; with None, the one model it knows. ModelNotFound, in one
    line naming the models it knows, otherwise."""
    known = known_models(client, database)
    if model is None:
        if len(known) == 1:
            return known[0]
        raise ModelNotFound("name a model with --model: ClickHouse knows "
                            + (", ".join(known) if known else "none yet (no explanations, no references)"))
    if model not in known:
        raise ModelNotFound(f"unknown model {model!r}: ClickHouse knows "
                            + (", ".join(known) if known else "none yet (no explanations, no references)"))
    return model


def challenger_versions(client, model: str, start_ms: int, end_ms: int, database: str = DEFAULT_DATABASE) -> set[str]:
    """The versions whose explanations in the period are a challenger's shadows."""
    return {r["model_version"] for r in rows(client, f"""
        SELECT DISTINCT model_version FROM {ident(database)}.explanations
        WHERE {_where(model, start_ms, end_ms)} AND role = 'CHALLENGER'""")}
