-- Input drift beside attribution drift: did the data move, or did the reasons move?
-- The reference of a model version's inputs (from the registry's reference rows:
-- value bins and proportions per feature, the missing-value rate, the score's bins
-- and the reference decline rate), and per minute of event time the inclusion-
-- weighted value histograms, missing-value weights, score histograms and decline
-- weights of the explanations stream. Inclusion weights make these unbiased
-- estimates over all decisions, not only the explained ones. Rows whose
-- inclusion_weight is not a finite positive number, and values or scores that are
-- not finite, never enter the aggregates. Redacted values (left out by policy) are
-- neither a value nor missing: they are not counted.
CREATE TABLE IF NOT EXISTS {db}.input_reference
(
    model_name          LowCardinality(String) COMMENT 'registered model name',
    model_version       LowCardinality(String) COMMENT 'registered model version',
    feature             LowCardinality(String) COMMENT 'model feature',
    feature_index       UInt16 COMMENT 'position of the feature in the model',
    bin_edges           Array(Float64) COMMENT 'B+1 value bin edges, -inf .. +inf; bin k is [edge k, edge k+1), near the reference deciles, never inside an atom',
    reference_hist      Array(Float64) COMMENT 'B proportions of the reference rows with a value, per bin (sum 1; all 0 if the feature is always missing)',
    reference_missing   Float64 COMMENT 'share of reference rows where the feature is missing',
    n_reference         UInt32 COMMENT 'reference rows',
    registered_at       DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'when this row was written'
)
ENGINE = ReplacingMergeTree
ORDER BY (model_name, model_version, feature)
COMMENT 'Reference value histograms and missing-value rates per model version and feature, from the registry''s reference rows (whystream.jobs.input_reference)';

CREATE TABLE IF NOT EXISTS {db}.score_reference
(
    model_name          LowCardinality(String) COMMENT 'registered model name',
    model_version       LowCardinality(String) COMMENT 'registered model version',
    bin_edges           Array(Float64) COMMENT 'B+1 score bin edges, -inf .. +inf; bin k is [edge k, edge k+1)',
    reference_hist      Array(Float64) COMMENT 'B proportions of the reference rows'' scores per bin',
    reference_mean      Float64 COMMENT 'mean score of the reference rows',
    threshold           Float64 COMMENT 'the registered decision threshold (nan: none)',
    adverse_direction   Int8 COMMENT '+1: a score at or above the threshold is the adverse side; -1: at or below',
    reference_decline   Float64 COMMENT 'share of reference rows on the adverse side of the threshold (nan without a threshold)',
    n_reference         UInt32 COMMENT 'reference rows',
    registered_at       DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'when this row was written'
)
ENGINE = ReplacingMergeTree
ORDER BY (model_name, model_version)
COMMENT 'Reference score distribution and decline rate per model version: the model''s scores of the registry''s reference rows (probability; of a multiclass model the top class''s)';

CREATE TABLE IF NOT EXISTS {db}.input_hist
(
    model_name    LowCardinality(String) COMMENT 'model name',
    model_version LowCardinality(String) COMMENT 'model version',
    feature       LowCardinality(String) COMMENT 'model feature',
    minute        DateTime('UTC') COMMENT 'minute of the decisions'' event_time',
    missing       Bool COMMENT 'true: the value was missing (null, not redacted); bin is then 0',
    bin           UInt16 COMMENT 'value bin on input_reference.bin_edges',
    weight        Float64 COMMENT 'sum of inclusion weights: estimated decisions',
    weight_sq     Float64 COMMENT 'sum of squared inclusion weights (effective sample size)',
    n             UInt64 COMMENT 'explanations'
)
ENGINE = SummingMergeTree((weight, weight_sq, n))
PARTITION BY toYYYYMMDD(minute)
ORDER BY (model_name, model_version, feature, minute, missing, bin)
TTL minute + INTERVAL 90 DAY DELETE
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'Inclusion-weighted value histograms (reference bins) and missing values per feature and minute; filled by input_hist_mv';

-- One join per explanation (not per feature): the version's value bins as arrays in
-- model order, checked against the explanation's feature names (attributions are in
-- model order; a row whose features differ from the reference's is left out).
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.input_hist_mv TO {db}.input_hist AS
SELECT
    model_name,
    model_version,
    feature,
    minute,
    isNull(value) AS missing,
    if(missing, toUInt16(0), toUInt16(arrayCount(edge -> edge <= assumeNotNull(value), edges) - 1)) AS bin,
    sum(w) AS weight,
    sum(w * w) AS weight_sq,
    count() AS n
FROM
(
    SELECT e.model_name AS model_name, e.model_version AS model_version, toStartOfMinute(e.event_time) AS minute,
           e.inclusion_weight AS w, e.attributions.feature AS features, e.attributions.value AS vals,
           r.all_edges AS all_edges, e.redacted_features AS redacted
    FROM {db}.explanations AS e
    INNER JOIN
    (
        SELECT model_name, model_version, arraySort(x -> x.1, groupArray((feature_index, feature, bin_edges))) AS ordered,
               arrayMap(x -> x.2, ordered) AS reference_features, arrayMap(x -> x.3, ordered) AS all_edges
        FROM {db}.input_reference FINAL
        GROUP BY model_name, model_version
    ) AS r ON e.model_name = r.model_name AND e.model_version = r.model_version
    WHERE isFinite(e.inclusion_weight) AND e.inclusion_weight > 0 AND e.attributions.feature = r.reference_features
)
ARRAY JOIN features AS feature, vals AS value, all_edges AS edges
WHERE (isNull(value) OR isFinite(assumeNotNull(value))) AND NOT has(redacted, feature)
GROUP BY model_name, model_version, feature, minute, missing, bin
COMMENT 'Bins each explanation''s feature values on input_reference into input_hist (weights finite and positive, values finite or missing, redacted values left out)';

CREATE TABLE IF NOT EXISTS {db}.decision_stats
(
    model_name     LowCardinality(String) COMMENT 'model name',
    model_version  LowCardinality(String) COMMENT 'model version',
    minute         DateTime('UTC') COMMENT 'minute of the decisions'' event_time',
    n              UInt64 COMMENT 'explanations',
    weight         Float64 COMMENT 'sum of inclusion weights: estimated decisions',
    weight_sq      Float64 COMMENT 'sum of squared inclusion weights',
    adverse_weight Float64 COMMENT 'sum of inclusion weights of adverse decisions (sampling_reason ADVERSE: the worker''s adverse labels)',
    above_weight   Float64 COMMENT 'sum of inclusion weights of decisions scored at or above their threshold',
    below_weight   Float64 COMMENT 'sum of inclusion weights of decisions scored at or below their threshold',
    sum_score      Float64 COMMENT 'sum of w * score',
    sum_sq_score   Float64 COMMENT 'sum of w * score^2'
)
ENGINE = SummingMergeTree((n, weight, weight_sq, adverse_weight, above_weight, below_weight, sum_score, sum_sq_score))
PARTITION BY toYYYYMMDD(minute)
ORDER BY (model_name, model_version, minute)
TTL minute + INTERVAL 90 DAY DELETE
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'Per model version and minute: inclusion-weighted decisions, adverse decisions, decisions beyond the threshold and score moments; filled by decision_stats_mv';

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.decision_stats_mv TO {db}.decision_stats AS
SELECT
    model_name,
    model_version,
    toStartOfMinute(event_time) AS minute,
    count() AS n,
    sum(inclusion_weight) AS weight,
    sum(inclusion_weight * inclusion_weight) AS weight_sq,
    sumIf(inclusion_weight, sampling_reason = 'ADVERSE') AS adverse_weight,
    sumIf(inclusion_weight, isFinite(threshold) AND score >= threshold) AS above_weight,
    sumIf(inclusion_weight, isFinite(threshold) AND score <= threshold) AS below_weight,
    sum(inclusion_weight * score) AS sum_score,
    sum(inclusion_weight * score * score) AS sum_sq_score
FROM {db}.explanations
WHERE isFinite(inclusion_weight) AND inclusion_weight > 0 AND isFinite(score)
GROUP BY model_name, model_version, minute
COMMENT 'Sums each minute''s inclusion weights, adverse and beyond-threshold decisions and score moments into decision_stats';

CREATE TABLE IF NOT EXISTS {db}.score_hist
(
    model_name    LowCardinality(String) COMMENT 'model name',
    model_version LowCardinality(String) COMMENT 'model version',
    minute        DateTime('UTC') COMMENT 'minute of the decisions'' event_time',
    bin           UInt16 COMMENT 'score bin on score_reference.bin_edges',
    weight        Float64 COMMENT 'sum of inclusion weights: estimated decisions',
    n             UInt64 COMMENT 'explanations'
)
ENGINE = SummingMergeTree((weight, n))
PARTITION BY toYYYYMMDD(minute)
ORDER BY (model_name, model_version, minute, bin)
TTL minute + INTERVAL 90 DAY DELETE
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'Inclusion-weighted score histograms (reference bins) per model version and minute; filled by score_hist_mv';

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.score_hist_mv TO {db}.score_hist AS
SELECT
    e.model_name AS model_name,
    e.model_version AS model_version,
    e.minute AS minute,
    toUInt16(arrayCount(edge -> edge <= e.score, r.bin_edges) - 1) AS bin,
    sum(e.weight) AS weight,
    count() AS n
FROM
(
    SELECT model_name, model_version, toStartOfMinute(event_time) AS minute, inclusion_weight AS weight, score
    FROM {db}.explanations
    WHERE isFinite(inclusion_weight) AND inclusion_weight > 0 AND isFinite(score)
) AS e
INNER JOIN
(
    SELECT model_name, model_version, bin_edges FROM {db}.score_reference FINAL
) AS r ON e.model_name = r.model_name AND e.model_version = r.model_version
GROUP BY model_name, model_version, minute, bin
COMMENT 'Bins each explanation''s score on score_reference into score_hist';

-- Per model version and feature, the window's inputs against the reference:
--   value_psi        sum over the value bins (p - q) * ln(p / q), p the window's weighted
--                    proportions of decisions with a value, q the reference's; both floored at 1e-4
--   missing_rate     weighted share of decisions whose value was missing; reference_missing beside it
--   weighted_n, effective_n (Kish), n
CREATE VIEW IF NOT EXISTS {db}.input_drift AS
WITH
    window_bins AS
    (
        SELECT model_version, feature, missing, bin, sum(weight) AS w, sum(weight_sq) AS w2, sum(n) AS c
        FROM {db}.input_hist
        WHERE model_name = {model:String}
          AND minute >= toStartOfMinute({start:DateTime64(3, 'UTC')}) AND minute < {end:DateTime64(3, 'UTC')}
        GROUP BY model_version, feature, missing, bin
    ),
    window_total AS
    (
        SELECT model_version, feature, sum(w) AS total, sumIf(w, NOT missing) AS present, sumIf(w, missing) AS absent,
               sum(w2) AS total_sq, sum(c) AS n
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
               sum((greatest(coalesce(h.w, 0) / t.present, 1e-4) - greatest(r.p_ref, 1e-4))
                   * log(greatest(coalesce(h.w, 0) / t.present, 1e-4) / greatest(r.p_ref, 1e-4))) AS value_psi
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
    t.n AS n,
    t.total AS weighted_n,
    if(t.total_sq > 0, t.total * t.total / t.total_sq, 0) AS effective_n,
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
COMMENT 'Input drift per model version and feature over [start, end): value PSI on the reference value bins, missing-value rate against the reference (call as input_drift(model = ..., start = ..., end = ...))';

-- Per model version, the window's scores and decisions against the reference:
--   score_psi        PSI of the weighted score histogram against the reference scores' (floored at 1e-4)
--   mean_score       weighted mean score; reference_mean_score beside it
--   decline_rate     weighted share of decisions on the adverse side of their threshold (score >= threshold,
--                    or <= for models registered with --adverse-when-lower); reference_decline beside it
--   adverse_rate     weighted share of adverse decisions by the producer's labels (sampling_reason ADVERSE)
CREATE VIEW IF NOT EXISTS {db}.decision_drift AS
WITH
    window_stats AS
    (
        SELECT model_version, sum(n) AS n, sum(weight) AS weighted_n, sum(weight_sq) AS weight_sq,
               sum(adverse_weight) AS adverse_w, sum(above_weight) AS above_w, sum(below_weight) AS below_w,
               sum(sum_score) AS score_w
        FROM {db}.decision_stats
        WHERE model_name = {model:String}
          AND minute >= toStartOfMinute({start:DateTime64(3, 'UTC')}) AND minute < {end:DateTime64(3, 'UTC')}
        GROUP BY model_version
    ),
    window_hist AS
    (
        SELECT model_version, bin, sum(weight) AS w
        FROM {db}.score_hist
        WHERE model_name = {model:String}
          AND minute >= toStartOfMinute({start:DateTime64(3, 'UTC')}) AND minute < {end:DateTime64(3, 'UTC')}
        GROUP BY model_version, bin
    ),
    hist_total AS (SELECT model_version, sum(w) AS total FROM window_hist GROUP BY model_version),
    reference_bins AS
    (
        SELECT model_version, toUInt16(b - 1) AS bin, reference_hist[b] AS p_ref
        FROM {db}.score_reference FINAL
        ARRAY JOIN arrayEnumerate(reference_hist) AS b
        WHERE model_name = {model:String}
    ),
    psi AS
    (
        SELECT r.model_version AS model_version,
               sum((greatest(coalesce(h.w, 0) / t.total, 1e-4) - greatest(r.p_ref, 1e-4))
                   * log(greatest(coalesce(h.w, 0) / t.total, 1e-4) / greatest(r.p_ref, 1e-4))) AS score_psi
        FROM reference_bins AS r
        INNER JOIN hist_total AS t ON t.model_version = r.model_version
        LEFT JOIN window_hist AS h ON h.model_version = r.model_version AND h.bin = r.bin
        GROUP BY r.model_version
    )
SELECT
    s.model_version AS model_version,
    s.n AS n,
    s.weighted_n AS weighted_n,
    if(s.weight_sq > 0, s.weighted_n * s.weighted_n / s.weight_sq, 0) AS effective_n,
    s.score_w / s.weighted_n AS mean_score,
    s.adverse_w / s.weighted_n AS adverse_rate,
    if(r.has_reference AND isFinite(r.threshold), if(r.adverse_direction < 0, s.below_w, s.above_w) / s.weighted_n, nan)
        AS decline_rate,
    if(r.has_reference, p.score_psi, nan) AS score_psi,
    if(r.has_reference, r.reference_mean, nan) AS reference_mean_score,
    if(r.has_reference, r.reference_decline, nan) AS reference_decline
FROM window_stats AS s
LEFT JOIN
(
    SELECT model_version, true AS has_reference, threshold, adverse_direction, reference_mean, reference_decline
    FROM {db}.score_reference FINAL WHERE model_name = {model:String}
) AS r ON r.model_version = s.model_version
LEFT JOIN psi AS p ON p.model_version = s.model_version
ORDER BY s.model_version
COMMENT 'Score and decision drift per model version over [start, end): score PSI, mean score, decline rate (adverse side of the threshold) and adverse-label rate against the reference (call as decision_drift(model = ..., start = ..., end = ...))';
