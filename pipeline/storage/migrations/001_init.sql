-- Every table is a ReplacingMergeTree keyed on the message's ids, so a redelivered message
-- (at-least-once) replaces its earlier row instead of adding one. Query with FINAL or through
-- the *_current views. Retention: {ttl_days} days after ingestion.

CREATE TABLE IF NOT EXISTS {db}.traces (
    trace_id String,
    version UInt32,
    project LowCardinality(String),
    status LowCardinality(String),
    close_reason LowCardinality(String),
    root_span_id String,
    name String,
    start_time DateTime64(6),
    end_time DateTime64(6),
    duration_ms Float64,
    span_count UInt32,
    error_count UInt32,
    agents Array(String),
    total_tokens UInt64,
    cost_usd Float64,
    closed_at DateTime64(6),
    ingested_at DateTime64(6) DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (trace_id, version)
TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;

CREATE TABLE IF NOT EXISTS {db}.spans (
    trace_id String,
    span_id String,
    trace_version UInt32,
    parent_span_id String,
    project LowCardinality(String),
    service String,
    name String,
    span_type LowCardinality(String),
    start_time DateTime64(6),
    end_time DateTime64(6),
    duration_ms Float64,
    status LowCardinality(String),
    error_type String,
    error_message String,
    agent_name String,
    agent_id String,
    session_id String,
    model String,
    input_tokens Nullable(UInt32),
    output_tokens Nullable(UInt32),
    total_tokens Nullable(UInt32),
    cost_usd Nullable(Float64),
    attributes String,
    inputs String,
    outputs String,
    ingested_at DateTime64(6) DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(trace_version)
ORDER BY (trace_id, span_id)
TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;

CREATE TABLE IF NOT EXISTS {db}.scores (
    job_id String,
    rule LowCardinality(String),
    scorer LowCardinality(String),
    scorer_version String,
    trace_id String,
    trace_version UInt32,
    span_id String,
    project LowCardinality(String),
    agent_name String,
    model String,
    status LowCardinality(String),
    value Nullable(Float64),
    label String,
    passed Nullable(Bool),
    threshold Nullable(Float64),
    reason String,
    criteria String,
    metadata String,
    error_type String,
    error_message String,
    attempts UInt16,
    latency_ms Float64,
    source LowCardinality(String),
    scored_at DateTime64(6),
    ingested_at DateTime64(6) DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (trace_id, rule, trace_version, job_id)
TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;

CREATE TABLE IF NOT EXISTS {db}.decisions (
    rule LowCardinality(String),
    trace_id String,
    trace_version UInt32,
    outcome LowCardinality(String),
    reason String,
    job_id String,
    project LowCardinality(String),
    source LowCardinality(String),
    decided_at DateTime64(6),
    ingested_at DateTime64(6) DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (trace_id, rule, trace_version, outcome)
TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;

CREATE TABLE IF NOT EXISTS {db}.alerts (
    alert_id String,
    alert_rule LowCardinality(String),
    kind LowCardinality(String),
    rule String,
    scorer String,
    project String,
    title String,
    text String,
    failures UInt32,
    window_s Nullable(Float64),
    trace_ids Array(String),
    fired_at DateTime64(6),
    channel LowCardinality(String),
    delivery_status LowCardinality(String),
    delivery_error String,
    delivery_attempts UInt16,
    ingested_at DateTime64(6) DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY alert_id
TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;

CREATE TABLE IF NOT EXISTS {db}.dead_letters (
    stage LowCardinality(String),
    source_topic LowCardinality(String),
    partition Int32,
    offset Int64,
    job_id String,
    key String,
    trace_id String,
    error_type LowCardinality(String),
    reason String,
    payload_size UInt64,
    payload_excerpt String,
    at DateTime64(6),
    ingested_at DateTime64(6) DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (stage, source_topic, partition, offset, job_id)
TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;

-- The newest version of each trace, and the current score / decision per (rule, trace).
CREATE VIEW IF NOT EXISTS {db}.traces_current AS
SELECT * FROM {db}.traces FINAL ORDER BY version DESC LIMIT 1 BY trace_id;

CREATE VIEW IF NOT EXISTS {db}.scores_current AS
SELECT * FROM {db}.scores FINAL ORDER BY trace_version DESC, ingested_at DESC LIMIT 1 BY rule, trace_id, span_id;

CREATE VIEW IF NOT EXISTS {db}.decisions_current AS
SELECT * FROM {db}.decisions FINAL
ORDER BY trace_version DESC, outcome IN ('scored', 'failed') DESC, decided_at DESC
LIMIT 1 BY rule, trace_id;
