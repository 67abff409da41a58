-- A registered model version's SHAP reference, one row per feature: the fixed
-- histogram bins the live histograms use, the reference proportions, mean |SHAP|
-- and quantiles. Written by whystream.jobs.clickhouse.register_reference
-- (idempotent per version; the content of a version never changes).
CREATE TABLE IF NOT EXISTS {db}.model_reference
(
    model_name              LowCardinality(String),
    model_version           LowCardinality(String),
    feature                 LowCardinality(String),
    feature_index           UInt16,
    bin_edges               Array(Float64),  -- B+1 edges, -inf .. +inf; bin k is [edge k, edge k+1)
    reference_hist          Array(Float64),  -- B proportions of the reference sample, summing to 1
    reference_mean_abs_shap Float64,         -- mean |SHAP| of the reference sample
    reference_mean_shap     Float64,
    quantile_levels         Array(Float64),  -- levels of reference_quantiles (whystream.jobs.drift_sql.QUANTILE_LEVELS)
    reference_quantiles     Array(Float64),  -- SHAP quantiles of the reference sample at those levels
    n_reference             UInt32,          -- reference sample size
    threshold               Float64,         -- the model's decision threshold (probability)
    registered_at           DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (model_name, model_version, feature);
