-- The score check per model version and minute (issue 25): how many explained decisions
-- of the stream (champion explanations, not answers) had their producer score checked
-- against the registered model's own score (model_score, ExplanationEvent v4), how many
-- were off beyond the workers' tolerance (score_mismatch), inclusion-weighted too (an
-- estimate over all decisions), and the largest difference. `whystream drift`, the report
-- and the drift monitor's score_mismatch alert read it.
CREATE TABLE IF NOT EXISTS {db}.score_check_stats
(
    model_name        LowCardinality(String) COMMENT 'model name',
    model_version     LowCardinality(String) COMMENT 'model version (the one the producer named)',
    minute            DateTime('UTC') COMMENT 'minute of the decisions'' event_time',
    n                 SimpleAggregateFunction(sum, UInt64) COMMENT 'explanations whose producer score was checked',
    mismatched        SimpleAggregateFunction(sum, UInt64) COMMENT 'of them, with score_mismatch: the producer''s score off the model''s own beyond the tolerance',
    weight            SimpleAggregateFunction(sum, Float64) COMMENT 'sum of inclusion weights of the checked explanations: estimated decisions',
    mismatched_weight SimpleAggregateFunction(sum, Float64) COMMENT 'sum of inclusion weights of the mismatched ones: estimated mismatched decisions',
    max_difference    SimpleAggregateFunction(max, Float64) COMMENT 'largest |model_score - score| of the minute'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (model_name, model_version, minute)
TTL minute + INTERVAL 90 DAY DELETE
SETTINGS non_replicated_deduplication_window = 1000
COMMENT 'Per model version and minute: explained decisions whose producer score was checked against the model''s own, and how many were off beyond the tolerance; filled by score_check_stats_mv. Read with sum(...) and max(max_difference) GROUP BY';

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.score_check_stats_mv TO {db}.score_check_stats AS
SELECT
    model_name,
    model_version,
    toStartOfMinute(event_time) AS minute,
    toUInt64(count()) AS n,
    toUInt64(countIf(score_mismatch)) AS mismatched,
    sum(inclusion_weight) AS weight,
    sumIf(inclusion_weight, score_mismatch) AS mismatched_weight,
    max(abs(assumeNotNull(model_score) - score)) AS max_difference
FROM {db}.explanations
WHERE model_score IS NOT NULL AND isFinite(assumeNotNull(model_score)) AND role = 'CHAMPION'
  AND request_id = '' AND sampling_reason != 'ON_DEMAND'
  AND isFinite(inclusion_weight) AND inclusion_weight > 0 AND isFinite(score)
GROUP BY model_name, model_version, minute
COMMENT 'Counts each minute''s score-checked and mismatched explanations into score_check_stats';

ALTER TABLE {db}.score_check_stats_mv
    COMMENT COLUMN `model_name` 'model name',
    COMMENT COLUMN `model_version` 'model version',
    COMMENT COLUMN `minute` 'minute of the decisions'' event_time',
    COMMENT COLUMN `n` 'explanations whose producer score was checked',
    COMMENT COLUMN `mismatched` 'of them, with score_mismatch',
    COMMENT COLUMN `weight` 'sum of inclusion weights of the checked explanations',
    COMMENT COLUMN `mismatched_weight` 'sum of inclusion weights of the mismatched ones',
    COMMENT COLUMN `max_difference` 'largest |model_score - score|';
