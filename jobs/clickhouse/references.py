"""A model version's references in ClickHouse, each stored once per version, with the
explanations stored before it binned afterwards:

- the SHAP reference (`model_reference`): its bins, reference histogram, mean |SHAP|
  and quantiles (whystream/models/reference.py);
- the input reference (`input_reference`, `score_reference`): value bins,
  proportions, missing rates and the score distribution of the rows it was
  registered with (whystream/models/input_reference.py).
"""

from __future__ import annotations

import logging

import numpy as np

from whystream.errors import WhystreamError
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, ident, lit, rows

log = logging.getLogger("whystream.clickhouse")

# Levels of the reference quantiles stored per feature; the same 20 midpoints are
# written out in the feature_drift view (schemas/clickhouse/007_drift_views.sql).
QUANTILE_LEVELS = tuple(round((i + 0.5) / 20, 3) for i in range(20))
# The 100 midpoints of reference_quantiles_100 (Wasserstein-1 since migration 020; the 20
# above are among them: level (i + 0.5) / 20 is number 5i + 2).
QUANTILE_LEVELS_100 = tuple(round((i + 0.5) / 100, 4) for i in range(100))
REFERENCE_COLUMNS = ["model_name", "model_version", "feature", "feature_index", "bin_edges", "reference_hist",
                     "reference_mean_abs_shap", "reference_mean_shap", "reference_mean_sq_shap", "quantile_levels",
                     "reference_quantiles", "reference_quantiles_100", "n_reference", "threshold"]


def reference_columns(model) -> list[list]:
    """model_reference rows of a RegisteredModel (or anything with its reference
    fields: name, version, feature_names, bin_edges, reference_hist,
    reference_shap, threshold), column-oriented."""
    shap = np.asarray(model.reference_shap, dtype=float)
    edges = np.asarray(model.bin_edges, dtype=float)
    hist = np.asarray(model.reference_hist, dtype=float)
    names = list(model.feature_names)
    if shap.ndim != 2 or shap.shape[1] != len(names) or edges.shape[0] != len(names) \
            or hist.shape != (len(names), edges.shape[1] - 1):
        raise WhystreamError(f"model {model.name} {model.version}: reference arrays do not match its "
                             f"{len(names)} features (shap {shap.shape}, edges {edges.shape}, hist {hist.shape})")
    quantiles = np.quantile(shap, QUANTILE_LEVELS, axis=0).T  # [F, L]
    quantiles_100 = np.quantile(shap, QUANTILE_LEVELS_100, axis=0).T  # [F, 100]
    f = len(names)
    return [
        [model.name] * f, [model.version] * f, names, list(range(f)),
        [list(map(float, e)) for e in edges], [list(map(float, h)) for h in hist],
        [float(v) for v in np.abs(shap).mean(axis=0)], [float(v) for v in shap.mean(axis=0)],
        [float(v) for v in np.square(shap).mean(axis=0)],
        [list(QUANTILE_LEVELS)] * f, [list(map(float, q)) for q in quantiles],
        [list(map(float, q)) for q in quantiles_100],
        [len(shap)] * f, [float(getattr(model, "threshold", float("nan")))] * f,
    ]


def has_reference(client, name: str, version: str, database: str = DEFAULT_DATABASE) -> bool:
    found = rows(client, f"SELECT count() AS c FROM {ident(database)}.model_reference "
                         f"WHERE model_name = {lit(name)} AND model_version = {lit(version)}")
    return found[0]["c"] > 0


def register_reference(client, model, database: str = DEFAULT_DATABASE, backfill: bool = True) -> bool:
    """Store `model`'s reference in model_reference unless its version is there
    already; True when it was added.

    Explanations of the version inserted before its reference existed got no
    histogram rows (the histogram view bins on the reference); with `backfill`
    they are binned now, so the histograms cover them exactly once.
    """
    db = ident(database)
    register_input_reference(client, model, db, backfill)  # its own once-per-version check
    if has_reference(client, model.name, model.version, db):
        return False
    client.insert("model_reference", reference_columns(model), database=db,
                  column_names=REFERENCE_COLUMNS, column_oriented=True)
    if backfill:
        # Rows inserted before the reference (their inserted_at is earlier than its registered_at), binned
        # as attribution_hist_mv bins (migration 042): exact, finite rows only, by stratum.
        client.command(f"""
            INSERT INTO {db}.attribution_hist (model_name, model_version, feature, minute, bin, stratum, weight, n)
            SELECT e.model_name, e.model_version, e.feature, e.minute,
                   toUInt16(arrayCount(edge -> edge <= e.shap, r.bin_edges) - 1) AS bin, e.stratum,
                   sum(e.weight), count()
            FROM
            (
                SELECT model_name, model_version, toStartOfMinute(event_time) AS minute, stratum,
                       inclusion_weight AS weight, attributions.feature AS feature, attributions.shap AS shap
                FROM {db}.explanations FINAL
                ARRAY JOIN attributions
                WHERE model_name = {lit(model.name)} AND model_version = {lit(model.version)}
                  AND source IN ('LIVE', 'CACHE') AND isFinite(inclusion_weight) AND inclusion_weight > 0
                  AND isFinite(attributions.shap)
                  AND inserted_at < (SELECT min(registered_at) FROM {db}.model_reference
                                     WHERE model_name = {lit(model.name)} AND model_version = {lit(model.version)})
            ) AS e
            INNER JOIN
            (
                SELECT model_name, model_version, feature, bin_edges FROM {db}.model_reference FINAL
                WHERE model_name = {lit(model.name)} AND model_version = {lit(model.version)}
            ) AS r ON e.model_name = r.model_name AND e.model_version = r.model_version AND e.feature = r.feature
            GROUP BY e.model_name, e.model_version, e.feature, e.minute, bin, e.stratum
            SETTINGS insert_deduplication_token = {lit(f"backfill:{model.name}:{model.version}")}""")
    log.info("registered the SHAP reference of %s %s in %s.model_reference", model.name, model.version, db)
    return True


INPUT_COLUMNS = ["model_name", "model_version", "feature", "feature_index", "bin_edges", "reference_hist",
                 "reference_missing", "n_reference"]
SCORE_COLUMNS = ["model_name", "model_version", "bin_edges", "reference_hist", "reference_mean", "threshold",
                 "adverse_direction", "reference_decline", "n_reference"]


def has_input_reference(client, name: str, version: str, database: str = DEFAULT_DATABASE) -> bool:
    found = rows(client, f"SELECT count() AS c FROM {ident(database)}.input_reference "
                         f"WHERE model_name = {lit(name)} AND model_version = {lit(version)}")
    return found[0]["c"] > 0


def register_input_reference(client, model, database: str = DEFAULT_DATABASE, backfill: bool = True) -> bool:
    """Store a RegisteredModel's input reference in input_reference and score_reference
    unless there already (or the version has none); True when added. With `backfill`,
    explanations inserted before it are binned now (once: a deduplication token)."""
    ref = getattr(model, "input_reference", None)
    db = ident(database)
    if ref is None or has_input_reference(client, model.name, model.version, db):
        return False
    names = list(model.feature_names)
    f = len(names)
    threshold = float(getattr(model, "threshold", float("nan")))
    client.insert("score_reference", [[model.name], [model.version], [list(map(float, ref.score_edges))],
                                      [list(map(float, ref.score_hist))], [ref.score_mean], [threshold],
                                      [int(getattr(model, "adverse_direction", 1))], [ref.decline], [ref.n]],
                  database=db, column_names=SCORE_COLUMNS, column_oriented=True)
    client.insert("input_reference", [[model.name] * f, [model.version] * f, names, list(range(f)),
                                      [list(map(float, e)) for e in ref.value_edges],
                                      [list(map(float, h)) for h in ref.value_hist],
                                      [float(m) for m in ref.missing], [ref.n] * f],
                  database=db, column_names=INPUT_COLUMNS, column_oriented=True)
    if backfill:
        _backfill(client, db, model.name, model.version)
    log.info("registered the input reference of %s %s in %s", model.name, model.version, db)
    return True


def _backfill(client, db: str, name: str, version: str) -> None:
    # Rows inserted before the reference: their inserted_at is earlier than its registered_at.
    version_rows = f"model_name = {lit(name)} AND model_version = {lit(version)}"
    before = (f"inserted_at < (SELECT min(registered_at) FROM {db}.input_reference WHERE {version_rows})")
    client.command(f"""
        INSERT INTO {db}.input_hist (model_name, model_version, feature, minute, missing, bin, weight, weight_sq, n)
        SELECT e.model_name, e.model_version, e.feature, e.minute, isNull(e.value) AS missing,
               if(missing, toUInt16(0), toUInt16(arrayCount(edge -> edge <= assumeNotNull(e.value), r.bin_edges) - 1))
                   AS bin, sum(e.weight), sum(e.weight * e.weight), count()
        FROM
        (
            SELECT model_name, model_version, toStartOfMinute(event_time) AS minute, inclusion_weight AS weight,
                   attributions.feature AS feature, attributions.value AS value
            FROM {db}.explanations FINAL
            ARRAY JOIN attributions
            WHERE {version_rows} AND {before}
              AND isFinite(inclusion_weight) AND inclusion_weight > 0
              AND (isNull(attributions.value) OR isFinite(assumeNotNull(attributions.value)))
              AND NOT has(redacted_features, attributions.feature)
        ) AS e
        INNER JOIN (SELECT model_name, model_version, feature, bin_edges FROM {db}.input_reference FINAL
                    WHERE {version_rows}) AS r
            ON e.model_name = r.model_name AND e.model_version = r.model_version AND e.feature = r.feature
        GROUP BY e.model_name, e.model_version, e.feature, e.minute, missing, bin
        SETTINGS insert_deduplication_token = {lit(f"input-backfill:{name}:{version}")}""")
    client.command(f"""
        INSERT INTO {db}.score_hist (model_name, model_version, minute, bin, weight, n)
        SELECT e.model_name, e.model_version, e.minute,
               toUInt16(arrayCount(edge -> edge <= e.score, r.bin_edges) - 1) AS bin, sum(e.weight), count()
        FROM
        (
            SELECT model_name, model_version, toStartOfMinute(event_time) AS minute, inclusion_weight AS weight, score
            FROM {db}.explanations FINAL
            WHERE {version_rows} AND {before.replace('input_reference', 'score_reference')}
              AND isFinite(inclusion_weight) AND inclusion_weight > 0 AND isFinite(score)
        ) AS e
        INNER JOIN (SELECT model_name, model_version, bin_edges FROM {db}.score_reference FINAL
                    WHERE {version_rows}) AS r
            ON e.model_name = r.model_name AND e.model_version = r.model_version
        GROUP BY e.model_name, e.model_version, e.minute, bin
        SETTINGS insert_deduplication_token = {lit(f"score-backfill:{name}:{version}")}""")
