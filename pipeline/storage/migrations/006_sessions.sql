-- Sessions (multi-turn conversations, evalstream.sessions.v1) and what session rules made of them.
--
-- `sessions` has one row per session version. While a conversation runs, the session assembler
-- sends `open` snapshots of the version it is building (one after each new turn); the closed
-- version comes last. They share (session_id, version), and `revision` (2 x turns, + 1 once closed)
-- decides which row stays: the closed version replaces its open snapshots, a later snapshot an
-- earlier one, and a redelivered old snapshot never wins. The clocks of the workers that took the
-- snapshots play no part. `session_turns` has one row per turn of each version (turn = 1-based
-- position in turn order), replaced the same way.
-- `session_scores` holds session rules' results: the looks after each turn (final = false; passed
-- NULL: no verdict yet, keep going) and the closing verdict (final = true). `session_decisions` says
-- what happened to (rule, session version) for closing verdicts.

CREATE TABLE IF NOT EXISTS {db}.sessions (
    session_id String,
    version UInt32,
    revision UInt64,
    project LowCardinality(String),
    status LowCardinality(String),
    close_reason LowCardinality(String),
    started DateTime64(6),
    ended DateTime64(6),
    duration_ms Float64,
    turn_count UInt32,
    error_count UInt32,
    cost_usd Float64,
    trace_ids Array(String),
    agents Array(String),
    finished_rules Array(String),
    closed_at Nullable(DateTime64(6)),
    updated_at DateTime64(6),
    ingested_at DateTime64(6) DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(revision)
ORDER BY (session_id, version)
TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;

CREATE TABLE IF NOT EXISTS {db}.session_turns (
    session_id String,
    session_version UInt32,
    turn UInt32,
    revision UInt64,
    trace_id String,
    trace_version UInt32,
    project LowCardinality(String),
    name String,
    started DateTime64(6),
    ended DateTime64(6),
    status LowCardinality(String),
    agents Array(String),
    input String,
    output String,
    errors UInt32,
    cost_usd Nullable(Float64),
    ends_session Bool,
    ingested_at DateTime64(6) DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(revision)
ORDER BY (session_id, session_version, turn)
TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;

CREATE TABLE IF NOT EXISTS {db}.session_scores (
    session_id String,
    session_version UInt32,
    turn UInt32,
    final Bool,
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
ORDER BY (session_id, rule, session_version, job_id)
TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;

CREATE TABLE IF NOT EXISTS {db}.session_decisions (
    rule LowCardinality(String),
    session_id String,
    session_version UInt32,
    outcome LowCardinality(String),
    reason String,
    job_id String,
    project LowCardinality(String),
    turns UInt32,
    source LowCardinality(String),
    decided_at DateTime64(6),
    ingested_at DateTime64(6) DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (session_id, rule, session_version, outcome)
TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;

-- The newest version of each session (an open snapshot while it runs), the current closing verdict
-- per (rule, session), and the current decision per (rule, session).
CREATE VIEW IF NOT EXISTS {db}.sessions_current AS
SELECT * FROM {db}.sessions FINAL ORDER BY version DESC LIMIT 1 BY session_id;

CREATE VIEW IF NOT EXISTS {db}.session_scores_current AS
SELECT * FROM {db}.session_scores FINAL WHERE final
ORDER BY session_version DESC, ingested_at DESC LIMIT 1 BY rule, session_id;

CREATE VIEW IF NOT EXISTS {db}.session_decisions_current AS
SELECT * FROM {db}.session_decisions FINAL
ORDER BY session_version DESC, outcome IN ('scored', 'failed') DESC, decided_at DESC
LIMIT 1 BY rule, session_id;
