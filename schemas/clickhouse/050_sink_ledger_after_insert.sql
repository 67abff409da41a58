-- The sink writes `sink_ledger` itself, after an insert into `explanations` returned (jobs/sink/ledger.py),
-- instead of sink_ledger_mv in the same insert: materialized-view pushes are not atomic (and run in
-- parallel), so a view could take a block whose insert failed in another view, and a restarted sink
-- would take the unit for stored. Written after the insert, a ledger row means every view has the rows;
-- a unit missing from it is inserted again under the same deduplication token, which each table and
-- view takes once (deduplicate_blocks_in_dependent_materialized_views).
DROP VIEW IF EXISTS {db}.sink_ledger_mv;

ALTER TABLE {db}.sink_ledger
    MODIFY COMMENT 'Where every stored explanation was read: (topic, topic id, partition, offset, prediction_id), written by the sink under the insert''s deduplication token once the insert into explanations and all its views returned; a sink inserts only offsets not here';
