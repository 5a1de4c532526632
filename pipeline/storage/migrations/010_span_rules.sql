-- Span rules (subject: span): a score names its span's name, so alerts, SQL and rollups can group by it.
-- Each span is already its own current score and decision (migration 008 keys both by span_id); trace
-- rules' scores keep span_name ''.

ALTER TABLE {db}.scores ADD COLUMN IF NOT EXISTS span_name String AFTER request_index;

ALTER TABLE {db}.session_scores ADD COLUMN IF NOT EXISTS span_name String AFTER request_index;
