-- A session rule's decisions record the rules version they were made under, as trace rules' do (012).

ALTER TABLE {db}.session_decisions ADD COLUMN IF NOT EXISTS rules_version String AFTER decided_at;

-- The view's `*` is expanded when it is created: made again (the same definition as 006), it carries the column.
CREATE OR REPLACE VIEW {db}.session_decisions_current AS
SELECT * FROM {db}.session_decisions FINAL
ORDER BY session_version DESC, outcome IN ('scored', 'failed') DESC, decided_at DESC
LIMIT 1 BY rule, session_id;
