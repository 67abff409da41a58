-- Per model version, feature and minute of event time: weighted moments of the
-- SHAP attributions and a weighted t-digest of their distribution (for the
-- bin-free Wasserstein distance). Weights are inclusion weights, so weighted
-- sums estimate population totals. AggregatingMergeTree: read with sum(...) and
-- quantilesTDigestWeightedMerge(levels)(shap_quantiles).
CREATE TABLE IF NOT EXISTS {db}.attribution_stats
(
    model_name     LowCardinality(String),
    model_version  LowCardinality(String),
    feature        LowCardinality(String),
    minute         DateTime('UTC'),
    n              SimpleAggregateFunction(sum, UInt64),   -- explanations
    weight         SimpleAggregateFunction(sum, Float64),  -- sum w: estimated decisions
    weight_sq      SimpleAggregateFunction(sum, Float64),  -- sum w^2: effective sample size = weight^2 / weight_sq
    sum_shap       SimpleAggregateFunction(sum, Float64),  -- sum w * shap
    sum_abs_shap   SimpleAggregateFunction(sum, Float64),  -- sum w * |shap|
    sum_sq_shap    SimpleAggregateFunction(sum, Float64),  -- sum w * shap^2
    -- t-digest of shap weighted by round(1000 * w) (t-digest weights are integers)
    shap_quantiles AggregateFunction(quantileTDigestWeighted, Float64, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (model_name, model_version, feature, minute)
TTL minute + INTERVAL 90 DAY DELETE
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.attribution_stats_mv TO {db}.attribution_stats AS
SELECT
    model_name,
    model_version,
    attributions.feature AS feature,
    toStartOfMinute(event_time) AS minute,
    count() AS n,
    sum(inclusion_weight) AS weight,
    sum(inclusion_weight * inclusion_weight) AS weight_sq,
    sum(inclusion_weight * attributions.shap) AS sum_shap,
    sum(inclusion_weight * abs(attributions.shap)) AS sum_abs_shap,
    sum(inclusion_weight * attributions.shap * attributions.shap) AS sum_sq_shap,
    quantileTDigestWeightedState(attributions.shap, toUInt64(round(1000 * inclusion_weight))) AS shap_quantiles
FROM {db}.explanations
ARRAY JOIN attributions
GROUP BY model_name, model_version, feature, minute;
