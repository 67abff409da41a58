-- The audit trail of explain answers (issue 25): every answer a worker published to an
-- ExplainRequest (sampling_reason ON_DEMAND, request_id set), as the requester received
-- it: who asked (requested_by), when it was answered (explained_at), the model version and
-- explainer source, where its features came from (features_source), the score, the
-- decision, every attribution and reason. A table of its own with the columns of
-- `explanations`, outside every aggregate (no view reads it: answers are not samples), so
-- the drift statistics never count them. Written exactly once per message by the sink
-- (its rows are in sink_ledger, copied by explain_answers_ledger_mv); an answer a worker
-- published twice after a crash collapses by request_id after merges (FINAL). Kept as long
-- as priority explanations (WHYSTREAM_RETENTION_PRIORITY_DAYS, 762 days of explained_at).
CREATE TABLE IF NOT EXISTS {db}.explain_answers AS {db}.explanations
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(explained_at)
ORDER BY (request_id, prediction_id)
TTL addDays(toDateTime(explained_at), 762)
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 0
COMMENT 'Every answer to an explain request, as the requester received it: request_id, requested_by, explained_at (when), model_version, source, features_source, score, decision, attributions and reasons. Outside the drift aggregates; one row per request_id after merges (FINAL)';

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.explain_answers_ledger_mv TO {db}.sink_ledger AS
SELECT kafka_topic, kafka_topic_id, kafka_partition, kafka_offset, prediction_id
FROM {db}.explain_answers;

ALTER TABLE {db}.explain_answers_ledger_mv
    MODIFY COMMENT 'Copies where each stored answer was read (topic, topic id, partition, offset, prediction_id) into sink_ledger in the same insert',
    COMMENT COLUMN `kafka_topic` 'Topic the answer was read from',
    COMMENT COLUMN `kafka_topic_id` 'Kafka topic id of that topic',
    COMMENT COLUMN `kafka_partition` 'Partition it was read from',
    COMMENT COLUMN `kafka_offset` 'Offset it was read from',
    COMMENT COLUMN `prediction_id` 'The decision''s prediction_id';
