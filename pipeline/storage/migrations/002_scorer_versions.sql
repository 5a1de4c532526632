-- Every upload of a scorer (`evalstream scorers upload`), for listing and audit: which source and
-- requirements ran as which version. One row per upload event; redelivery replaces it.

CREATE TABLE IF NOT EXISTS {db}.scorer_versions (
    name LowCardinality(String),
    version String,
    entry String,
    kind LowCardinality(String),
    filename String,
    requirements Array(String),
    source String,
    uploaded_by String,
    uploaded_at DateTime64(6),
    ingested_at DateTime64(6) DEFAULT now64(6)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (name, version, uploaded_at)
TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;
