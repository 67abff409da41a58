-- Score and decline-rate drift over every decision (issue 25), not a sample: the same
-- figures as decision_drift, read from the decision store (`decisions`, migration 072)
-- with weight 1 each instead of from the explanations' inclusion weights. n is the count
-- of decisions; effective_n equals it. adverse_rate counts the workers' default adverse
-- labels (decline, review; case-insensitive). Call as
-- decision_drift_all(model = ..., start = ..., end = ...).
CREATE VIEW IF NOT EXISTS {db}.decision_drift_all AS
WITH
    reference AS
    (
        SELECT model_version, bin_edges, reference_hist, threshold, adverse_direction, reference_mean, reference_decline
        FROM {db}.score_reference FINAL WHERE model_name = {model:String}
    ),
    window_rows AS
    (
        SELECT d.model_version AS model_version, d.score AS score, lower(d.decision) IN ('decline', 'review') AS adverse,
               r.model_version != '' AS has_reference, r.bin_edges AS bin_edges,
               if(has_reference AND isFinite(r.threshold),
                  toFloat64(if(r.adverse_direction < 0, d.score <= d.threshold, d.score >= d.threshold)), nan) AS declined
        FROM {db}.decisions AS d
        LEFT JOIN reference AS r ON r.model_version = d.model_version
        WHERE d.model_name = {model:String}
          AND d.event_time >= toStartOfMinute({start:DateTime64(3, 'UTC')}) AND d.event_time < {end:DateTime64(3, 'UTC')}
          AND isFinite(d.score)
    ),
    window_stats AS
    (
        SELECT model_version, count() AS n, avg(score) AS mean_score, avg(adverse) AS adverse_rate,
               max(has_reference) AS has_reference, avg(declined) AS decline_rate
        FROM window_rows GROUP BY model_version
    ),
    window_hist AS
    (
        SELECT model_version, toUInt16(arrayCount(edge -> edge <= score, bin_edges) - 1) AS bin, count() AS c
        FROM window_rows WHERE has_reference
        GROUP BY model_version, bin
    ),
    hist_total AS (SELECT model_version, sum(c) AS total FROM window_hist GROUP BY model_version),
    reference_bins AS
    (
        SELECT model_version, toUInt16(b - 1) AS bin, reference_hist[b] AS p_ref
        FROM reference ARRAY JOIN arrayEnumerate(reference_hist) AS b
    ),
    psi AS
    (
        SELECT rb.model_version AS model_version,
               sum((greatest(coalesce(h.c, 0) / t.total, 1e-4) - greatest(rb.p_ref, 1e-4))
                   * log(greatest(coalesce(h.c, 0) / t.total, 1e-4) / greatest(rb.p_ref, 1e-4))) AS score_psi
        FROM reference_bins AS rb
        INNER JOIN hist_total AS t ON t.model_version = rb.model_version
        LEFT JOIN window_hist AS h ON h.model_version = rb.model_version AND h.bin = rb.bin
        GROUP BY rb.model_version
    )
SELECT
    s.model_version AS model_version,
    s.n AS n,
    toFloat64(s.n) AS weighted_n,
    toFloat64(s.n) AS effective_n,
    s.mean_score AS mean_score,
    s.adverse_rate AS adverse_rate,
    s.decline_rate AS decline_rate,
    if(s.has_reference, p.score_psi, nan) AS score_psi,
    if(s.has_reference, r.reference_mean, nan) AS reference_mean_score,
    if(s.has_reference, r.reference_decline, nan) AS reference_decline
FROM window_stats AS s
LEFT JOIN reference AS r ON r.model_version = s.model_version
LEFT JOIN psi AS p ON p.model_version = s.model_version
ORDER BY s.model_version
COMMENT 'Score and decision drift per model version over [start, end) from every stored decision (the decision store), not the explanations'' sample: score PSI, mean score, decline rate and adverse-label rate against the reference (call as decision_drift_all(model = ..., start = ..., end = ...))';
