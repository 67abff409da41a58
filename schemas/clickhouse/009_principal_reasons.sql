-- ExplanationEvent version 2: which class a multiclass decision was explained for, the
-- principal reasons of adverse decisions (code and text from the model's reason-code
-- table, at most four, strongest first) and the version of that table. Rows written
-- before this migration read NULL, empty arrays and ''.
ALTER TABLE {db}.explanations
    ADD COLUMN IF NOT EXISTS explained_class Nullable(Int32) AFTER worker,
    ADD COLUMN IF NOT EXISTS principal_reasons Nested
    (
        code    LowCardinality(String),
        text    String,
        feature LowCardinality(String),
        value   Nullable(Float64),
        shap    Float64
    ) AFTER explained_class,
    ADD COLUMN IF NOT EXISTS reason_codes_version LowCardinality(String) DEFAULT '' AFTER principal_reasons;
