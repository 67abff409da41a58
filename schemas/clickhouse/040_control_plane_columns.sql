-- ExplanationEvent version 3. `cached` never meant "served from the cache" but "Redis was
-- reachable": the column is renamed redis_available, and `cached` stays readable as an
-- ALIAS of it (queries written before keep working; inserts name redis_available).
-- role / champion_prediction_id: champion vs challenger shadow explanations; request_id:
-- answers to explain requests. Rows written before read CHAMPION, '' and ''.
ALTER TABLE {db}.explanations RENAME COLUMN IF EXISTS cached TO redis_available;
ALTER TABLE {db}.explanations
    COMMENT COLUMN redis_available 'True when Redis (shared cache and dedup) was reachable for this explanation; not whether it came from the cache (source = CACHE says that). Called cached before ExplanationEvent v3';
ALTER TABLE {db}.explanations
    ADD COLUMN IF NOT EXISTS cached Bool ALIAS redis_available COMMENT 'Old name of redis_available (read only): kept for queries written before ExplanationEvent v3',
    ADD COLUMN IF NOT EXISTS role LowCardinality(String) DEFAULT 'CHAMPION' COMMENT 'CHAMPION: the version that took the decision; CHALLENGER: a shadow explanation of the same decision by a challenger version' AFTER redacted_features,
    ADD COLUMN IF NOT EXISTS champion_prediction_id String DEFAULT '' COMMENT 'role = CHALLENGER: prediction_id of the decision (and champion explanation) it pairs with; empty otherwise' AFTER role,
    ADD COLUMN IF NOT EXISTS request_id String DEFAULT '' COMMENT 'Answers to an ExplainRequest (sampling_reason ON_DEMAND): its request_id; empty otherwise' AFTER champion_prediction_id;
