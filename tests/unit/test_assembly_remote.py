"""pipeline/assembly: a trace that crossed services closes once its remote calls are answered (or waited for)."""

from __future__ import annotations

from typing import Any

from pipeline.assembly import AssemblyConfig, close_trace, due_action, merge_spans
from pipeline.assembly.remote import RemotePeers
from pipeline.assembly.state import DueAction, deadline
from pipeline.contracts import Span, Trace

CFG = AssemblyConfig(quiet_period_s=2.0, idle_timeout_s=300.0, reopen_window_s=900.0, remote_wait_s=10.0)
T0 = 1_000.0


def span(span_id: str, parent: str | None = "root", **kw: Any) -> dict[str, Any]:
    model = Span(trace_id="t-1", span_id=span_id, parent_span_id=parent, name=kw.pop("name", f"op-{span_id}"),
                 start_ns=kw.pop("start", 100), end_ns=kw.pop("end", 200), **kw)
    return model.model_dump(mode="json", exclude_none=True)


ROOT = span("root", parent=None, name="GET /order", kind="server")
CALL = span("call", kind="client", name="POST inventory", attributes={"server.address": "inventory"})
CALLEE_ROOT = span("b-root", parent="call", kind="server", name="POST /reserve", service="inventory")
CALLEE_CHILD = span("b-child", parent="b-root", name="db", service="inventory")
LLM_CALL = span("llm", kind="client", span_type="llm", name="chat gpt-4o")


def test_the_callers_final_marker_waits_for_the_callees_spans() -> None:
    state, _ = merge_spans(None, "t-1", 0, [CALL, ROOT], True, T0)
    assert due_action(state, T0 + 5, CFG) is None  # A's exporter is done; B's has not sent yet
    state, outcome = merge_spans(state, "t-1", 0, [CALLEE_CHILD, CALLEE_ROOT], False, T0 + 5)
    assert [c["span_id"] for c in outcome.answered] == ["call"]
    assert due_action(state, T0 + 5, CFG) == DueAction.CLOSE_FINAL  # answered and final: at once
    trace = Trace.model_validate(close_trace(state, DueAction.CLOSE_FINAL, T0 + 5))
    assert trace.version == 1 and len(trace.spans) == 4 and trace.close_reason == "final_marker"
    assert [(w.span_id, w.answered, w.waited_s) for w in trace.waited_for] == [("call", True, 5.0)]


def test_a_callee_that_flushed_first_has_already_answered() -> None:
    state, _ = merge_spans(None, "t-1", 0, [CALLEE_CHILD, CALLEE_ROOT], False, T0)
    state, _ = merge_spans(state, "t-1", 0, [CALL, ROOT], True, T0 + 1)
    assert state["calls"] == {}
    assert due_action(state, T0 + 1, CFG) == DueAction.CLOSE_FINAL


def test_an_unanswered_call_closes_after_remote_wait_and_says_so() -> None:
    state, _ = merge_spans(None, "t-1", 0, [CALL, ROOT], True, T0)
    assert deadline(state, CFG) == T0 + CFG.remote_wait_s
    assert due_action(state, T0 + CFG.remote_wait_s, CFG) == DueAction.CLOSE_REMOTE_WAIT
    trace = Trace.model_validate(close_trace(state, DueAction.CLOSE_REMOTE_WAIT, T0 + CFG.remote_wait_s))
    assert trace.status == "complete" and trace.close_reason == "remote_wait"
    assert [(w.span_id, w.answered) for w in trace.waited_for] == [("call", False)]


def test_llm_calls_are_client_spans_nobody_answers_so_they_are_not_waited_for() -> None:
    state, _ = merge_spans(None, "t-1", 0, [LLM_CALL, ROOT], True, T0)
    assert state["calls"] == {} and due_action(state, T0, CFG) == DueAction.CLOSE_FINAL


def test_without_a_final_marker_the_quiet_period_still_follows_the_answer() -> None:
    state, _ = merge_spans(None, "t-1", 0, [CALL, ROOT], False, T0)
    state, _ = merge_spans(state, "t-1", 0, [CALLEE_ROOT], False, T0 + 3)
    assert deadline(state, CFG) == T0 + 3 + CFG.quiet_period_s
    assert due_action(state, T0 + 5, CFG) == DueAction.CLOSE_COMPLETE


def test_a_late_span_names_itself_on_the_version_it_reopens() -> None:
    state, _ = merge_spans(None, "t-1", 0, [ROOT], True, T0)
    close_trace(state, DueAction.CLOSE_FINAL, T0)
    state, outcome = merge_spans(state, "t-1", 0, [span("late", name="cleanup")], False, T0 + 42)
    assert outcome.reopened and state["version"] == 2
    trace = Trace.model_validate(close_trace(state, DueAction.CLOSE_COMPLETE, T0 + 45))
    assert trace.reopened_by is not None
    assert (trace.reopened_by.span_id, trace.reopened_by.name, trace.reopened_by.late_by_s) == ("late", "cleanup", 42)


def test_peers_that_never_answer_stop_being_waited_for_until_one_answers() -> None:
    peers = RemotePeers(unanswered_limit=2)
    for _ in range(2):
        assert peers.expects_answer(CALL)
        peers.unanswered(CALL)
    assert not peers.expects_answer(CALL)
    state, _ = merge_spans(None, "t-1", 0, [CALL, ROOT], True, T0, peers.expects_answer)
    assert state["calls"] == {} and due_action(state, T0, CFG) == DueAction.CLOSE_FINAL
    peers.answered(CALL)
    assert peers.expects_answer(CALL)
    other = span("call-2", kind="client", attributes={"server.address": "billing"})
    assert peers.expects_answer(other)  # per peer, not per kind


def test_work_that_outlives_its_root_is_waited_for_until_its_process_is_done() -> None:
    root = span("root", parent=None, spans_still_open=1)
    state, _ = merge_spans(None, "t-1", 0, [root], False, T0)
    assert due_action(state, T0 + CFG.quiet_period_s, CFG) is None  # the quiet period alone would close it
    state, _ = merge_spans(state, "t-1", 0, [span("background", end=900)], True, T0 + 6)
    assert due_action(state, T0 + 6, CFG) == DueAction.CLOSE_FINAL
    assert len(close_trace(state, DueAction.CLOSE_FINAL, T0 + 6)["spans"]) == 2


def test_work_that_outlives_its_root_is_waited_for_at_most_remote_wait() -> None:
    state, _ = merge_spans(None, "t-1", 0, [span("root", parent=None, spans_still_open=2)], False, T0)
    assert deadline(state, CFG) == T0 + CFG.remote_wait_s


def test_a_rootless_first_version_continues_the_stored_trace_instead_of_rewriting_it() -> None:
    from pipeline.assembly.state import continue_stored, needs_history

    stored = Trace.model_validate(close_trace(merge_spans(None, "t-1", 0, [ROOT, CALLEE_CHILD], True, T0)[0],
                                              DueAction.CLOSE_FINAL, T0)).model_dump(mode="json", exclude_none=True)
    stored["version"] = 3
    late, _ = merge_spans(None, "t-1", 0, [span("late", name="retry")], False, T0 + 2_000)  # the state is gone
    action = due_action(late, T0 + 2_000 + CFG.idle_timeout_s, CFG)
    assert action == DueAction.CLOSE_INCOMPLETE and needs_history(late, action)
    continue_stored(late, stored, T0 + 2_000 + CFG.idle_timeout_s)
    assert late["version"] == 4 and not needs_history(late, action)
    assert due_action(late, T0 + 2_000 + CFG.idle_timeout_s, CFG) == DueAction.CLOSE_COMPLETE  # the root is back
    trace = Trace.model_validate(close_trace(late, DueAction.CLOSE_COMPLETE, T0 + 2_300))
    assert trace.version == 4 and {s.span_id for s in trace.spans} == {"root", "b-child", "late"}
    assert trace.reopened_by is not None and trace.reopened_by.span_id == "late"


def test_nothing_stored_leaves_a_rootless_trace_incomplete_at_version_1() -> None:
    from pipeline.assembly.state import continue_stored, needs_history

    state, _ = merge_spans(None, "t-1", 0, [CALLEE_CHILD], False, T0)
    continue_stored(state, None, T0 + 300)
    assert state["version"] == 1 and not needs_history(state, DueAction.CLOSE_INCOMPLETE)


def test_the_deadline_index_says_whether_a_partition_has_anything_due_by_a_time() -> None:
    from pipeline.assembly import DeadlineIndex

    index = DeadlineIndex()
    assert index.due_within(0, 10.0)  # not indexed yet: it must be ticked once to be
    index.init_partition(0)
    assert not index.due_within(0, 10.0)
    index.set(0, "t", 5.0)
    index.set(0, "t", 50.0)  # moved later: the old entry no longer counts
    assert not index.due_within(0, 10.0) and index.due_within(0, 50.0)
    index.remove(0, "t")
    assert not index.due_within(0, 100.0)
