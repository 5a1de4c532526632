-- Each async_evaluate request is its own subject: two requests on one span (same scorer or not) are two
-- decisions and two current scores. A decision names the span that asked and which of its calls it was;
-- rules' decisions keep span_id '' and request_index 0, so their rows and keys do not change.

-- The sorting key may only grow by columns added in the same statement.
ALTER TABLE {db}.decisions ADD COLUMN IF NOT EXISTS span_id String AFTER trace_version, ADD COLUMN IF NOT EXISTS request_index UInt16 AFTER span_id, MODIFY ORDER BY (trace_id, rule, trace_version, outcome, span_id, request_index);

ALTER TABLE {db}.scores ADD COLUMN IF NOT EXISTS request_index UInt16 AFTER span_id;

ALTER TABLE {db}.session_scores ADD COLUMN IF NOT EXISTS request_index UInt16 AFTER span_id;

CREATE OR REPLACE VIEW {db}.scores_current AS
SELECT * FROM {db}.scores FINAL ORDER BY trace_version DESC, ingested_at DESC LIMIT 1 BY rule, trace_id, span_id, request_index;

CREATE OR REPLACE VIEW {db}.decisions_current AS
SELECT * FROM {db}.decisions FINAL
ORDER BY trace_version DESC, outcome IN ('scored', 'failed') DESC, decided_at DESC
LIMIT 1 BY rule, trace_id, span_id, request_index;
