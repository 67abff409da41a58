-- attribution_hist_mv joins each explanation with its version's reference once (was: once per
-- attribution, after the ARRAY JOIN: 39 probes of a three-string key per explanation of a
-- 39-feature model). The reference comes as the version's bin edges in model order; an
-- explanation whose attributions are in that order (every worker's) takes them as they are,
-- any other order looks each feature up. A feature the reference lacks has no edges and no
-- histogram row, as before (the old inner join). The rows it writes are the same
-- (tests/jobs/analytics/test_clickhouse.py: test_histograms_*).
ALTER TABLE {db}.attribution_hist_mv MODIFY QUERY
SELECT
    model_name,
    model_version,
    feature,
    minute,
    toUInt16(arrayCount(edge -> edge <= shap, edges) - 1) AS bin,
    stratum,
    sum(weight) AS weight,
    count() AS n
FROM
(
    SELECT e.model_name AS model_name, e.model_version AS model_version, toStartOfMinute(e.event_time) AS minute,
           e.stratum AS stratum, e.inclusion_weight AS weight, e.attributions.feature AS features,
           e.attributions.shap AS shaps,
           if(e.attributions.feature = r.features, r.all_edges,
              arrayMap(f -> r.all_edges[indexOf(r.features, f)], e.attributions.feature)) AS feature_edges
    FROM {db}.explanations AS e
    INNER JOIN
    (
        SELECT model_name, model_version, arraySort(x -> x.1, groupArray((feature_index, feature, bin_edges))) AS ordered,
               arrayMap(x -> x.2, ordered) AS features, arrayMap(x -> x.3, ordered) AS all_edges
        FROM {db}.model_reference FINAL
        GROUP BY model_name, model_version
    ) AS r ON e.model_name = r.model_name AND e.model_version = r.model_version
    WHERE e.source IN ('LIVE', 'CACHE') AND isFinite(e.inclusion_weight) AND e.inclusion_weight > 0
)
ARRAY JOIN features AS feature, shaps AS shap, feature_edges AS edges
WHERE isFinite(shap) AND notEmpty(edges)
GROUP BY model_name, model_version, feature, minute, bin, stratum;

-- MODIFY QUERY drops the view's column comments: the same ones again (021).
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
