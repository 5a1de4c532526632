"""pipeline/assembly: the trace state machine (state.py) and the per-partition deadline heap (deadlines.py)."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.assembly import AssemblyConfig, DeadlineIndex, close_trace, due_action, merge_spans
from pipeline.assembly.state import DueAction, deadline
from pipeline.contracts import Span, Trace

CFG = AssemblyConfig(quiet_period_s=2.0, idle_timeout_s=300.0, reopen_window_s=900.0)
T0 = 1_000.0


def span(span_id: str, parent: str | None = "root", start: int = 0, **kw: Any) -> dict[str, Any]:
    """A span as the assembler stores it: a validated Span dumped without None fields."""
    model = Span(trace_id="t-1", span_id=span_id, parent_span_id=parent, name=kw.pop("name", f"op-{span_id}"),
                 start_ns=start, end_ns=kw.pop("end", start + 10), project=kw.pop("project", "bot"), **kw)
    return model.model_dump(mode="json", exclude_none=True)


ROOT = span("root", parent=None, start=100, end=1_000, name="handle")
CHILD_A = span("a", start=300, end=400)
CHILD_B = span("b", start=200, end=900)


def merged(*batches: tuple[list[dict], bool, float]) -> dict:
    state = None
    for spans, final, now in batches:
        state, _ = merge_spans(state, "t-1", 3, spans, final, now)
    return state


# -- merge ------------------------------------------------------------------------------------------

def test_first_merge_creates_an_open_version_1_state() -> None:
    state, outcome = merge_spans(None, "t-1", 3, [CHILD_A], False, T0)
    assert outcome.created and outcome.added == 1 and outcome.duplicates == 0 and not outcome.reopened
    assert state["open"] and state["version"] == 1 and state["partition"] == 3
    assert not state["root_ended"]
    _, outcome = merge_spans(state, "t-1", 3, [CHILD_B], False, T0 + 1)
    assert not outcome.created


def test_out_of_order_spans_assemble_into_one_sorted_trace() -> None:
    state = merged(([CHILD_A], False, T0), ([ROOT], False, T0 + 1), ([CHILD_B], False, T0 + 1.5))
    assert set(state["spans"]) == {"root", "a", "b"}
    assert due_action(state, T0 + 1.5 + CFG.quiet_period_s, CFG) == DueAction.CLOSE_COMPLETE
    payload = close_trace(state, DueAction.CLOSE_COMPLETE, T0 + 3.5)
    trace = Trace.model_validate(payload)
    assert [s.span_id for s in trace.spans] == ["root", "b", "a"]  # by start time
    assert trace.root_span_id == "root" and trace.name == "handle" and trace.project == "bot"
    assert trace.start_ns == 100 and trace.end_ns == 1_000
    assert trace.status == "complete" and trace.close_reason == "quiet_period" and trace.version == 1


def test_duplicates_are_counted_once() -> None:
    state, _ = merge_spans(None, "t-1", 0, [ROOT, CHILD_A], False, T0)
    state, outcome = merge_spans(state, "t-1", 0, [CHILD_A, ROOT, CHILD_B], False, T0 + 1)
    assert outcome.added == 1 and outcome.duplicates == 2
    assert len(state["spans"]) == 3
    payload = close_trace(state, DueAction.CLOSE_COMPLETE, T0 + 10)
    assert len(payload["spans"]) == 3


def test_duplicate_inside_one_batch_is_counted_once() -> None:
    state, outcome = merge_spans(None, "t-1", 0, [CHILD_A, CHILD_A], False, T0)
    assert len(state["spans"]) == 1
    assert (outcome.added, outcome.duplicates) == (1, 1)


def test_duplicate_does_not_extend_the_quiet_period() -> None:
    state = merged(([ROOT], False, T0), ([ROOT], False, T0 + 1.5))
    assert state["last_seen_s"] == T0
    assert due_action(state, T0 + CFG.quiet_period_s, CFG) == DueAction.CLOSE_COMPLETE


def test_root_ended_closes_complete_only_after_the_quiet_period() -> None:
    state = merged(([CHILD_A], False, T0), ([ROOT], False, T0 + 1))
    assert state["root_ended"]
    assert deadline(state, CFG) == T0 + 1 + CFG.quiet_period_s
    assert due_action(state, T0 + 1 + CFG.quiet_period_s - 0.001, CFG) is None
    # a span arriving during the quiet period pushes the close back
    state, _ = merge_spans(state, "t-1", 0, [CHILD_B], False, T0 + 2.5)
    assert due_action(state, T0 + 3.0, CFG) is None
    assert due_action(state, T0 + 2.5 + CFG.quiet_period_s, CFG) == DueAction.CLOSE_COMPLETE


def test_final_marker_closes_immediately() -> None:
    state = merged(([CHILD_A], False, T0), ([ROOT], True, T0 + 1))
    assert due_action(state, T0 + 1, CFG) == DueAction.CLOSE_FINAL
    trace = Trace.model_validate(close_trace(state, DueAction.CLOSE_FINAL, T0 + 1))
    assert trace.status == "complete" and trace.close_reason == "final_marker"
    assert len(trace.spans) == 2
    assert not state["final"] and not state["open"]


def test_no_root_closes_incomplete_after_the_idle_timeout() -> None:
    state = merged(([CHILD_A], False, T0), ([CHILD_B], False, T0 + 10))
    assert not state["root_ended"]
    assert due_action(state, T0 + 10 + CFG.quiet_period_s, CFG) is None
    assert due_action(state, T0 + 10 + CFG.idle_timeout_s - 0.001, CFG) is None
    assert due_action(state, T0 + 10 + CFG.idle_timeout_s, CFG) == DueAction.CLOSE_INCOMPLETE
    trace = Trace.model_validate(close_trace(state, DueAction.CLOSE_INCOMPLETE, T0 + 400))
    assert trace.status == "incomplete" and trace.close_reason == "idle_timeout"
    assert trace.root_span_id is None and trace.name is None
    assert trace.project == "bot"  # from the first span when there is no root
    assert [s.span_id for s in trace.spans] == ["b", "a"]


def test_late_span_after_close_reopens_as_version_2_with_all_spans() -> None:
    state = merged(([ROOT, CHILD_A], False, T0))
    first = close_trace(state, DueAction.CLOSE_COMPLETE, T0 + 2)
    assert first["version"] == 1 and not state["open"]

    state, outcome = merge_spans(state, "t-1", 0, [CHILD_B], False, T0 + 5)
    assert outcome.reopened and outcome.added == 1
    assert state["open"] and state["version"] == 2 and state["closed_at_s"] is None
    assert due_action(state, T0 + 5 + CFG.quiet_period_s, CFG) == DueAction.CLOSE_COMPLETE
    second = Trace.model_validate(close_trace(state, DueAction.CLOSE_COMPLETE, T0 + 7))
    assert second.version == 2
    assert [s.span_id for s in second.spans] == ["root", "b", "a"]
    # the first payload is unchanged by the reopen
    assert first["version"] == 1 and len(first["spans"]) == 2


def test_late_root_reopens_an_incomplete_trace_as_complete() -> None:
    state = merged(([CHILD_A], False, T0))
    close_trace(state, DueAction.CLOSE_INCOMPLETE, T0 + 300)
    state, outcome = merge_spans(state, "t-1", 0, [ROOT], False, T0 + 310)
    assert outcome.reopened and state["version"] == 2
    assert due_action(state, T0 + 310 + CFG.quiet_period_s, CFG) == DueAction.CLOSE_COMPLETE


def test_duplicate_after_close_does_not_reopen() -> None:
    state = merged(([ROOT, CHILD_A], False, T0))
    close_trace(state, DueAction.CLOSE_COMPLETE, T0 + 2)
    state, outcome = merge_spans(state, "t-1", 0, [CHILD_A, ROOT], True, T0 + 5)
    assert not outcome.reopened and outcome.added == 0 and outcome.duplicates == 2
    assert not state["open"] and state["version"] == 1 and not state["final"]
    assert state["closed_at_s"] == T0 + 2
    assert due_action(state, T0 + 5, CFG) is None


def test_closed_state_is_forgotten_after_the_reopen_window() -> None:
    state = merged(([ROOT], False, T0))
    close_trace(state, DueAction.CLOSE_COMPLETE, T0 + 2)
    assert deadline(state, CFG) == T0 + 2 + CFG.reopen_window_s
    assert due_action(state, T0 + 2 + CFG.reopen_window_s - 0.001, CFG) is None
    assert due_action(state, T0 + 2 + CFG.reopen_window_s, CFG) == DueAction.FORGET


def test_forget_window_restarts_after_a_reopen() -> None:
    state = merged(([ROOT], False, T0))
    close_trace(state, DueAction.CLOSE_COMPLETE, T0 + 2)
    state, _ = merge_spans(state, "t-1", 0, [CHILD_A], False, T0 + 800)
    close_trace(state, DueAction.CLOSE_COMPLETE, T0 + 802)
    assert due_action(state, T0 + 2 + CFG.reopen_window_s, CFG) is None
    assert due_action(state, T0 + 802 + CFG.reopen_window_s, CFG) == DueAction.FORGET


def test_close_payload_is_a_valid_trace_over_the_wire() -> None:
    llm = span("llm", start=150, end=250, span_type="llm", model="m", cost_usd=0.5, status="error",
               error={"type": "RateLimit", "message": "429"}, agent_name="planner")
    state = merged(([llm, CHILD_A], False, T0), ([ROOT], True, T0 + 1))
    payload = close_trace(state, DueAction.CLOSE_FINAL, T0 + 1)
    trace = Trace.model_validate(orjson.loads(orjson.dumps(payload)))
    assert [s.start_ns for s in trace.spans] == sorted(s.start_ns for s in trace.spans)
    assert trace.has_error and trace.cost_usd == 0.5
    assert trace.closed_at_ns > 0


def test_equal_start_times_sort_by_span_id() -> None:
    state = merged(([span("z", start=5), span("m", start=5), span("root", parent=None, start=5)], False, T0))
    payload = close_trace(state, DueAction.CLOSE_COMPLETE, T0 + 2)
    assert [s["span_id"] for s in payload["spans"]] == ["m", "root", "z"]


# -- DeadlineIndex ----------------------------------------------------------------------------------

def test_pop_due_returns_only_due_traces_in_deadline_order() -> None:
    idx = DeadlineIndex()
    idx.set(0, "c", 30.0)
    idx.set(0, "a", 10.0)
    idx.set(0, "b", 20.0)
    idx.set(0, "d", 40.0)
    assert len(idx) == 4
    assert idx.pop_due(0, 5.0) == []
    assert idx.pop_due(0, 30.0) == ["a", "b", "c"]  # a deadline equal to now is due
    assert len(idx) == 1
    assert idx.pop_due(0, 35.0) == []  # popped entries are not returned again
    assert idx.pop_due(0, 100.0) == ["d"]
    assert len(idx) == 0


def test_resetting_a_deadline_later_invalidates_the_old_one() -> None:
    idx = DeadlineIndex()
    idx.set(0, "t", 10.0)
    idx.set(0, "t", 50.0)
    assert len(idx) == 1
    assert idx.pop_due(0, 20.0) == []
    assert idx.pop_due(0, 50.0) == ["t"]
    assert idx.pop_due(0, 1000.0) == []


def test_resetting_a_deadline_earlier_fires_once() -> None:
    idx = DeadlineIndex()
    idx.set(0, "t", 50.0)
    idx.set(0, "t", 10.0)
    assert idx.pop_due(0, 10.0) == ["t"]
    assert idx.pop_due(0, 100.0) == []


def test_setting_back_to_an_earlier_value_fires_once() -> None:
    idx = DeadlineIndex()
    idx.set(0, "t", 10.0)
    idx.set(0, "t", 20.0)
    idx.set(0, "t", 10.0)
    assert idx.pop_due(0, 100.0) == ["t"]


def test_same_deadline_twice_fires_once() -> None:
    idx = DeadlineIndex()
    idx.set(0, "t", 10.0)
    idx.set(0, "t", 10.0)
    assert idx.pop_due(0, 10.0) == ["t"]
    assert idx.pop_due(0, 10.0) == []


def test_removed_trace_is_not_due_and_can_be_set_again() -> None:
    idx = DeadlineIndex()
    idx.set(0, "t", 10.0)
    idx.remove(0, "t")
    assert len(idx) == 0
    assert idx.pop_due(0, 100.0) == []
    idx.set(0, "t", 10.0)
    assert idx.pop_due(0, 100.0) == ["t"]


def test_partitions_are_independent() -> None:
    idx = DeadlineIndex()
    idx.init_partition(0)
    idx.set(0, "p0", 10.0)
    idx.set(1, "p1", 10.0)
    idx.set(1, "shared", 5.0)
    idx.set(0, "shared", 50.0)
    assert idx.has_partition(0) and idx.has_partition(1) and not idx.has_partition(2)
    assert idx.pop_due(0, 20.0) == ["p0"]
    assert idx.pop_due(1, 20.0) == ["shared", "p1"]
    assert idx.pop_due(2, 20.0) == []
    idx.drop_partition(0)
    assert not idx.has_partition(0) and idx.pop_due(0, 1000.0) == []
    idx.set(1, "later", 30.0)
    assert idx.pop_due(1, 30.0) == ["later"]


def test_clear_forgets_every_partition() -> None:
    idx = DeadlineIndex()
    idx.set(0, "a", 1.0)
    idx.set(1, "b", 1.0)
    idx.clear()
    assert len(idx) == 0 and not idx.has_partition(0)
    assert idx.pop_due(0, 10.0) == [] and idx.pop_due(1, 10.0) == []


def test_index_driven_by_state_deadlines() -> None:
    """The assembler's loop: set the state's deadline, pop when due, ask due_action."""
    idx = DeadlineIndex()
    state = merged(([ROOT], False, T0))
    idx.set(0, "t-1", deadline(state, CFG))
    assert idx.pop_due(0, T0 + 1) == []
    due = idx.pop_due(0, T0 + CFG.quiet_period_s)
    assert due == ["t-1"]
    assert due_action(state, T0 + CFG.quiet_period_s, CFG) == DueAction.CLOSE_COMPLETE
