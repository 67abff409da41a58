-- Drift alerts raised by the drift monitor (schemas/DriftAlert.avsc), one row
-- per model version, feature, statistic and episode; the same events go to
-- the `drift-alerts` topic. alert_id is stable per episode, so a re-written
-- alert replaces itself.
CREATE TABLE IF NOT EXISTS {db}.drift_alerts
(
    alert_id      String,
    model_name    LowCardinality(String),
    model_version LowCardinality(String),
    feature       LowCardinality(String),
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC'),
    statistic     LowCardinality(String),  -- psi | stability
    value         Float64,
    threshold     Float64,
    reference     String,
    raised_at     DateTime64(3, 'UTC'),
    weighted_n    Float64,                 -- sum of inclusion weights in the window
    n             UInt64                   -- explanations in the window
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(raised_at)
ORDER BY (model_name, model_version, feature, statistic, alert_id);
