-- Raw explanations: one row per explained decision (schemas/ExplanationEvent.avsc),
-- written by the sink (`whystream sink`). {db} is replaced by the database name.
--
-- Deduplicated by prediction_id: ReplacingMergeTree keeps one row per
-- (model_name, prediction_id) when parts merge (query with FINAL to see exactly
-- one), and the sink never inserts an id that is already present. The
-- deduplication window makes a retried insert with the same
-- insert_deduplication_token a no-op, here and in every materialized view below.
-- Retention: 30 days of event time (ALTER TABLE ... MODIFY TTL to change it).
CREATE TABLE IF NOT EXISTS {db}.explanations
(
    prediction_id     String,
    model_name        LowCardinality(String),
    model_version     LowCardinality(String),
    explainer         LowCardinality(String),
    explainer_version LowCardinality(String),
    event_time        DateTime64(3, 'UTC'),
    explained_at      DateTime64(3, 'UTC'),
    output_space      LowCardinality(String),
    base_value        Float64,
    raw_score         Float64,
    attributions Nested
    (
        feature LowCardinality(String),
        value   Nullable(Float64),
        shap    Float64
    ),
    top_reasons Nested
    (
        feature LowCardinality(String),
        value   Nullable(Float64),
        shap    Float64
    ),
    score             Float64,
    decision          LowCardinality(String),
    threshold         Float64,
    sampling_reason   LowCardinality(String),
    inclusion_weight  Float64,
    stratum           LowCardinality(String),
    source            LowCardinality(String),
    cached            Bool,
    latency_ms        Float64,
    worker            LowCardinality(String),
    kafka_partition   Int32,
    kafka_offset      Int64,
    inserted_at       DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_prediction_id prediction_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(explained_at)
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (model_name, prediction_id)
TTL toDateTime(event_time) + INTERVAL 30 DAY DELETE
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;
