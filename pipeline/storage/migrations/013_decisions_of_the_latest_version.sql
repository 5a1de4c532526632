-- A rule's current decisions on a trace are those of the trace's latest version it decided. Keyed only by
-- (rule, trace, span, request), a span rule's version 1 with no matching span (one trace-level filtered_out,
-- span_id '') stayed "current" beside version 2's per-span decisions after a late span re-opened the trace.

CREATE OR REPLACE VIEW {db}.decisions_current AS
SELECT * FROM {db}.decisions FINAL
WHERE (rule, trace_id, trace_version) IN (SELECT rule, trace_id, max(trace_version) FROM {db}.decisions GROUP BY rule, trace_id)
ORDER BY trace_version DESC, outcome IN ('scored', 'failed') DESC, decided_at DESC
LIMIT 1 BY rule, trace_id, span_id, request_index;
