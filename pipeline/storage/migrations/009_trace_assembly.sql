-- What a trace's assembly waited for, and why a version was re-opened (`evalstream why`); a span's
-- OpenTelemetry kind (client and producer spans are the remote calls a trace waits for).

ALTER TABLE {db}.traces ADD COLUMN IF NOT EXISTS waited_for String AFTER closed_at, ADD COLUMN IF NOT EXISTS reopened_by String AFTER waited_for, ADD COLUMN IF NOT EXISTS late_by_s Nullable(Float64) AFTER reopened_by;

ALTER TABLE {db}.spans ADD COLUMN IF NOT EXISTS kind LowCardinality(String) AFTER span_type;

-- Re-opened versions per minute, project and rule: versions after the first that a rule decided on. Many
-- of them mean the waits (quiet_period_s, remote_wait_s) are shorter than the senders' export delays.
CREATE TABLE IF NOT EXISTS {db}.rollup_reopened_minute (
    minute DateTime,
    project LowCardinality(String),
    rule LowCardinality(String),
    versions AggregateFunction(uniqExact, String)
) ENGINE = AggregatingMergeTree
ORDER BY (minute, project, rule)
TTL minute + INTERVAL {ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_reopened_minute_mv TO {db}.rollup_reopened_minute AS
SELECT toStartOfMinute(decided_at) AS minute, project, rule,
       uniqExactState(concat(trace_id, ':', toString(trace_version))) AS versions
FROM {db}.decisions WHERE trace_version > 1 GROUP BY minute, project, rule;

INSERT INTO {db}.rollup_reopened_minute
SELECT toStartOfMinute(decided_at) AS minute, project, rule,
       uniqExactState(concat(trace_id, ':', toString(trace_version)))
FROM {db}.decisions WHERE trace_version > 1 GROUP BY minute, project, rule;
