-- Alerts became incidents: each row is one message (firing, escalated, digest, resolved, test) of an
-- incident, with its level and the value it compared against the threshold. Every delivery attempt
-- (Slack's own 429 / 5xx retries included) is a row of alert_deliveries.

ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS incident_id String AFTER alert_id;
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS level LowCardinality(String) AFTER kind;
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS group_values Map(String, String) AFTER project;
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS measure LowCardinality(String) AFTER text;
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS observed Nullable(Float64) AFTER measure;
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS threshold Nullable(Float64) AFTER observed;
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS samples Nullable(UInt32) AFTER failures;
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS suppressed UInt32 AFTER samples;
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS window_start Nullable(DateTime64(6)) AFTER window_s;
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS incident_started Nullable(DateTime64(6)) AFTER window_start;
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS thread_ts String AFTER channel;

CREATE TABLE IF NOT EXISTS {db}.alert_deliveries (
    attempt_id String,
    alert_id String,
    incident_id String,
    alert_rule LowCardinality(String),
    kind LowCardinality(String),
    channel LowCardinality(String),
    at DateTime64(6),
    ok Bool,
    http_status Nullable(UInt16),
    error String,
    retry_after_s Nullable(Float64),
    ingested_at DateTime64(6) DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (alert_id, attempt_id)
TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;
