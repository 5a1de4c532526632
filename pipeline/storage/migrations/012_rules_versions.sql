-- Rules applied without a restart (`evalstream rules apply`): every decision and score records the rules
-- version it was made under (the first 12 hex digits of the sha256 of the rules; docs/rules.md, "Live
-- rules"). '' for rows written before versions existed. Session scores share the score columns.

ALTER TABLE {db}.decisions ADD COLUMN IF NOT EXISTS rules_version LowCardinality(String) AFTER decided_at;

ALTER TABLE {db}.scores ADD COLUMN IF NOT EXISTS rules_version LowCardinality(String) AFTER evaluation_trace_id;

ALTER TABLE {db}.session_scores ADD COLUMN IF NOT EXISTS rules_version LowCardinality(String) AFTER evaluation_trace_id;

-- The views name their columns when they are created: made again (as in 008, 010 and 011), they carry it.
CREATE OR REPLACE VIEW {db}.decisions_current AS
SELECT * FROM {db}.decisions FINAL
ORDER BY trace_version DESC, outcome IN ('scored', 'failed') DESC, decided_at DESC
LIMIT 1 BY rule, trace_id, span_id, request_index;

CREATE OR REPLACE VIEW {db}.scores_current AS
SELECT * FROM {db}.scores FINAL ORDER BY trace_version DESC, ingested_at DESC LIMIT 1 BY rule, trace_id, span_id, request_index;

CREATE OR REPLACE VIEW {db}.session_scores_current AS
SELECT * FROM {db}.session_scores FINAL WHERE final
ORDER BY session_version DESC, ingested_at DESC LIMIT 1 BY rule, session_id;
