-- Span rules (subject: span): a score names its span's name, so alerts, SQL and rollups can group by it.
-- Each span is already its own current score and decision (migration 008 keys both by span_id); trace
-- rules' scores keep span_name ''.

ALTER TABLE {db}.scores ADD COLUMN IF NOT EXISTS span_name String AFTER request_index;

ALTER TABLE {db}.session_scores ADD COLUMN IF NOT EXISTS span_name String AFTER request_index;

-- A view's `*` is expanded when it is created: re-create the current views so they carry the new column
-- (the same definitions as 008 and 006).
CREATE OR REPLACE VIEW {db}.scores_current AS
SELECT * FROM {db}.scores FINAL ORDER BY trace_version DESC, ingested_at DESC LIMIT 1 BY rule, trace_id, span_id, request_index;

CREATE OR REPLACE VIEW {db}.session_scores_current AS
SELECT * FROM {db}.session_scores FINAL WHERE final
ORDER BY session_version DESC, ingested_at DESC LIMIT 1 BY rule, session_id;
