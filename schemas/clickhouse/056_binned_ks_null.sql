-- feature_drift_by_stratum (and feature_drift) gain `reference_cdf`: the reference's CDF at the
-- inner bin edges where `ks` is taken (arrayCumSum of reference_hist without its last 1). The KS
-- statistic taken at these few points has the null of a Brownian bridge's maximum at them, not
-- Kolmogorov's (the maximum over every point), and the monitor's critical value needs the points
-- (jobs/analytics/ks_null.py, issue 23 finding 8). Otherwise the view is 020's, unchanged.
-- Per model version and feature, the window of one stratum ('*': all strata) against the
-- version's reference. Besides 007's columns (psi, stability, mean_* ...):
--   ks            max over the reference bin edges of |F_window - F_reference| (weighted
--                 empirical CDFs; the histogram's resolution: the 9 inner decile edges)
--   reference_cdf the reference's CDF at the inner bin edges: the points where ks is taken
--   psi_bins      reference bins holding reference mass (PSI's degrees of freedom + 1)
--   wasserstein   W1 from 100 quantile midpoints 0.005 .. 0.995 of the window's weighted
--                 t-digest against the reference's, and never less than |mean_shap -
--                 reference_mean_shap| (exact, tails included); references registered before
--                 migration 020 have 20 quantiles: 20 midpoints then
--   reference_cdf_spread, wasserstein_resolution: the W1 statistic's null scale and the
--                 midpoints' resolution (jobs/drift_rule.py)
--   fallback_share FALLBACK share of the version's explanations in the window (all strata;
--                 their attributions are not in the other columns)
CREATE OR REPLACE VIEW {db}.feature_drift_by_stratum AS
WITH
    -- the whole hours inside the window, [first, end): read from the hourly rollups; the minutes
    -- before and after them from the minute tables (written as ranges, so the primary key prunes)
    (
        if(toStartOfHour(toStartOfMinute({start:DateTime64(3, 'UTC')})) = toStartOfMinute({start:DateTime64(3, 'UTC')}), toStartOfMinute({start:DateTime64(3, 'UTC')}), toStartOfHour(toStartOfMinute({start:DateTime64(3, 'UTC')})) + INTERVAL 1 HOUR),
        if(toStartOfHour({end:DateTime64(3, 'UTC')} - INTERVAL 3540 SECOND) = {end:DateTime64(3, 'UTC')} - INTERVAL 3540 SECOND, {end:DateTime64(3, 'UTC')} - INTERVAL 3540 SECOND,
           toStartOfHour({end:DateTime64(3, 'UTC')} - INTERVAL 3540 SECOND) + INTERVAL 1 HOUR)
    ) AS bounds,
    hist AS
    (
        SELECT model_version, feature, groupArray(bin) AS bins, groupArray(w) AS ws, sum(w) AS total
        FROM
        (
            SELECT model_version, feature, bin, sum(weight) AS w
            FROM
            (
                SELECT model_version, feature, bin, stratum, weight FROM {db}.attribution_hist
                WHERE model_name = {model:String} AND minute >= toStartOfMinute({start:DateTime64(3, 'UTC')}) AND minute < {end:DateTime64(3, 'UTC')}
                  AND (minute < bounds.1 OR minute >= bounds.2)
                UNION ALL
                SELECT model_version, feature, bin, stratum, weight FROM {db}.attribution_hist_hourly
                WHERE model_name = {model:String} AND hour >= bounds.1 AND hour < bounds.2
            )
            WHERE ({stratum:String} = '*' OR stratum = {stratum:String}) AND isFinite(weight) AND weight > 0
            GROUP BY model_version, feature, bin
        )
        GROUP BY model_version, feature
    ),
    stats AS
    (
        SELECT model_version, feature,
               sum(n) AS n, sum(weight) AS weighted_n, sum(weight_sq) AS sum_w_sq,
               sum(sum_abs_shap) / sum(weight) AS mean_abs_shap,
               sum(sum_shap) / sum(weight) AS mean_shap,
               sum(sum_sq_shap) / sum(weight) AS mean_sq_shap,
               quantilesTDigestWeightedMerge(0.005, 0.015, 0.025, 0.035, 0.045, 0.055, 0.065, 0.075, 0.085, 0.095, 0.105, 0.115, 0.125, 0.135, 0.145, 0.155, 0.165, 0.175, 0.185, 0.195, 0.205, 0.215, 0.225, 0.235, 0.245, 0.255, 0.265, 0.275, 0.285, 0.295, 0.305, 0.315, 0.325, 0.335, 0.345, 0.355, 0.365, 0.375, 0.385, 0.395, 0.405, 0.415, 0.425, 0.435, 0.445, 0.455, 0.465, 0.475, 0.485, 0.495, 0.505, 0.515, 0.525, 0.535, 0.545, 0.555, 0.565, 0.575, 0.585, 0.595, 0.605, 0.615, 0.625, 0.635, 0.645, 0.655, 0.665, 0.675, 0.685, 0.695, 0.705, 0.715, 0.725, 0.735, 0.745, 0.755, 0.765, 0.775, 0.785, 0.795, 0.805, 0.815, 0.825, 0.835, 0.845, 0.855, 0.865, 0.875, 0.885, 0.895, 0.905, 0.915, 0.925, 0.935, 0.945, 0.955, 0.965, 0.975, 0.985, 0.995)(shap_quantiles) AS q
        FROM
        (
            SELECT model_version, feature, stratum, n, weight, weight_sq, sum_shap, sum_abs_shap, sum_sq_shap, shap_quantiles FROM {db}.attribution_stats
            WHERE model_name = {model:String} AND minute >= toStartOfMinute({start:DateTime64(3, 'UTC')}) AND minute < {end:DateTime64(3, 'UTC')}
              AND (minute < bounds.1 OR minute >= bounds.2)
            UNION ALL
            SELECT model_version, feature, stratum, n, weight, weight_sq, sum_shap, sum_abs_shap, sum_sq_shap, shap_quantiles FROM {db}.attribution_stats_hourly
            WHERE model_name = {model:String} AND hour >= bounds.1 AND hour < bounds.2
        )
        WHERE ({stratum:String} = '*' OR stratum = {stratum:String})
          AND isFinite(weight) AND weight > 0 AND isFinite(weight_sq) AND isFinite(sum_shap)
          AND isFinite(sum_abs_shap) AND isFinite(sum_sq_shap)
        GROUP BY model_version, feature
    ),
    health AS
    (
        SELECT model_version, sumIf(n, source = 'FALLBACK') / sum(n) AS fallback_share
        FROM {db}.engine_stats
        WHERE model_name = {model:String}
          AND minute >= toStartOfMinute({start:DateTime64(3, 'UTC')}) AND minute < {end:DateTime64(3, 'UTC')}
        GROUP BY model_version
    )
SELECT
    s.model_version AS model_version,
    s.feature AS feature,
    r.feature_index AS feature_index,
    {stratum:String} AS stratum,
    s.n AS n,
    s.weighted_n AS weighted_n,
    if(s.sum_w_sq > 0, s.weighted_n * s.weighted_n / s.sum_w_sq, 0) AS effective_n,
    arrayMap(k -> h.ws[indexOf(h.bins, toUInt16(k))] / h.total, range(length(r.reference_hist))) AS window_hist,
    if(h.total > 0, arraySum(arrayMap((p, q) -> (greatest(p, 1e-4) - greatest(q, 1e-4)) * log(greatest(p, 1e-4) / greatest(q, 1e-4)),
                                      window_hist, r.reference_hist)), NULL) AS psi,
    if(h.total > 0, arrayMax(arrayMap((p, q) -> abs(p - q), arrayCumSum(window_hist), arrayCumSum(r.reference_hist))), NULL) AS ks,
    arrayPopBack(arrayCumSum(r.reference_hist)) AS reference_cdf,
    toUInt16(arrayCount(q -> q > 0, r.reference_hist)) AS psi_bins,
    s.mean_abs_shap AS mean_abs_shap,
    r.reference_mean_abs_shap AS reference_mean_abs_shap,
    abs(s.mean_abs_shap - r.reference_mean_abs_shap) / nullIf(r.reference_mean_abs_shap, 0) AS stability,
    greatest(abs(s.mean_shap - r.reference_mean_shap),
             if(length(r.reference_quantiles_100) = 100,
                arrayAvg(arrayMap((a, b) -> abs(a - b), s.q, r.reference_quantiles_100)),
                arrayAvg(arrayMap((i, b) -> abs(s.q[5 * i + 3] - b), range(length(r.reference_quantiles)),
                                  r.reference_quantiles)))) AS wasserstein,
    wasserstein / nullIf(r.reference_mean_abs_shap, 0) AS wasserstein_rel,
    s.mean_shap AS mean_shap,
    r.reference_mean_shap AS reference_mean_shap,
    s.mean_sq_shap AS mean_sq_shap,
    r.reference_mean_sq_shap AS reference_mean_sq_shap,
    r.n_reference AS n_reference,
    -- the reference's spread of its quantile function: the Wasserstein statistic's null scale
    if(length(r.reference_quantiles_100) = 100,
       arraySum(arrayMap((lo, hi, u) -> (hi - lo) * sqrt(u * (1 - u)), arrayPopBack(r.reference_quantiles_100),
                         arrayPopFront(r.reference_quantiles_100), arrayMap(i -> (i + 1) / 100, range(99)))),
       arraySum(arrayMap((lo, hi, u) -> (hi - lo) * sqrt(u * (1 - u)), arrayPopBack(r.reference_quantiles),
                         arrayPopFront(r.reference_quantiles), arrayMap(i -> (i + 1) / 20, range(19))))) AS reference_cdf_spread,
    -- the midpoints' resolution: an atom's edge (a binary feature's rare value) moves by whole quantile
    -- steps, so the W1 estimate may be off by the largest step of either quantile function / midpoints
    if(length(r.reference_quantiles_100) = 100,
       greatest(arrayMax(arrayDifference(r.reference_quantiles_100)), arrayMax(arrayDifference(s.q))) / 100,
       arrayMax(arrayDifference(r.reference_quantiles)) / 20) AS wasserstein_resolution,
    coalesce(hl.fallback_share, 0) AS fallback_share
FROM stats AS s
INNER JOIN
(
    SELECT model_version, feature, feature_index, reference_hist, reference_mean_abs_shap, reference_mean_shap,
           reference_mean_sq_shap, reference_quantiles, reference_quantiles_100, n_reference
    FROM {db}.model_reference FINAL
    WHERE model_name = {model:String}
) AS r ON r.model_version = s.model_version AND r.feature = s.feature
LEFT JOIN hist AS h ON h.model_version = s.model_version AND h.feature = s.feature
LEFT JOIN health AS hl ON hl.model_version = s.model_version
ORDER BY s.model_version, r.feature_index;

CREATE OR REPLACE VIEW {db}.feature_drift AS
SELECT * FROM {db}.feature_drift_by_stratum(model = {model:String}, start = {start:DateTime64(3, 'UTC')},
                                            end = {end:DateTime64(3, 'UTC')}, stratum = '*');

ALTER TABLE {db}.feature_drift MODIFY COMMENT 'feature_drift(model, start, end): attribution drift per model version and feature over all strata (feature_drift_by_stratum with stratum = \'*\')';

ALTER TABLE {db}.feature_drift_by_stratum MODIFY COMMENT 'feature_drift_by_stratum(model, start, end, stratum): PSI, KS (and the reference CDF at the edges where it is taken), stability, Wasserstein-1, effective n and fallback share per model version and feature of one stratum (\'*\': all)';
