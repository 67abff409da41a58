-- Champion vs challenger on the same decisions: each champion explanation joined with the
-- challenger's shadow explanation of that decision (champion_prediction_id). The challenger's
-- attributions are aligned to the champion's feature order by name (0 for a feature the
-- challenger does not have). `whystream compare NAME` and the report read the two summaries.
CREATE VIEW IF NOT EXISTS {db}.champion_challenger_pairs
(
    model_name String COMMENT 'Registered model name',
    champion_version String COMMENT 'The champion version that explained the decision',
    challenger_version String COMMENT 'The challenger version that shadowed it',
    prediction_id String COMMENT 'The decision (the champion explanation''s prediction_id)',
    event_time DateTime64(3, 'UTC') COMMENT 'Event time of the decision (UTC)',
    champion_score Float64 COMMENT 'The champion''s score',
    challenger_score Float64 COMMENT 'The challenger''s own score of the same features',
    champion_raw_score Float64 COMMENT 'The champion''s raw margin',
    challenger_raw_score Float64 COMMENT 'The challenger''s raw margin',
    champion_top_reason String COMMENT 'The champion''s first top reason (feature)',
    challenger_top_reason String COMMENT 'The challenger''s first top reason (feature)',
    features Array(String) COMMENT 'The champion''s features, in model order',
    champion_shap Array(Float64) COMMENT 'The champion''s attributions, in the order of features',
    challenger_shap Array(Float64) COMMENT 'The challenger''s attributions, in the order of features (0 where it lacks the feature)'
)
AS SELECT
    c.model_name AS model_name,
    c.model_version AS champion_version,
    h.model_version AS challenger_version,
    c.prediction_id AS prediction_id,
    c.event_time AS event_time,
    c.score AS champion_score,
    h.score AS challenger_score,
    c.raw_score AS champion_raw_score,
    h.raw_score AS challenger_raw_score,
    c.top_reasons.feature[1] AS champion_top_reason,
    h.top_reasons.feature[1] AS challenger_top_reason,
    CAST(c.attributions.feature, 'Array(String)') AS features,
    c.attributions.shap AS champion_shap,
    arrayMap(f -> h.attributions.shap[indexOf(h.attributions.feature, f)], c.attributions.feature) AS challenger_shap
FROM (SELECT * FROM {db}.explanations FINAL WHERE role = 'CHAMPION') AS c
INNER JOIN (SELECT * FROM {db}.explanations FINAL WHERE role = 'CHALLENGER') AS h
    ON h.model_name = c.model_name AND h.champion_prediction_id = c.prediction_id
COMMENT 'One row per decision explained by both the champion and a challenger: scores, raw scores, top reasons and attributions side by side (challenger attributions in the champion''s feature order)';

CREATE VIEW IF NOT EXISTS {db}.champion_challenger
(
    model_name String COMMENT 'Registered model name',
    champion_version String COMMENT 'The champion version that explained the decision',
    challenger_version String COMMENT 'The challenger version that shadowed it',
    decisions UInt64 COMMENT 'Decisions explained by both',
    top_reason_agreement Float64 COMMENT 'Share of those decisions whose first top reason is the same feature',
    mean_score_difference Float64 COMMENT 'Mean of challenger score minus champion score',
    mean_abs_score_difference Float64 COMMENT 'Mean absolute score difference',
    max_abs_score_difference Float64 COMMENT 'Largest absolute score difference'
)
AS SELECT
    model_name, champion_version, challenger_version,
    count() AS decisions,
    avg(champion_top_reason = challenger_top_reason) AS top_reason_agreement,
    avg(challenger_score - champion_score) AS mean_score_difference,
    avg(abs(challenger_score - champion_score)) AS mean_abs_score_difference,
    max(abs(challenger_score - champion_score)) AS max_abs_score_difference
FROM {db}.champion_challenger_pairs
GROUP BY model_name, champion_version, challenger_version
COMMENT 'Per model, champion and challenger version, over the decisions both explained: how often their top reason is the same feature, and the challenger''s score minus the champion''s (mean, mean absolute, largest absolute)';

CREATE VIEW IF NOT EXISTS {db}.champion_challenger_features
(
    model_name String COMMENT 'Registered model name',
    champion_version String COMMENT 'The champion version that explained the decision',
    challenger_version String COMMENT 'The challenger version that shadowed it',
    feature String COMMENT 'Feature name',
    decisions UInt64 COMMENT 'Decisions explained by both',
    champion_mean_shap Float64 COMMENT 'The champion''s mean attribution',
    challenger_mean_shap Float64 COMMENT 'The challenger''s mean attribution',
    champion_mean_abs_shap Float64 COMMENT 'The champion''s mean |attribution|',
    challenger_mean_abs_shap Float64 COMMENT 'The challenger''s mean |attribution|'
)
AS SELECT
    model_name, champion_version, challenger_version, feature,
    count() AS decisions,
    avg(champion) AS champion_mean_shap,
    avg(challenger) AS challenger_mean_shap,
    avg(abs(champion)) AS champion_mean_abs_shap,
    avg(abs(challenger)) AS challenger_mean_abs_shap
FROM {db}.champion_challenger_pairs
ARRAY JOIN features AS feature, champion_shap AS champion, challenger_shap AS challenger
GROUP BY model_name, champion_version, challenger_version, feature
COMMENT 'Per feature, over the decisions both explained: the champion''s and the challenger''s mean attribution and mean |attribution|';
