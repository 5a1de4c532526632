"""pipeline/storage/wire.py: stored rows back to the trace that was stored (the reverse of rows.py), for
one version (`trace_from_rows`: a session scorer's turn) and for a page of newest versions (`assemble`:
backfill)."""

from __future__ import annotations

from typing import Any

from pipeline.contracts import ErrorInfo, Span, Trace
from pipeline.storage import rows
from pipeline.storage.wire import SPAN_SELECT, TRACE_SELECT, assemble, spans_sql, trace_from_rows, version_sql

US = 1_000  # stored times are microseconds: use whole microseconds so the round trip is exact


def span(trace_id: str, span_id: str, start: int, **kw: Any) -> Span:
    return Span(trace_id=trace_id, span_id=span_id, name=kw.pop("name", span_id), start_ns=start * US,
                end_ns=(start + 5) * US, project=kw.pop("project", "bot"), **kw)


def trace(version: int, spans: list[Span], **kw: Any) -> Trace:
    return Trace(trace_id=spans[0].trace_id, version=version, project="bot", status="complete",
                 close_reason="quiet_period", root_span_id=spans[0].span_id, name=spans[0].name,
                 start_ns=spans[0].start_ns, end_ns=max(s.end_ns for s in spans), closed_at_ns=99 * US, spans=spans,
                 **kw)


def selected(columns: list[str], row: list[Any], select: str) -> list[Any]:
    """A row as rows.py stores it, read back as `select` returns it (times in microseconds)."""
    by_name = dict(zip(columns, row, strict=True))
    out = []
    for expr in select.split(", "):
        name = expr.split(" AS ")[-1].strip()
        if name.endswith("_us"):
            name = {"closed_us": "closed_at"}.get(name, name.replace("_us", "_time"))
        out.append(by_name[name])
    return out


def stored(t: Trace) -> tuple[list[Any], list[list[Any]]]:
    """The trace as the sink stored it, read back with the SELECT lists (its row: TRACE_SELECT + span_count)."""
    trace_row = selected(rows.TRACE_COLUMNS, rows.trace_row(t), TRACE_SELECT + ", span_count")
    span_rows = [selected(rows.SPAN_COLUMNS, rows.span_row(s, t.version), SPAN_SELECT) for s in t.spans]
    return trace_row, span_rows


TURN = trace(1, [
    span("t1", "root", 10, session_id="chat-1", agent_name="support", service="api", inputs={"message": "refund?"},
         outputs="Sure, done.", attributes={"evalstream.session.end": True, "n": 2}),
    span("t1", "llm", 11, parent_span_id="root", span_type="llm", model="gpt-4o-mini", input_tokens=12,
         output_tokens=3, total_tokens=15, cost_usd=0.002, inputs=[{"role": "user", "content": "refund?"}]),
    span("t1", "tool", 12, parent_span_id="root", span_type="tool", status="error",
         error=ErrorInfo(type="Timeout", message="crm took 30 s")),
])


def test_a_stored_version_loads_back_as_the_trace_that_was_stored() -> None:
    trace_row, span_rows = stored(TURN)
    loaded = trace_from_rows([trace_row], list(reversed(span_rows)))
    assert loaded == TURN  # spans in start order, JSON values decoded, errors, tokens and costs kept
    assert loaded.root is not None and loaded.root.inputs == {"message": "refund?"} and loaded.root.outputs == "Sure, done."
    assert loaded.spans[2].error == ErrorInfo(type="Timeout", message="crm took 30 s")
    assert trace_from_rows([], span_rows) is None  # that version is not stored


def test_an_older_version_gets_its_own_spans_not_those_a_later_version_added() -> None:
    v1 = trace(1, TURN.spans[:2])
    v2 = trace(2, [*TURN.spans, span("t1", "late", 50, parent_span_id="root")])
    (v1_row, v1_spans), (_, v2_spans) = stored(v1), stored(v2)
    # not merged yet: both versions' rows are there
    assert [s.span_id for s in trace_from_rows([v1_row], v1_spans + v2_spans).spans] == ["root", "llm"]
    # merged: v2's rows replaced v1's (one row per span id); v1 still gets v1's number of spans, earliest first
    assert [s.span_id for s in trace_from_rows([v1_row], v2_spans).spans] == ["root", "llm"]


def test_a_page_of_newest_versions_gets_each_version_its_spans_once_in_start_order() -> None:
    v2 = trace(2, TURN.spans)
    other = trace(1, [span("t2", "only", 5)])
    (v2_row, v2_spans), (_, v1_spans), (other_row, other_spans) = stored(v2), stored(trace(1, TURN.spans)), stored(other)
    pages = assemble([other_row[:-1], v2_row[:-1]], list(reversed(v2_spans)) + v2_spans + v1_spans + other_spans)
    assert [Trace.model_validate(w) for w in pages] == [other, v2]  # page order kept; stored twice counts once


def test_the_selects_name_the_trace_and_its_spans_with_quoted_ids() -> None:
    assert version_sql("evalstream", "o'k", 3) == (
        f"SELECT {TRACE_SELECT}, span_count FROM evalstream.traces FINAL "
        "WHERE trace_id = 'o\\'k' AND version = 3 LIMIT 1")
    assert spans_sql("db", ["a", "b'"]) == f"SELECT {SPAN_SELECT} FROM db.spans WHERE trace_id IN ('a', 'b\\'')"
