-- The decision store and the audit trail of answers join 050's rule: the sink writes
-- their rows' `sink_ledger` entries itself, after the insert into `decisions` or
-- `explain_answers` returned (jobs/sink/sink.py), instead of a view in the same insert.
-- Materialized-view pushes are not atomic (and run in parallel): a ledger row written by
-- a view could stand for a block its table never took, and the restarted sink would
-- skip those decisions for good.
DROP VIEW IF EXISTS {db}.decisions_ledger_mv;

DROP VIEW IF EXISTS {db}.explain_answers_ledger_mv;

ALTER TABLE {db}.sink_ledger
    MODIFY COMMENT 'Where every stored explanation, decision and answer was read: (topic, topic id, partition, offset, prediction_id), written by the sink under the insert''s deduplication token once the insert into explanations, decisions or explain_answers and all its views returned; a sink inserts only offsets not here';
