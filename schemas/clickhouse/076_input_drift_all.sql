-- Input drift over every decision (issue 25), not a sample: input_drift's figures (030) read
-- from the decision store (`decisions`, migration 072) with weight 1 each, binned on the same
-- reference value bins (input_reference.bin_edges: bin k is [edge k, edge k+1)) with the same
-- floors (1e-4) as the sampled path. A plain view, not an aggregate: it adds nothing to the
-- sink's insert (the store is written exactly once through the ledger, migrations 050/075,
-- and so is everything read here), bins each decision against the reference as registered
-- now (a version registered after its decisions were stored is read all the same), and covers
-- every decision the store holds, also those stored before this migration. The price: a
-- query reads the window's decisions (one row per decision and feature), not per-minute sums.
-- A decision sent twice with the same id and event time counts once (FINAL). Per feature:
--   a value in `features`            counted in its bin
--   NULL, or the name not in features missing (the workers' NaN)
--   named in redacted_features       neither a value nor missing: not counted (never in clear)
-- So a feature redacted in every decision has no row. n is the count of decisions; weighted_n
-- and effective_n equal it. Call as input_drift_all(model = ..., start = ..., end = ...).
CREATE VIEW IF NOT EXISTS {db}.input_drift_all AS
WITH
    window_values AS
    (
        SELECT model_version, feature, if(mapContains(features, feature), features[feature], NULL) AS value,
               isNull(value) AS missing,
               if(missing, toUInt16(0), toUInt16(arrayCount(edge -> edge <= assumeNotNull(value), edges) - 1)) AS bin
        FROM
        (
            SELECT d.model_version AS model_version, d.features AS features, d.redacted_features AS redacted,
                   r.names AS names, r.all_edges AS all_edges
            FROM
            (
                SELECT model_version, features, redacted_features FROM {db}.decisions FINAL
                WHERE model_name = {model:String}
                  AND event_time >= toStartOfMinute({start:DateTime64(3, 'UTC')}) AND event_time < {end:DateTime64(3, 'UTC')}
            ) AS d
            INNER JOIN
            (
                SELECT model_version, groupArray(feature) AS names, groupArray(bin_edges) AS all_edges
                FROM {db}.input_reference FINAL WHERE model_name = {model:String}
                GROUP BY model_version
            ) AS r ON r.model_version = d.model_version
        )
        ARRAY JOIN names AS feature, all_edges AS edges
        WHERE NOT has(redacted, feature) AND (isNull(value) OR isFinite(assumeNotNull(value)))
    ),
    window_bins AS
    (
        SELECT model_version, feature, missing, bin, count() AS c
        FROM window_values GROUP BY model_version, feature, missing, bin
    ),
    window_total AS
    (
        SELECT model_version, feature, sum(c) AS total, sumIf(c, NOT missing) AS present, sumIf(c, missing) AS absent
        FROM window_bins GROUP BY model_version, feature
    ),
    reference_bins AS
    (
        SELECT model_version, feature, toUInt16(b - 1) AS bin, reference_hist[b] AS p_ref
        FROM {db}.input_reference FINAL
        ARRAY JOIN arrayEnumerate(reference_hist) AS b
        WHERE model_name = {model:String}
    ),
    psi AS
    (
        SELECT r.model_version AS model_version, r.feature AS feature,
               sum((greatest(coalesce(h.c, 0) / t.present, 1e-4) - greatest(r.p_ref, 1e-4))
                   * log(greatest(coalesce(h.c, 0) / t.present, 1e-4) / greatest(r.p_ref, 1e-4))) AS value_psi
        FROM reference_bins AS r
        INNER JOIN window_total AS t ON t.model_version = r.model_version AND t.feature = r.feature
        LEFT JOIN (SELECT * FROM window_bins WHERE NOT missing) AS h
               ON h.model_version = r.model_version AND h.feature = r.feature AND h.bin = r.bin
        WHERE t.present > 0
        GROUP BY r.model_version, r.feature
    )
SELECT
    t.model_version AS model_version,
    t.feature AS feature,
    r.feature_index AS feature_index,
    t.total AS n,
    toFloat64(t.total) AS weighted_n,
    toFloat64(t.total) AS effective_n,
    if(t.present > 0, p.value_psi, nan) AS value_psi,
    t.absent / t.total AS missing_rate,
    r.reference_missing AS reference_missing
FROM window_total AS t
INNER JOIN
(
    SELECT model_version, feature, feature_index, reference_missing FROM {db}.input_reference FINAL
    WHERE model_name = {model:String}
) AS r ON r.model_version = t.model_version AND r.feature = t.feature
LEFT JOIN psi AS p ON p.model_version = t.model_version AND p.feature = t.feature
ORDER BY t.model_version, r.feature_index
COMMENT 'Input drift per model version and feature over [start, end) from every stored decision (the decision store), not the explanations'' sample: value PSI on the reference value bins, missing-value rate against the reference; redacted values not counted (call as input_drift_all(model = ..., start = ..., end = ...))';

-- decision_drift_all (074) counts as input_drift_all does: a decision sent twice with the
-- same id and event time is one decision (FINAL), so the two views' n agree. Otherwise 074's text.
CREATE OR REPLACE VIEW {db}.decision_drift_all AS
WITH
    reference AS
    (
        SELECT model_version, bin_edges, reference_hist, threshold, adverse_direction, reference_mean, reference_decline
        FROM {db}.score_reference FINAL WHERE model_name = {model:String}
    ),
    window_rows AS
    (
        SELECT d.model_version AS model_version, d.score AS score, lower(d.decision) IN ('decline', 'review') AS adverse,
               r.model_version != '' AS has_reference, r.bin_edges AS bin_edges,
               if(has_reference AND isFinite(r.threshold),
                  toFloat64(if(r.adverse_direction < 0, d.score <= d.threshold, d.score >= d.threshold)), nan) AS declined
        FROM {db}.decisions AS d FINAL
        LEFT JOIN reference AS r ON r.model_version = d.model_version
        WHERE d.model_name = {model:String}
          AND d.event_time >= toStartOfMinute({start:DateTime64(3, 'UTC')}) AND d.event_time < {end:DateTime64(3, 'UTC')}
          AND isFinite(d.score)
    ),
    window_stats AS
    (
        SELECT model_version, count() AS n, avg(score) AS mean_score, avg(adverse) AS adverse_rate,
               max(has_reference) AS has_reference, avg(declined) AS decline_rate
        FROM window_rows GROUP BY model_version
    ),
    window_hist AS
    (
        SELECT model_version, toUInt16(arrayCount(edge -> edge <= score, bin_edges) - 1) AS bin, count() AS c
        FROM window_rows WHERE has_reference
        GROUP BY model_version, bin
    ),
    hist_total AS (SELECT model_version, sum(c) AS total FROM window_hist GROUP BY model_version),
    reference_bins AS
    (
        SELECT model_version, toUInt16(b - 1) AS bin, reference_hist[b] AS p_ref
        FROM reference ARRAY JOIN arrayEnumerate(reference_hist) AS b
    ),
    psi AS
    (
        SELECT rb.model_version AS model_version,
               sum((greatest(coalesce(h.c, 0) / t.total, 1e-4) - greatest(rb.p_ref, 1e-4))
                   * log(greatest(coalesce(h.c, 0) / t.total, 1e-4) / greatest(rb.p_ref, 1e-4))) AS score_psi
        FROM reference_bins AS rb
        INNER JOIN hist_total AS t ON t.model_version = rb.model_version
        LEFT JOIN window_hist AS h ON h.model_version = rb.model_version AND h.bin = rb.bin
        GROUP BY rb.model_version
    )
SELECT
    s.model_version AS model_version,
    s.n AS n,
    toFloat64(s.n) AS weighted_n,
    toFloat64(s.n) AS effective_n,
    s.mean_score AS mean_score,
    s.adverse_rate AS adverse_rate,
    s.decline_rate AS decline_rate,
    if(s.has_reference, p.score_psi, nan) AS score_psi,
    if(s.has_reference, r.reference_mean, nan) AS reference_mean_score,
    if(s.has_reference, r.reference_decline, nan) AS reference_decline
FROM window_stats AS s
LEFT JOIN reference AS r ON r.model_version = s.model_version
LEFT JOIN psi AS p ON p.model_version = s.model_version
ORDER BY s.model_version
COMMENT 'Score and decision drift per model version over [start, end) from every stored decision (the decision store; a copy sent again with the same id and event time counts once), not the explanations'' sample: score PSI, mean score, decline rate and adverse-label rate against the reference (call as decision_drift_all(model = ..., start = ..., end = ...))';
