-- Per model version, minute of event time, sampling reason and source: how
-- many decisions were explained, their summed inclusion weights (the estimate
-- of decisions seen), explanations made without the shared cache, and the
-- latency distribution. Coverage = n / weight; fallback rate and cache-hit rate
-- are the FALLBACK and CACHE shares of n. AggregatingMergeTree: read with
-- sum(...), max(latency_max) and quantilesTDigestMerge(levels)(latency).
CREATE TABLE IF NOT EXISTS {db}.engine_stats
(
    model_name      LowCardinality(String),
    model_version   LowCardinality(String),
    minute          DateTime('UTC'),
    sampling_reason LowCardinality(String),
    source          LowCardinality(String),
    n               SimpleAggregateFunction(sum, UInt64),   -- explanations
    weight          SimpleAggregateFunction(sum, Float64),  -- sum of inclusion weights: estimated decisions
    uncached        SimpleAggregateFunction(sum, UInt64),   -- explained while the shared cache was unavailable
    latency_sum     SimpleAggregateFunction(sum, Float64),  -- sum of latency_ms
    latency_max     SimpleAggregateFunction(max, Float64),
    latency         AggregateFunction(quantileTDigest, Float64)  -- latency_ms
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (model_name, model_version, minute, sampling_reason, source)
TTL minute + INTERVAL 90 DAY DELETE
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.engine_stats_mv TO {db}.engine_stats AS
SELECT
    model_name,
    model_version,
    toStartOfMinute(event_time) AS minute,
    sampling_reason,
    source,
    count() AS n,
    sum(inclusion_weight) AS weight,
    countIf(NOT cached) AS uncached,
    sum(latency_ms) AS latency_sum,
    max(latency_ms) AS latency_max,
    quantileTDigestState(latency_ms) AS latency
FROM {db}.explanations
GROUP BY model_name, model_version, minute, sampling_reason, source;
