-- Did the top reasons flip? Per model version, minute, stratum and decision (case-folded), how
-- many exact explanations had each feature as their first top reason (the feature pushing hardest
-- toward the decision taken; '' when none did). The view top_reason_flips compares a window
-- with a reference period of the same version: which share of its decisions had a first reason
-- outside the reference period's most frequent ones.
CREATE TABLE IF NOT EXISTS {db}.top_reason_stats
(
    model_name    LowCardinality(String),
    model_version LowCardinality(String),
    minute        DateTime('UTC'),
    stratum       LowCardinality(String),
    decision      LowCardinality(String),
    top_reason    LowCardinality(String),
    n             SimpleAggregateFunction(sum, UInt64),
    weight        SimpleAggregateFunction(sum, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (model_name, model_version, minute, stratum, decision, top_reason)
TTL minute + INTERVAL 90 DAY DELETE
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.top_reason_stats_mv TO {db}.top_reason_stats AS
SELECT
    model_name,
    model_version,
    toStartOfMinute(event_time) AS minute,
    stratum,
    lower(decision) AS decision,
    if(length(top_reasons.feature) > 0, top_reasons.feature[1], '') AS top_reason,
    count() AS n,
    sum(inclusion_weight) AS weight
FROM {db}.explanations
WHERE source IN ('LIVE', 'CACHE') AND isFinite(inclusion_weight) AND inclusion_weight > 0
GROUP BY model_name, model_version, minute, stratum, decision, top_reason;

-- Per model version and decision: `flipped`, the weighted share of the window's decisions whose
-- first top reason is not among the `top` most frequent first top reasons of the same version and
-- decision in [ref_start, ref_end); `reference_flipped`, the same share in the reference period
-- itself (what "normal" looks like); `reference_reasons`, those most frequent reasons.
CREATE VIEW IF NOT EXISTS {db}.top_reason_flips AS
WITH
    reference AS
    (
        SELECT model_version, decision, groupArray({top:UInt8})(top_reason) AS reasons, sum(w) AS total
        FROM
        (
            SELECT model_version, decision, top_reason, sum(weight) AS w
            FROM {db}.top_reason_stats
            WHERE model_name = {model:String}
              AND minute >= toStartOfMinute({ref_start:DateTime64(3, 'UTC')}) AND minute < {ref_end:DateTime64(3, 'UTC')}
            GROUP BY model_version, decision, top_reason
            ORDER BY w DESC, top_reason
        )
        GROUP BY model_version, decision
    ),
    reference_shares AS
    (
        SELECT t.model_version AS model_version, t.decision AS decision,
               sumIf(t.weight, NOT has(r.reasons, t.top_reason)) / sum(t.weight) AS reference_flipped
        FROM {db}.top_reason_stats AS t
        INNER JOIN reference AS r ON r.model_version = t.model_version AND r.decision = t.decision
        WHERE t.model_name = {model:String}
          AND t.minute >= toStartOfMinute({ref_start:DateTime64(3, 'UTC')}) AND t.minute < {ref_end:DateTime64(3, 'UTC')}
        GROUP BY t.model_version, t.decision
    )
SELECT
    t.model_version AS model_version,
    t.decision AS decision,
    sum(t.n) AS n,
    sum(t.weight) AS weighted_n,
    sumIf(t.weight, NOT has(r.reasons, t.top_reason)) / sum(t.weight) AS flipped,
    any(s.reference_flipped) AS reference_flipped,
    any(r.reasons) AS reference_reasons
FROM {db}.top_reason_stats AS t
INNER JOIN reference AS r ON r.model_version = t.model_version AND r.decision = t.decision
LEFT JOIN reference_shares AS s ON s.model_version = t.model_version AND s.decision = t.decision
WHERE t.model_name = {model:String}
  AND t.minute >= toStartOfMinute({start:DateTime64(3, 'UTC')}) AND t.minute < {end:DateTime64(3, 'UTC')}
GROUP BY t.model_version, t.decision
ORDER BY t.model_version, t.decision;

ALTER TABLE {db}.top_reason_stats
    MODIFY COMMENT 'First top reasons of exact explanations per model version, minute, stratum and decision (for top_reason_flips); AggregatingMergeTree: read with sum()',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version',
    COMMENT COLUMN `minute` 'Minute of the decisions\' event time (UTC)',
    COMMENT COLUMN `stratum` 'Sampling stratum',
    COMMENT COLUMN `decision` 'Decision label, lower case',
    COMMENT COLUMN `top_reason` 'First top reason: the feature pushing hardest toward the decision (\'\' when none did)',
    COMMENT COLUMN `n` 'Explanations',
    COMMENT COLUMN `weight` 'Sum of inclusion weights: estimated decisions';

ALTER TABLE {db}.top_reason_stats_mv
    MODIFY COMMENT 'Counts each inserted exact explanation\'s first top reason into top_reason_stats',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version',
    COMMENT COLUMN `minute` 'Minute of the decisions\' event time (UTC)',
    COMMENT COLUMN `stratum` 'Sampling stratum',
    COMMENT COLUMN `decision` 'Decision label, lower case',
    COMMENT COLUMN `top_reason` 'First top reason: the feature pushing hardest toward the decision (\'\' when none did)',
    COMMENT COLUMN `n` 'Explanations',
    COMMENT COLUMN `weight` 'Sum of inclusion weights: estimated decisions';

ALTER TABLE {db}.top_reason_flips MODIFY COMMENT 'top_reason_flips(model, start, end, ref_start, ref_end, top): share of decisions whose first top reason is outside the reference period\'s top most frequent ones, per model version and decision';
