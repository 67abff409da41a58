-- Comments on the columns of the input-drift materialized views (the views' own comments are
-- in 030; ClickHouse takes column comments of a materialized view only by ALTER).

ALTER TABLE {db}.decision_stats_mv
    COMMENT COLUMN `model_name` 'model name',
    COMMENT COLUMN `model_version` 'model version',
    COMMENT COLUMN `minute` 'minute of the decisions\' event_time',
    COMMENT COLUMN `n` 'explanations',
    COMMENT COLUMN `weight` 'sum of inclusion weights: estimated decisions',
    COMMENT COLUMN `weight_sq` 'sum of squared inclusion weights',
    COMMENT COLUMN `adverse_weight` 'sum of inclusion weights of adverse decisions (sampling_reason ADVERSE: the worker\'s adverse labels)',
    COMMENT COLUMN `above_weight` 'sum of inclusion weights of decisions scored at or above their threshold',
    COMMENT COLUMN `below_weight` 'sum of inclusion weights of decisions scored at or below their threshold',
    COMMENT COLUMN `sum_score` 'sum of w * score',
    COMMENT COLUMN `sum_sq_score` 'sum of w * score^2';

ALTER TABLE {db}.input_hist_mv
    COMMENT COLUMN `model_name` 'model name',
    COMMENT COLUMN `model_version` 'model version',
    COMMENT COLUMN `feature` 'model feature',
    COMMENT COLUMN `minute` 'minute of the decisions\' event_time',
    COMMENT COLUMN `missing` 'true: the value was missing (null, not redacted); bin is then 0',
    COMMENT COLUMN `bin` 'value bin on input_reference.bin_edges',
    COMMENT COLUMN `weight` 'sum of inclusion weights: estimated decisions',
    COMMENT COLUMN `weight_sq` 'sum of squared inclusion weights (effective sample size)',
    COMMENT COLUMN `n` 'explanations';

ALTER TABLE {db}.score_hist_mv
    COMMENT COLUMN `model_name` 'model name',
    COMMENT COLUMN `model_version` 'model version',
    COMMENT COLUMN `minute` 'minute of the decisions\' event_time',
    COMMENT COLUMN `bin` 'score bin on score_reference.bin_edges',
    COMMENT COLUMN `weight` 'sum of inclusion weights: estimated decisions',
    COMMENT COLUMN `n` 'explanations';
