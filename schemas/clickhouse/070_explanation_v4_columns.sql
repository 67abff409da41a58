-- ExplanationEvent version 4 (issue 25): the strongest features toward the adverse outcome
-- for every decision (approvals too), the score check (the registered model's own score of
-- the event's features and whether the producer's score is off it by more than the
-- tolerance), when the broker received the decision, and for answers to explain requests
-- who asked and where the features came from. Rows written before read [], NULL, false, ''.
ALTER TABLE {db}.explanations
    ADD COLUMN IF NOT EXISTS adverse_reasons Nested
    (
        feature LowCardinality(String),
        value   Nullable(Float64),
        shap    Float64
    ) AFTER request_id,
    ADD COLUMN IF NOT EXISTS requested_by String DEFAULT '' AFTER `adverse_reasons.shap`,
    ADD COLUMN IF NOT EXISTS received_at Nullable(DateTime64(3, 'UTC')) AFTER requested_by,
    ADD COLUMN IF NOT EXISTS model_score Nullable(Float64) AFTER received_at,
    ADD COLUMN IF NOT EXISTS score_mismatch Bool DEFAULT false AFTER model_score,
    ADD COLUMN IF NOT EXISTS features_source LowCardinality(String) DEFAULT '' AFTER score_mismatch;
ALTER TABLE {db}.explanations
    COMMENT COLUMN `adverse_reasons.feature` 'Features pushing toward the adverse outcome, strongest first (at most 5), for every decision: what almost made an approval a decline; the top reasons of an adverse decision',
    COMMENT COLUMN `adverse_reasons.value` 'Their values (NULL: missing or redacted)',
    COMMENT COLUMN `adverse_reasons.shap` 'Their SHAP attributions',
    COMMENT COLUMN requested_by 'Answers to an ExplainRequest: who asked (its requested_by); empty otherwise',
    COMMENT COLUMN received_at 'When the broker received the decision''s PredictionEvent (the Kafka message timestamp, UTC); NULL when unknown or before ExplanationEvent v4. explained_at - received_at: latency from broker receipt',
    COMMENT COLUMN model_score 'The registered model version''s own score of the event''s features, in the producer''s score space (recomputed by the worker); NULL before ExplanationEvent v4',
    COMMENT COLUMN score_mismatch 'True when |model_score - score| exceeded the worker''s tolerance for the objective (WHYSTREAM_SCORE_TOLERANCE): the producer''s score is not this version''s score of these features',
    COMMENT COLUMN features_source 'Answers: where the explained feature values came from (explanations, predictions, store); empty for the stream''s own explanations';
