-- A judged score links to its judge's evaluation trace: the trace (project evalstream-judges) that holds the
-- judge's model calls and tool runs for that job. '' when the scorer made no judge call (docs/judges.md).

ALTER TABLE {db}.scores ADD COLUMN IF NOT EXISTS evaluation_trace_id String AFTER scored_at;

ALTER TABLE {db}.session_scores ADD COLUMN IF NOT EXISTS evaluation_trace_id String AFTER scored_at;

-- The views name their columns when they are created: made again, they carry the new one.
CREATE OR REPLACE VIEW {db}.scores_current AS
SELECT * FROM {db}.scores FINAL ORDER BY trace_version DESC, ingested_at DESC LIMIT 1 BY rule, trace_id, span_id, request_index;

CREATE OR REPLACE VIEW {db}.session_scores_current AS
SELECT * FROM {db}.session_scores FINAL WHERE final
ORDER BY session_version DESC, ingested_at DESC LIMIT 1 BY rule, session_id;
