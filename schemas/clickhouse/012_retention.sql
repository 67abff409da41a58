-- Retention for audits (defaults; `whystream sink` applies WHYSTREAM_RETENTION_*,
-- see jobs/retention.py). Priority explanations (ADVERSE, NEAR_THRESHOLD, FLAGGED,
-- NEW_VERSION, ON_DEMAND: the adverse-action records) are kept 762 days (any 25
-- calendar months: US Reg B), sampled (RESERVOIR) ones 90 days; the aggregates
-- 90 days, never longer than the raw rows they were built from, so re-reading
-- an explanation can always be checked against what is stored. Rows expire one
-- by one (ttl_only_drop_parts = 0): a day's part holds both kinds.
ALTER TABLE {db}.explanations MODIFY SETTING ttl_only_drop_parts = 0;
ALTER TABLE {db}.explanations
    MODIFY TTL addDays(toDateTime(event_time), if(sampling_reason = 'RESERVOIR', 90, 762));
