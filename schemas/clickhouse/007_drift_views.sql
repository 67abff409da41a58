-- Drift and health SQL as parameterised views. Windows are whole minutes of
-- event time: a minute bucket M is in [start, end) when
-- toStartOfMinute(start) <= M < end. Call them like tables, e.g.
--   SELECT * FROM {db}.feature_drift(model = 'fraud', start = now() - INTERVAL 5 MINUTE, end = now())

-- Per model version and feature, the window against the version's reference:
--   psi          sum over bins (p - q) * ln(p / q), p the window's weighted bin
--                proportions, q the reference's; both floored at 1e-4 (empty bins)
--   stability    |weighted mean |SHAP| in the window - reference mean |SHAP|| / reference mean |SHAP|
--   wasserstein  Wasserstein-1 distance between the window's SHAP distribution
--                (weighted t-digest) and the reference sample's, from 20 quantiles
--                at the midpoints 0.025 .. 0.975; wasserstein_rel divides it by
--                the reference mean |SHAP|
--   weighted_n   sum of inclusion weights (estimated decisions); n explanations;
--                effective_n = weighted_n^2 / sum w^2 (Kish), the sample size the
--                statistics' noise corresponds to; mean_sq_shap (weighted mean of
--                SHAP^2) gives the standard error of mean_abs_shap.
-- Versions without a model_reference row, and features without explanations in
-- the window, have no row.
CREATE VIEW IF NOT EXISTS {db}.feature_drift AS
WITH
    window_hist AS
    (
        SELECT model_version, feature, bin, sum(weight) AS w
        FROM {db}.attribution_hist
        WHERE model_name = {model:String}
          AND minute >= toStartOfMinute({start:DateTime64(3, 'UTC')}) AND minute < {end:DateTime64(3, 'UTC')}
        GROUP BY model_version, feature, bin
    ),
    window_total AS
    (
        SELECT model_version, feature, sum(w) AS total FROM window_hist GROUP BY model_version, feature
    ),
    reference_bins AS
    (
        SELECT model_version, feature, toUInt16(b - 1) AS bin, reference_hist[b] AS p_ref
        FROM {db}.model_reference FINAL
        ARRAY JOIN arrayEnumerate(reference_hist) AS b
        WHERE model_name = {model:String}
    ),
    psi AS
    (
        SELECT r.model_version AS model_version, r.feature AS feature,
               sum((greatest(coalesce(h.w, 0) / t.total, 1e-4) - greatest(r.p_ref, 1e-4))
                   * log(greatest(coalesce(h.w, 0) / t.total, 1e-4) / greatest(r.p_ref, 1e-4))) AS psi
        FROM reference_bins AS r
        INNER JOIN window_total AS t ON t.model_version = r.model_version AND t.feature = r.feature
        LEFT JOIN window_hist AS h ON h.model_version = r.model_version AND h.feature = r.feature AND h.bin = r.bin
        GROUP BY r.model_version, r.feature
    ),
    stats AS
    (
        SELECT model_version, feature,
               sum(n) AS n, sum(weight) AS weighted_n, sum(weight_sq) AS weight_sq,
               sum(sum_abs_shap) / sum(weight) AS mean_abs_shap,
               sum(sum_shap) / sum(weight) AS mean_shap,
               sum(sum_sq_shap) / sum(weight) AS mean_sq_shap,
               quantilesTDigestWeightedMerge(0.025, 0.075, 0.125, 0.175, 0.225, 0.275, 0.325, 0.375, 0.425, 0.475,
                                             0.525, 0.575, 0.625, 0.675, 0.725, 0.775, 0.825, 0.875, 0.925, 0.975)(shap_quantiles) AS q
        FROM {db}.attribution_stats
        WHERE model_name = {model:String}
          AND minute >= toStartOfMinute({start:DateTime64(3, 'UTC')}) AND minute < {end:DateTime64(3, 'UTC')}
        GROUP BY model_version, feature
    )
SELECT
    s.model_version AS model_version,
    s.feature AS feature,
    r.feature_index AS feature_index,
    s.n AS n,
    s.weighted_n AS weighted_n,
    if(s.weight_sq > 0, s.weighted_n * s.weighted_n / s.weight_sq, 0) AS effective_n,
    p.psi AS psi,
    s.mean_abs_shap AS mean_abs_shap,
    r.reference_mean_abs_shap AS reference_mean_abs_shap,
    abs(s.mean_abs_shap - r.reference_mean_abs_shap) / nullIf(r.reference_mean_abs_shap, 0) AS stability,
    arrayAvg(arrayMap((a, b) -> abs(a - b), s.q, r.reference_quantiles)) AS wasserstein,
    wasserstein / nullIf(r.reference_mean_abs_shap, 0) AS wasserstein_rel,
    s.mean_shap AS mean_shap,
    r.reference_mean_shap AS reference_mean_shap,
    s.mean_sq_shap AS mean_sq_shap
FROM stats AS s
INNER JOIN
(
    SELECT model_version, feature, feature_index, reference_mean_abs_shap, reference_mean_shap, reference_quantiles
    FROM {db}.model_reference FINAL
    WHERE model_name = {model:String}
) AS r ON r.model_version = s.model_version AND r.feature = s.feature
LEFT JOIN psi AS p ON p.model_version = s.model_version AND p.feature = s.feature
ORDER BY s.model_version, r.feature_index;

-- Features ranked by weighted mean |SHAP| (all versions of the model together).
CREATE VIEW IF NOT EXISTS {db}.top_features AS
SELECT
    feature,
    sum(sum_abs_shap) / sum(weight) AS mean_abs_shap,
    sum(sum_shap) / sum(weight) AS mean_shap,
    sum(weight) AS weighted_n,
    sum(n) AS n
FROM {db}.attribution_stats
WHERE model_name = {model:String}
  AND minute >= toStartOfMinute({start:DateTime64(3, 'UTC')}) AND minute < {end:DateTime64(3, 'UTC')}
GROUP BY feature
ORDER BY mean_abs_shap DESC, feature;

-- Explanation health per model version and bucket of `bucket_seconds` of event
-- time (0: one row for the whole window):
--   explained        explanations written; estimated_seen = sum of inclusion weights,
--                    the unbiased estimate of decisions seen; coverage = explained / estimated_seen
--   sampled          RESERVOIR explanations (the rest are priority, weight 1)
--   fallback_rate, cache_hit_rate: FALLBACK and CACHE shares of explained;
--   uncached_rate:   share explained while the shared cache was unavailable
--   latency_*_ms:    event time to explained, quantiles from t-digests
CREATE VIEW IF NOT EXISTS {db}.engine_health AS
SELECT
    model_name,
    model_version,
    toDateTime(if({bucket_seconds:UInt32} = 0, toUInt32(toStartOfMinute({start:DateTime64(3, 'UTC')})),
                  intDiv(toUInt32(minute), greatest({bucket_seconds:UInt32}, 1)) * greatest({bucket_seconds:UInt32}, 1)),
               'UTC') AS bucket,
    sum(n) AS explained,
    sum(weight) AS estimated_seen,
    explained / estimated_seen AS coverage,
    sumIf(n, sampling_reason = 'RESERVOIR') AS sampled,
    explained - sampled AS priority,
    sumIf(n, source = 'FALLBACK') / explained AS fallback_rate,
    sumIf(n, source = 'CACHE') / explained AS cache_hit_rate,
    sum(uncached) / explained AS uncached_rate,
    sum(latency_sum) / explained AS latency_mean_ms,
    quantilesTDigestMerge(0.5, 0.9, 0.99)(latency) AS latency_q,
    latency_q[1] AS latency_p50_ms,
    latency_q[2] AS latency_p90_ms,
    latency_q[3] AS latency_p99_ms,
    max(latency_max) AS latency_max_ms
FROM {db}.engine_stats
WHERE model_name = {model:String}
  AND minute >= toStartOfMinute({start:DateTime64(3, 'UTC')}) AND minute < {end:DateTime64(3, 'UTC')}
GROUP BY model_name, model_version, bucket
ORDER BY model_version, bucket;
