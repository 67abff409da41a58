-- Comments on the sink's ledger and claims (011, 013): what an auditor reads in system.tables
-- and system.columns.
ALTER TABLE {db}.explanations
    COMMENT COLUMN `kafka_topic` 'Topic the explanation was read from (\'\' for rows stored before migration 011)',
    COMMENT COLUMN `kafka_topic_id` 'Kafka topic id of that topic incarnation: a recreated topic has another (\'\' when the broker has none)';

ALTER TABLE {db}.sink_ledger
    MODIFY COMMENT 'Where every stored explanation was read: (topic, topic id, partition, offset, prediction_id), written by sink_ledger_mv in the same insert; a sink inserts only offsets not here',
    COMMENT COLUMN `kafka_topic` 'Topic the explanation was read from',
    COMMENT COLUMN `kafka_topic_id` 'Kafka topic id of that topic incarnation (\'\' when the broker has none)',
    COMMENT COLUMN `kafka_partition` 'Partition it was read from',
    COMMENT COLUMN `kafka_offset` 'Offset it was read from',
    COMMENT COLUMN `prediction_id` 'The explained decision',
    COMMENT COLUMN `inserted_at` 'When the sink stored it (UTC)';

ALTER TABLE {db}.sink_ledger_mv
    MODIFY COMMENT 'Copies the position of each inserted explanation into sink_ledger',
    COMMENT COLUMN `kafka_topic` 'Topic the explanation was read from',
    COMMENT COLUMN `kafka_topic_id` 'Kafka topic id of that topic incarnation',
    COMMENT COLUMN `kafka_partition` 'Partition it was read from',
    COMMENT COLUMN `kafka_offset` 'Offset it was read from',
    COMMENT COLUMN `prediction_id` 'The explained decision';

ALTER TABLE {db}.sink_claims
    MODIFY COMMENT 'Which offsets an insert deduplication token stands for: the first claim of a token stays, and every sink inserts exactly those offsets under it',
    COMMENT COLUMN `token` 'insert_deduplication_token of an explanations insert',
    COMMENT COLUMN `offsets` 'The offsets (of one partition and offset block) inserted under it',
    COMMENT COLUMN `sink` 'The sink that claimed it (sink-<host>-<pid>)',
    COMMENT COLUMN `claimed_at` 'When it was claimed (UTC)';
