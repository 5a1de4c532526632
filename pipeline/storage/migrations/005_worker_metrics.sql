-- Consumer lag as each worker measured it (WorkerMetrics on evalstream.metrics.v1, every
-- EVALSTREAM_METRICS_INTERVAL_S), one row per (sample, consumer group, partition); how it is
-- measured is in docs/metrics.md. The newest row per (consumer_group, topic, partition) is the
-- current lag. consumer_group is in the key because two groups read some topics (the workers'
-- and the sink's read traces): without it, their samples taken at the same moment would replace
-- each other.

CREATE TABLE IF NOT EXISTS {db}.consumer_lag (
    at DateTime64(6),
    worker String,
    consumer_group LowCardinality(String),
    topic LowCardinality(String),
    partition Int32,
    lag_records Int64,
    lag_seconds Float64,
    ingested_at DateTime64(6) DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (topic, partition, consumer_group, worker, at)
TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;
