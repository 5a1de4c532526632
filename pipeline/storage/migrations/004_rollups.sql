-- Rollups for dashboards and daily questions, kept current by materialized views on insert.
-- Results are counted as distinct job ids (uniqExact states), so a message the sink stores twice
-- (at-least-once delivery) is not counted twice. Sums (tokens, cost, latency quantiles) are taken
-- as inserted; a redelivered batch, which only happens after a crash, can add to them twice.
-- A re-opened trace is stored again with all its spans as version 2, so the span rollup reads
-- version 1 only: spans that first arrived in a later version are left out of it.
-- Each rollup is filled from the existing rows once, when this migration runs.

CREATE TABLE IF NOT EXISTS {db}.rollup_rule_minute (
    minute DateTime,
    rule LowCardinality(String),
    scorer LowCardinality(String),
    project LowCardinality(String),
    results AggregateFunction(uniqExact, String),
    passes AggregateFunction(uniqExactIf, String, UInt8),
    failures AggregateFunction(uniqExactIf, String, UInt8),
    errors AggregateFunction(uniqExactIf, String, UInt8)
) ENGINE = AggregatingMergeTree
ORDER BY (rule, minute, scorer, project)
TTL minute + INTERVAL {ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_rule_minute_mv TO {db}.rollup_rule_minute AS
SELECT toStartOfMinute(scored_at) AS minute, rule, scorer, project,
       uniqExactState(job_id) AS results,
       uniqExactIfState(job_id, toUInt8(status = 'scored' AND ifNull(passed, false))) AS passes,
       uniqExactIfState(job_id, toUInt8(status = 'scored' AND NOT ifNull(passed, true))) AS failures,
       uniqExactIfState(job_id, toUInt8(status = 'error')) AS errors
FROM {db}.scores GROUP BY minute, rule, scorer, project;

INSERT INTO {db}.rollup_rule_minute
SELECT toStartOfMinute(scored_at) AS minute, rule, scorer, project,
       uniqExactState(job_id), uniqExactIfState(job_id, toUInt8(status = 'scored' AND ifNull(passed, false))),
       uniqExactIfState(job_id, toUInt8(status = 'scored' AND NOT ifNull(passed, true))),
       uniqExactIfState(job_id, toUInt8(status = 'error'))
FROM {db}.scores GROUP BY minute, rule, scorer, project;

CREATE TABLE IF NOT EXISTS {db}.rollup_agent_minute (
    minute DateTime,
    rule LowCardinality(String),
    agent_name String,
    model String,
    results AggregateFunction(uniqExact, String),
    failures AggregateFunction(uniqExactIf, String, UInt8),
    errors AggregateFunction(uniqExactIf, String, UInt8)
) ENGINE = AggregatingMergeTree
ORDER BY (minute, rule, agent_name, model)
TTL minute + INTERVAL {ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_agent_minute_mv TO {db}.rollup_agent_minute AS
SELECT toStartOfMinute(scored_at) AS minute, rule, agent_name, model,
       uniqExactState(job_id) AS results,
       uniqExactIfState(job_id, toUInt8(status = 'scored' AND NOT ifNull(passed, true))) AS failures,
       uniqExactIfState(job_id, toUInt8(status = 'error')) AS errors
FROM {db}.scores GROUP BY minute, rule, agent_name, model;

INSERT INTO {db}.rollup_agent_minute
SELECT toStartOfMinute(scored_at) AS minute, rule, agent_name, model, uniqExactState(job_id),
       uniqExactIfState(job_id, toUInt8(status = 'scored' AND NOT ifNull(passed, true))),
       uniqExactIfState(job_id, toUInt8(status = 'error'))
FROM {db}.scores GROUP BY minute, rule, agent_name, model;

CREATE TABLE IF NOT EXISTS {db}.rollup_span_latency_minute (
    minute DateTime,
    project LowCardinality(String),
    name String,
    span_type LowCardinality(String),
    spans AggregateFunction(count),
    span_errors AggregateFunction(countIf, UInt8),
    duration_q AggregateFunction(quantiles(0.5, 0.95), Float64)
) ENGINE = AggregatingMergeTree
ORDER BY (minute, project, name, span_type)
TTL minute + INTERVAL {ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_span_latency_minute_mv TO {db}.rollup_span_latency_minute AS
SELECT toStartOfMinute(start_time) AS minute, project, name, span_type, countState() AS spans,
       countIfState(toUInt8(status = 'error')) AS span_errors,
       quantilesState(0.5, 0.95)(duration_ms) AS duration_q
FROM {db}.spans WHERE trace_version = 1 GROUP BY minute, project, name, span_type;

INSERT INTO {db}.rollup_span_latency_minute
SELECT toStartOfMinute(start_time) AS minute, project, name, span_type, countState(),
       countIfState(toUInt8(status = 'error')), quantilesState(0.5, 0.95)(duration_ms)
FROM {db}.spans WHERE trace_version = 1 GROUP BY minute, project, name, span_type;

CREATE TABLE IF NOT EXISTS {db}.rollup_judge_hour (
    hour DateTime,
    rule LowCardinality(String),
    scorer LowCardinality(String),
    judge_model String,
    judgments AggregateFunction(uniqExact, String),
    input_tokens AggregateFunction(sum, UInt64),
    output_tokens AggregateFunction(sum, UInt64),
    cost_usd AggregateFunction(sum, Float64)
) ENGINE = AggregatingMergeTree
ORDER BY (hour, rule, scorer, judge_model)
TTL hour + INTERVAL {ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_judge_hour_mv TO {db}.rollup_judge_hour AS
SELECT toStartOfHour(scored_at) AS hour, rule, scorer, JSONExtractString(metadata, 'judge', 'model') AS judge_model,
       uniqExactState(job_id) AS judgments,
       sumState(JSONExtractUInt(metadata, 'judge', 'input_tokens')) AS input_tokens,
       sumState(JSONExtractUInt(metadata, 'judge', 'output_tokens')) AS output_tokens,
       sumState(JSONExtractFloat(metadata, 'judge', 'cost_usd')) AS cost_usd
FROM {db}.scores WHERE JSONHas(metadata, 'judge') GROUP BY hour, rule, scorer, judge_model;

INSERT INTO {db}.rollup_judge_hour
SELECT toStartOfHour(scored_at) AS hour, rule, scorer, JSONExtractString(metadata, 'judge', 'model') AS judge_model,
       uniqExactState(job_id), sumState(JSONExtractUInt(metadata, 'judge', 'input_tokens')),
       sumState(JSONExtractUInt(metadata, 'judge', 'output_tokens')),
       sumState(JSONExtractFloat(metadata, 'judge', 'cost_usd'))
FROM {db}.scores WHERE JSONHas(metadata, 'judge') GROUP BY hour, rule, scorer, judge_model;
