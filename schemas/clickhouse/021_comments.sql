-- A comment on every table, view and column (system.tables.comment, system.columns.comment):
-- what analysts and auditors read in their SQL client. New tables and columns carry their own
-- (tests/test_clickhouse.py checks that none is without one).

ALTER TABLE {db}.explanations
    MODIFY COMMENT 'One row per explained decision (schemas/ExplanationEvent.avsc), written by whystream sink; ReplacingMergeTree by prediction_id (query with FINAL for exactly one)',
    COMMENT COLUMN `prediction_id` 'The decision\'s id, as in the PredictionEvent',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version that made the decision (content hash)',
    COMMENT COLUMN `explainer` 'Explainer that computed the attributions (TreeSHAP, or the fallback\'s name)',
    COMMENT COLUMN `explainer_version` 'Version of that explainer',
    COMMENT COLUMN `event_time` 'When the decision was made (UTC, ms); minute buckets of the aggregates use it',
    COMMENT COLUMN `explained_at` 'When the explanation was computed (UTC, ms)',
    COMMENT COLUMN `output_space` 'Space of base_value, raw_score and SHAP values (raw_margin: the model\'s raw score)',
    COMMENT COLUMN `base_value` 'Expected raw score over the background data: raw_score = base_value + sum(attributions.shap) for exact sources',
    COMMENT COLUMN `raw_score` 'The model\'s raw score for this decision',
    COMMENT COLUMN `attributions.feature` 'Feature name, one per model feature, in model order',
    COMMENT COLUMN `attributions.value` 'The feature\'s value (NULL: missing, or redacted: see redacted_features)',
    COMMENT COLUMN `attributions.shap` 'The feature\'s SHAP attribution to raw_score',
    COMMENT COLUMN `top_reasons.feature` 'Features pushing toward the decision taken, strongest first (at most 5)',
    COMMENT COLUMN `top_reasons.value` 'Their values (NULL: missing or redacted)',
    COMMENT COLUMN `top_reasons.shap` 'Their SHAP attributions',
    COMMENT COLUMN `score` 'The model\'s score (probability for classifiers)',
    COMMENT COLUMN `decision` 'The decision label the producer reported (e.g. approve, decline, review)',
    COMMENT COLUMN `threshold` 'Decision threshold in score space',
    COMMENT COLUMN `sampling_reason` 'Why it was explained: ADVERSE, NEAR_THRESHOLD, FLAGGED, NEW_VERSION (priority, weight 1), RESERVOIR (sampled), ON_DEMAND',
    COMMENT COLUMN `inclusion_weight` '1 / probability of being explained: weighted sums estimate population totals',
    COMMENT COLUMN `stratum` 'Sampling stratum (the segment attribute, default channel; other: strata beyond the cap)',
    COMMENT COLUMN `source` 'LIVE (TreeSHAP now), CACHE (TreeSHAP, from the shared cache) or FALLBACK (approximate; kept out of the drift aggregates)',
    COMMENT COLUMN `cached` 'False when explained while the shared cache (Redis) was unavailable',
    COMMENT COLUMN `latency_ms` 'Event time to explanation, ms',
    COMMENT COLUMN `worker` 'Worker that explained it (host:pid)',
    COMMENT COLUMN `explained_class` 'Class explained for a multiclass model (NULL otherwise)',
    COMMENT COLUMN `principal_reasons.code` 'Reason code of a principal reason of an adverse decision (at most 4, strongest first)',
    COMMENT COLUMN `principal_reasons.text` 'Its text from the model\'s reason-code table',
    COMMENT COLUMN `principal_reasons.feature` 'Its feature',
    COMMENT COLUMN `principal_reasons.value` 'The feature\'s value (NULL: missing or redacted)',
    COMMENT COLUMN `principal_reasons.shap` 'The feature\'s SHAP attribution',
    COMMENT COLUMN `reason_codes_version` 'Version of the reason-code table (\'\' without one)',
    COMMENT COLUMN `redacted_features` 'Features whose values were left out by policy (attributions kept)',
    COMMENT COLUMN `kafka_partition` 'Partition of the explanations topic the row was read from',
    COMMENT COLUMN `kafka_offset` 'Offset in that partition',
    COMMENT COLUMN `inserted_at` 'When the sink inserted the row (UTC, ms)';

ALTER TABLE {db}.model_reference
    MODIFY COMMENT 'SHAP reference of each registered model version, one row per feature: bins, reference histogram, moments and quantiles (written once per version by register_reference)',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version',
    COMMENT COLUMN `feature` 'Feature name',
    COMMENT COLUMN `feature_index` 'Position of the feature in the model',
    COMMENT COLUMN `bin_edges` 'B+1 histogram edges, -inf .. +inf; bin k is [edge k, edge k+1)',
    COMMENT COLUMN `reference_hist` 'B proportions of the reference sample per bin, summing to 1',
    COMMENT COLUMN `reference_mean_abs_shap` 'Mean |SHAP| of the reference sample',
    COMMENT COLUMN `reference_mean_shap` 'Mean SHAP of the reference sample',
    COMMENT COLUMN `reference_mean_sq_shap` 'Mean SHAP^2 of the reference sample (0: registered before migration 008)',
    COMMENT COLUMN `quantile_levels` 'Levels of reference_quantiles (0.025 .. 0.975)',
    COMMENT COLUMN `reference_quantiles` 'SHAP quantiles of the reference sample at quantile_levels',
    COMMENT COLUMN `reference_quantiles_100` 'SHAP quantiles at the 100 midpoints 0.005 .. 0.995 ([] : registered before migration 020)',
    COMMENT COLUMN `n_reference` 'Reference sample size (held-out rows)',
    COMMENT COLUMN `threshold` 'The model\'s decision threshold',
    COMMENT COLUMN `registered_at` 'When the reference was stored (UTC)';

ALTER TABLE {db}.attribution_hist
    MODIFY COMMENT 'Attribution histograms per model version, feature, minute, reference bin and stratum: exact (LIVE, CACHE), finite attributions only since migration 020; SummingMergeTree: read with sum() ... GROUP BY',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version',
    COMMENT COLUMN `feature` 'Feature name',
    COMMENT COLUMN `minute` 'Minute of the decisions\' event time (UTC)',
    COMMENT COLUMN `bin` 'Reference bin 0 .. B-1 (model_reference.bin_edges)',
    COMMENT COLUMN `stratum` 'Sampling stratum (\'\' for rows written before migration 020)',
    COMMENT COLUMN `weight` 'Sum of inclusion weights: estimated decisions in the bin',
    COMMENT COLUMN `n` 'Explanations in the bin';

ALTER TABLE {db}.attribution_stats
    MODIFY COMMENT 'Weighted moments and t-digest of exact, finite SHAP attributions per model version, feature, minute and stratum; AggregatingMergeTree: read with sum() and quantilesTDigestWeightedMerge',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version',
    COMMENT COLUMN `feature` 'Feature name',
    COMMENT COLUMN `minute` 'Minute of the decisions\' event time (UTC)',
    COMMENT COLUMN `stratum` 'Sampling stratum (\'\' for rows written before migration 020)',
    COMMENT COLUMN `n` 'Explanations',
    COMMENT COLUMN `weight` 'Sum of inclusion weights w: estimated decisions',
    COMMENT COLUMN `weight_sq` 'Sum of w^2: effective sample size = weight^2 / weight_sq (Kish)',
    COMMENT COLUMN `sum_shap` 'Sum of w * SHAP',
    COMMENT COLUMN `sum_abs_shap` 'Sum of w * |SHAP|',
    COMMENT COLUMN `sum_sq_shap` 'Sum of w * SHAP^2',
    COMMENT COLUMN `shap_quantiles` 't-digest state of SHAP weighted by round(1000 * w)';

ALTER TABLE {db}.engine_stats
    MODIFY COMMENT 'Explanation health per model version, minute, sampling reason and source: counts, weights, cache outages, latency; AggregatingMergeTree',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version',
    COMMENT COLUMN `minute` 'Minute of the decisions\' event time (UTC)',
    COMMENT COLUMN `sampling_reason` 'Why the decisions were explained (explanations.sampling_reason)',
    COMMENT COLUMN `source` 'LIVE, CACHE or FALLBACK',
    COMMENT COLUMN `n` 'Explanations',
    COMMENT COLUMN `weight` 'Sum of inclusion weights: estimated decisions seen',
    COMMENT COLUMN `uncached` 'Explained while the shared cache was unavailable',
    COMMENT COLUMN `latency_sum` 'Sum of latency_ms',
    COMMENT COLUMN `latency_max` 'Largest latency_ms',
    COMMENT COLUMN `latency` 't-digest state of latency_ms';

ALTER TABLE {db}.drift_alerts
    MODIFY COMMENT 'Drift alerts raised by the drift monitor, one per model version, feature, statistic and episode (also on the drift-alerts topic, schemas/DriftAlert.avsc)',
    COMMENT COLUMN `alert_id` 'Stable id of the episode: model, version, feature, statistic, raise time',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version',
    COMMENT COLUMN `feature` 'Feature whose attribution distribution moved',
    COMMENT COLUMN `window_start` 'Start of the window judged (event time, UTC)',
    COMMENT COLUMN `window_end` 'End of the window judged (exclusive): the last complete minute before the reservoir window',
    COMMENT COLUMN `statistic` 'psi, ks, stability or wasserstein',
    COMMENT COLUMN `value` 'The statistic\'s value in the window',
    COMMENT COLUMN `threshold` 'What it had to exceed: max(minimum effect size, critical value for the effective sample size)',
    COMMENT COLUMN `reference` 'What it was compared with (registry:<version>)',
    COMMENT COLUMN `raised_at` 'When the alert was raised (UTC)',
    COMMENT COLUMN `weighted_n` 'Sum of inclusion weights of the feature\'s exact explanations in the window',
    COMMENT COLUMN `n` 'Exact explanations of the feature in the window',
    COMMENT COLUMN `effective_n` 'Kish effective sample size of the window (0: raised before migration 020)',
    COMMENT COLUMN `fallback_share` 'Share of the version\'s explanations in the window that were FALLBACK (not in the statistics)';

ALTER TABLE {db}.attribution_hist_hourly
    MODIFY COMMENT 'attribution_hist rolled up per hour (drift views read whole hours here); SummingMergeTree: read with sum() ... GROUP BY',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version',
    COMMENT COLUMN `feature` 'Feature name',
    COMMENT COLUMN `bin` 'Reference bin 0 .. B-1 (model_reference.bin_edges)',
    COMMENT COLUMN `stratum` 'Sampling stratum (\'\' for rows written before migration 020)',
    COMMENT COLUMN `weight` 'Sum of inclusion weights: estimated decisions in the bin',
    COMMENT COLUMN `n` 'Explanations in the bin',
    COMMENT COLUMN `hour` 'Hour of the decisions\' event time (UTC)';

ALTER TABLE {db}.attribution_stats_hourly
    MODIFY COMMENT 'attribution_stats rolled up per hour (drift views read whole hours here); AggregatingMergeTree',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version',
    COMMENT COLUMN `feature` 'Feature name',
    COMMENT COLUMN `stratum` 'Sampling stratum (\'\' for rows written before migration 020)',
    COMMENT COLUMN `n` 'Explanations',
    COMMENT COLUMN `weight` 'Sum of inclusion weights w: estimated decisions',
    COMMENT COLUMN `weight_sq` 'Sum of w^2: effective sample size = weight^2 / weight_sq (Kish)',
    COMMENT COLUMN `sum_shap` 'Sum of w * SHAP',
    COMMENT COLUMN `sum_abs_shap` 'Sum of w * |SHAP|',
    COMMENT COLUMN `sum_sq_shap` 'Sum of w * SHAP^2',
    COMMENT COLUMN `shap_quantiles` 't-digest state of SHAP weighted by round(1000 * w)',
    COMMENT COLUMN `hour` 'Hour of the decisions\' event time (UTC)';

ALTER TABLE {db}.schema_migrations
    MODIFY COMMENT 'ClickHouse migrations applied (schemas/clickhouse/NNN_name.sql)',
    COMMENT COLUMN `version` 'Migration number',
    COMMENT COLUMN `name` 'Migration name',
    COMMENT COLUMN `checksum` 'sha256 prefix of the file as applied',
    COMMENT COLUMN `applied_at` 'When it was applied (UTC)';

ALTER TABLE {db}.attribution_hist_hourly_mv
    MODIFY COMMENT 'Rolls each block written to attribution_hist up into attribution_hist_hourly',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version',
    COMMENT COLUMN `feature` 'Feature name',
    COMMENT COLUMN `bin` 'Reference bin 0 .. B-1 (model_reference.bin_edges)',
    COMMENT COLUMN `stratum` 'Sampling stratum (\'\' for rows written before migration 020)',
    COMMENT COLUMN `weight` 'Sum of inclusion weights: estimated decisions in the bin',
    COMMENT COLUMN `n` 'Explanations in the bin',
    COMMENT COLUMN `hour` 'Hour of the decisions\' event time (UTC)';

ALTER TABLE {db}.attribution_stats_hourly_mv
    MODIFY COMMENT 'Rolls each block written to attribution_stats up into attribution_stats_hourly',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version',
    COMMENT COLUMN `feature` 'Feature name',
    COMMENT COLUMN `stratum` 'Sampling stratum (\'\' for rows written before migration 020)',
    COMMENT COLUMN `n` 'Explanations',
    COMMENT COLUMN `weight` 'Sum of inclusion weights w: estimated decisions',
    COMMENT COLUMN `weight_sq` 'Sum of w^2: effective sample size = weight^2 / weight_sq (Kish)',
    COMMENT COLUMN `sum_shap` 'Sum of w * SHAP',
    COMMENT COLUMN `sum_abs_shap` 'Sum of w * |SHAP|',
    COMMENT COLUMN `sum_sq_shap` 'Sum of w * SHAP^2',
    COMMENT COLUMN `shap_quantiles` 't-digest state of SHAP weighted by round(1000 * w)',
    COMMENT COLUMN `hour` 'Hour of the decisions\' event time (UTC)';

ALTER TABLE {db}.attribution_hist_mv
    MODIFY COMMENT 'Bins each inserted explanation\'s exact, finite attributions on its version\'s reference bins into attribution_hist',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version',
    COMMENT COLUMN `feature` 'Feature name',
    COMMENT COLUMN `minute` 'Minute of the decisions\' event time (UTC)',
    COMMENT COLUMN `bin` 'Reference bin 0 .. B-1 (model_reference.bin_edges)',
    COMMENT COLUMN `stratum` 'Sampling stratum (\'\' for rows written before migration 020)',
    COMMENT COLUMN `weight` 'Sum of inclusion weights: estimated decisions in the bin',
    COMMENT COLUMN `n` 'Explanations in the bin';

ALTER TABLE {db}.attribution_stats_mv
    MODIFY COMMENT 'Aggregates each inserted explanation\'s exact, finite attributions into attribution_stats',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version',
    COMMENT COLUMN `feature` 'Feature name',
    COMMENT COLUMN `minute` 'Minute of the decisions\' event time (UTC)',
    COMMENT COLUMN `stratum` 'Sampling stratum (\'\' for rows written before migration 020)',
    COMMENT COLUMN `n` 'Explanations',
    COMMENT COLUMN `weight` 'Sum of inclusion weights w: estimated decisions',
    COMMENT COLUMN `weight_sq` 'Sum of w^2: effective sample size = weight^2 / weight_sq (Kish)',
    COMMENT COLUMN `sum_shap` 'Sum of w * SHAP',
    COMMENT COLUMN `sum_abs_shap` 'Sum of w * |SHAP|',
    COMMENT COLUMN `sum_sq_shap` 'Sum of w * SHAP^2',
    COMMENT COLUMN `shap_quantiles` 't-digest state of SHAP weighted by round(1000 * w)';

ALTER TABLE {db}.engine_stats_mv
    MODIFY COMMENT 'Aggregates each inserted explanation into engine_stats',
    COMMENT COLUMN `model_name` 'Registered model name',
    COMMENT COLUMN `model_version` 'Registered model version',
    COMMENT COLUMN `minute` 'Minute of the decisions\' event time (UTC)',
    COMMENT COLUMN `sampling_reason` 'Why the decisions were explained (explanations.sampling_reason)',
    COMMENT COLUMN `source` 'LIVE, CACHE or FALLBACK',
    COMMENT COLUMN `n` 'Explanations',
    COMMENT COLUMN `weight` 'Sum of inclusion weights: estimated decisions seen',
    COMMENT COLUMN `uncached` 'Explained while the shared cache was unavailable',
    COMMENT COLUMN `latency_sum` 'Sum of latency_ms',
    COMMENT COLUMN `latency_max` 'Largest latency_ms',
    COMMENT COLUMN `latency` 't-digest state of latency_ms';

ALTER TABLE {db}.feature_drift MODIFY COMMENT 'feature_drift(model, start, end): attribution drift per model version and feature over all strata (feature_drift_by_stratum with stratum = \'*\')';

ALTER TABLE {db}.feature_drift_by_stratum MODIFY COMMENT 'feature_drift_by_stratum(model, start, end, stratum): PSI, KS, stability, Wasserstein-1, effective n and fallback share per model version and feature of one stratum (\'*\': all)';

ALTER TABLE {db}.top_features MODIFY COMMENT 'top_features(model, start, end): features of each model version by weighted mean |SHAP|';

ALTER TABLE {db}.engine_health MODIFY COMMENT 'engine_health(model, start, end, bucket_seconds): coverage, fallback and cache-hit rates, latency per model version and bucket';
