-- Features whose values the worker left out of an explanation by policy (the
-- model's registered list and the worker's --redact): their attributions.value
-- is NULL although the decision had a value. Rows inserted before read [].
ALTER TABLE {db}.explanations
    ADD COLUMN IF NOT EXISTS redacted_features Array(String) DEFAULT [] AFTER reason_codes_version;
