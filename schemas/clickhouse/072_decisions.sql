-- The decision store (issue 25): every valid decision of `predictions`, not only the
-- explained ones, written by the sink exactly once (its rows are in sink_ledger under the
-- `predictions` topic, copied by decisions_ledger_mv in the same insert). So any decision
-- within retention can be explained later (`whystream explain ID` falls back to it) and
-- input drift can read all decisions. Columnar and compressed: one partition per day,
-- sorted by model and event time (time ranges read few granules), a bloom filter on
-- prediction_id for point lookups, the features as a Map whose repeated names compress
-- away. Redacted features are never here in clear: left out of `features`, named in
-- redacted_features. Kept 762 days (25 months) of event time: WHYSTREAM_RETENTION_DECISIONS_DAYS
-- (jobs/clickhouse/retention.py). A decision a producer sent twice (at two offsets) is two
-- rows until merges; read with FINAL (or LIMIT 1 BY prediction_id) for exactly one.
CREATE TABLE IF NOT EXISTS {db}.decisions
(
    prediction_id     String CODEC(ZSTD(3)) COMMENT 'The decision''s unique id (PredictionEvent.prediction_id)',
    model_name        LowCardinality(String) COMMENT 'Registered model name',
    model_version     LowCardinality(String) COMMENT 'Registered model version that scored it (content hash)',
    event_time        DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)) COMMENT 'When the decision was made (UTC)',
    received_at       Nullable(DateTime64(3, 'UTC')) CODEC(Delta, ZSTD(1)) COMMENT 'When the broker received it: the Kafka message timestamp (UTC); NULL when the broker gave none',
    features          Map(LowCardinality(String), Nullable(Float64)) CODEC(ZSTD(3)) COMMENT 'Feature values by name, in the model''s units (NULL: missing); redacted features left out',
    redacted_features Array(LowCardinality(String)) COMMENT 'Features whose values were left out by policy (the model''s registered list and the sink''s --redact): never stored in clear',
    score             Float64 CODEC(ZSTD(1)) COMMENT 'The score the producer reported',
    decision          LowCardinality(String) COMMENT 'The decision the producer reported',
    threshold         Float64 CODEC(ZSTD(1)) COMMENT 'The threshold the decision was taken against',
    decision_class    Nullable(Int32) COMMENT 'Multiclass models: the class the decision was taken on; NULL: the highest-scoring',
    segment           Map(LowCardinality(String), String) CODEC(ZSTD(3)) COMMENT 'Segment attributes (e.g. country, channel)',
    priority          Bool COMMENT 'The producer asked for this decision to be explained',
    kafka_topic       LowCardinality(String) COMMENT 'Topic the decision was read from (predictions, with its prefix)',
    kafka_topic_id    LowCardinality(String) COMMENT 'Kafka topic id of that topic (empty when the broker has none): a recreated topic reuses offsets',
    kafka_partition   Int32 COMMENT 'Partition it was read from',
    kafka_offset      Int64 CODEC(Delta, ZSTD(1)) COMMENT 'Offset it was read from',
    inserted_at       DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1)) COMMENT 'When the sink stored it',
    INDEX prediction_id_bloom prediction_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (model_name, model_version, event_time, prediction_id)
TTL addDays(toDateTime(event_time), 762)
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 0
COMMENT 'The decision store: every valid decision of the predictions topic (explained or not), once; what whystream explain falls back to after the topic''s retention. Kept WHYSTREAM_RETENTION_DECISIONS_DAYS (762) days';

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.decisions_ledger_mv TO {db}.sink_ledger AS
SELECT kafka_topic, kafka_topic_id, kafka_partition, kafka_offset, prediction_id
FROM {db}.decisions;

ALTER TABLE {db}.decisions_ledger_mv
    MODIFY COMMENT 'Copies where each stored decision was read (topic, topic id, partition, offset, prediction_id) into sink_ledger in the same insert: the sink inserts only offsets not there',
    COMMENT COLUMN `kafka_topic` 'Topic the decision was read from',
    COMMENT COLUMN `kafka_topic_id` 'Kafka topic id of that topic',
    COMMENT COLUMN `kafka_partition` 'Partition it was read from',
    COMMENT COLUMN `kafka_offset` 'Offset it was read from',
    COMMENT COLUMN `prediction_id` 'The decision''s prediction_id';
