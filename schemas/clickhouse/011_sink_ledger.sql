-- Exactly once into every table and view (jobs/sink.py, jobs/sink_ledger.py).
-- Each explanation row records the topic it was read from and that topic's id
-- (Kafka topic id; '' when the broker has none), and sink_ledger_mv copies
-- (topic, topic id, partition, offset, prediction_id) of every inserted row into
-- sink_ledger, in the same insert and under the same deduplication token as the
-- table and the other views. Before it inserts, a sink asks the ledger which of
-- its offsets are stored already (the same prediction_id at the same position of
-- the same topic incarnation) and inserts only the rest. Rows written before
-- this migration read '' and have no ledger rows.
ALTER TABLE {db}.explanations
    ADD COLUMN IF NOT EXISTS kafka_topic LowCardinality(String) DEFAULT '' AFTER kafka_offset,
    ADD COLUMN IF NOT EXISTS kafka_topic_id LowCardinality(String) DEFAULT '' AFTER kafka_topic;

CREATE TABLE IF NOT EXISTS {db}.sink_ledger
(
    kafka_topic    LowCardinality(String),
    kafka_topic_id LowCardinality(String),
    kafka_partition Int32,
    kafka_offset   Int64,
    prediction_id  String,
    inserted_at    DateTime('UTC') DEFAULT now()
)
ENGINE = MergeTree
ORDER BY (kafka_topic, kafka_partition, kafka_offset)
TTL inserted_at + INTERVAL 762 DAY DELETE
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.sink_ledger_mv TO {db}.sink_ledger AS
SELECT kafka_topic, kafka_topic_id, kafka_partition, kafka_offset, prediction_id
FROM {db}.explanations;
