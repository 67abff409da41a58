-- Rolling attribution histograms: per model version, feature, minute of event
-- time and reference bin, the inclusion weights summed (an estimate of how many
-- decisions of the population fell in the bin) and the raw explanation count.
-- Maintained by ClickHouse: attribution_hist_mv bins every inserted explanation
-- on the version's bins in model_reference (versions without a reference row
-- get no histogram until one is registered; register_reference backfills).
-- SummingMergeTree: always read with sum(weight), sum(n) ... GROUP BY.
CREATE TABLE IF NOT EXISTS {db}.attribution_hist
(
    model_name    LowCardinality(String),
    model_version LowCardinality(String),
    feature       LowCardinality(String),
    minute        DateTime('UTC'),
    bin           UInt16,   -- 0 .. B-1, as in model_reference.reference_hist
    weight        Float64,  -- sum of inclusion weights
    n             UInt64    -- explanations
)
ENGINE = SummingMergeTree((weight, n))
PARTITION BY toYYYYMMDD(minute)
ORDER BY (model_name, model_version, feature, minute, bin)
TTL minute + INTERVAL 90 DAY DELETE
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.attribution_hist_mv TO {db}.attribution_hist AS
SELECT
    e.model_name AS model_name,
    e.model_version AS model_version,
    e.feature AS feature,
    e.minute AS minute,
    toUInt16(arrayCount(edge -> edge <= e.shap, r.bin_edges) - 1) AS bin,
    sum(e.weight) AS weight,
    count() AS n
FROM
(
    SELECT model_name, model_version, toStartOfMinute(event_time) AS minute, inclusion_weight AS weight,
           attributions.feature AS feature, attributions.shap AS shap
    FROM {db}.explanations
    ARRAY JOIN attributions
) AS e
INNER JOIN
(
    SELECT model_name, model_version, feature, bin_edges FROM {db}.model_reference FINAL
) AS r ON e.model_name = r.model_name AND e.model_version = r.model_version AND e.feature = r.feature
GROUP BY model_name, model_version, feature, minute, bin;
