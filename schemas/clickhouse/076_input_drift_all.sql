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
        -- each decision's values and bins as arrays in the reference's feature order (found by
        -- indexOf in the Map's keys: several times faster than a Map lookup per feature), then one
        -- row per feature
        SELECT model_version, feature, isNull(value) AS missing, bin
        FROM
        (
            SELECT d.model_version AS model_version, r.names AS names, mapKeys(d.features) AS keys,
                   mapValues(d.features) AS values_,
                   arrayMap(f -> indexOf(keys, f), r.names) AS at,
                   arrayMap(i -> if(i = 0, NULL, values_[i]), at) AS vals,
                   arrayMap((v, e) -> if(isNull(v), toUInt16(0), toUInt16(arrayCount(x -> x <= assumeNotNull(v), e) - 1)),
                            vals, r.all_edges) AS bins,
                   arrayMap(f -> has(d.redacted_features, f), r.names) AS hidden
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
        ARRAY JOIN names AS feature, vals AS value, bins AS bin, hidden AS redacted
        WHERE NOT redacted AND (isNull(value) OR isFinite(assumeNotNull(value)))
    ),
    window_total AS
    (
        -- read once (a CTE is inlined where it is used): per feature the counts, and the present
        -- values' bins with their counts as two arrays
        SELECT model_version, feature, sum(c) AS total, sumIf(c, NOT missing) AS present, sumIf(c, missing) AS absent,
               groupArrayIf(bin, NOT missing) AS present_bins, groupArrayIf(c, NOT missing) AS present_counts
        FROM
        (
            SELECT model_version, feature, missing, bin, count() AS c
            FROM window_values GROUP BY model_version, feature, missing, bin
        )
        GROUP BY model_version, feature
    )
SELECT
    t.model_version AS model_version,
    t.feature AS feature,
    r.feature_index AS feature_index,
    t.total AS n,
    toFloat64(t.total) AS weighted_n,
    toFloat64(t.total) AS effective_n,
    -- sum over the reference bins (p - q) * ln(p / q), p the window's share of the decisions with a
    -- value, q the reference's, both floored at 1e-4: input_drift's formula
    if(t.present > 0,
       arraySum(arrayMap((q, b) -> (greatest(if(indexOf(t.present_bins, b) = 0, 0,
                                                t.present_counts[indexOf(t.present_bins, b)]) / t.present, 1e-4)
                                    - greatest(q, 1e-4))
                                   * log(greatest(if(indexOf(t.present_bins, b) = 0, 0,
                                                     t.present_counts[indexOf(t.present_bins, b)]) / t.present, 1e-4)
                                         / greatest(q, 1e-4)),
                         r.reference_hist, arrayMap(k -> toUInt16(k - 1), arrayEnumerate(r.reference_hist)))),
       nan) AS value_psi,
    t.absent / t.total AS missing_rate,
    r.reference_missing AS reference_missing
FROM window_total AS t
INNER JOIN
(
    SELECT model_version, feature, feature_index, reference_missing, reference_hist FROM {db}.input_reference FINAL
    WHERE model_name = {model:String}
) AS r ON r.model_version = t.model_version AND r.feature = t.feature
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
