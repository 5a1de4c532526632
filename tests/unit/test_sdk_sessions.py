"""`tracer.session(...)`: every trace started inside is a turn of that conversation."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.sdk import bind_context
from pipeline.sdk.testing import recording_tracer


def test_every_span_of_every_turn_carries_the_session_and_nothing_outside_does() -> None:
    tracer, exported = recording_tracer()

    @tracer.observe()
    def tool(q: str) -> str:
        return q

    @tracer.agent("support")
    def turn(message: str) -> str:
        return tool(message)

    with tracer.session("conv-1"):
        turn("hello")
        turn("where is my order?")
    turn("another user")
    by_trace: dict[str, set[str | None]] = {}
    for span in exported.spans:
        by_trace.setdefault(span["trace_id"], set()).add(span.get("session_id"))
    assert all(len(sessions) == 1 for sessions in by_trace.values())  # a trace is in one session, or none
    assert sorted(next(iter(v)) or "-" for v in by_trace.values()) == ["-", "conv-1", "conv-1"]
    assert len(exported.spans) == 6


def test_the_session_follows_threads_and_tasks_and_an_explicit_id_wins() -> None:
    tracer, exported = recording_tracer()

    def work() -> None:
        with tracer.span("in-thread"):
            pass

    async def task() -> None:
        with tracer.span("in-task"):
            pass

    with tracer.session("conv-2"), ThreadPoolExecutor(1) as pool:
        pool.submit(bind_context(work)).result()
        asyncio.run(task())
        with tracer.span("explicit", session_id="conv-3"):
            pass
    sessions = {span["name"]: span.get("session_id") for span in exported.spans}
    assert sessions == {"in-thread": "conv-2", "in-task": "conv-2", "explicit": "conv-3"}


def test_a_bad_session_id_is_reported_not_used() -> None:
    tracer, _ = recording_tracer()
    with pytest.raises(ValueError, match="non-empty string"), tracer.session(""):  # raised only under pytest
        pass
    with pytest.raises(ValueError, match="at most 256 characters"), tracer.session("x" * 257):
        pass


def test_end_session_marks_the_last_turn_so_the_pipeline_closes_the_conversation_with_it() -> None:
    from pipeline.contracts import Span, Trace
    from pipeline.contracts.sessions import SESSION_END_ATTRIBUTE
    from pipeline.contracts.transcript import turn_from_trace
    from pipeline.sdk.tracer import SESSION_END_ATTRIBUTE as SDK_ATTRIBUTE

    assert SDK_ATTRIBUTE == SESSION_END_ATTRIBUTE  # the SDK does not import the contracts: keep them equal
    tracer, exported = recording_tracer()

    @tracer.agent("support")
    def turn(message: str, last: bool = False) -> str:
        with tracer.span("reply"):
            if last:
                tracer.end_session()  # in a child span: the turn as a whole ends the session
        return "bye" if last else "ok"

    with tracer.session("conv-9"):
        turn("hi")
        turn("thanks, that's all", last=True)
    turns = []
    for trace_id in dict.fromkeys(s["trace_id"] for s in exported.spans):
        spans = [Span.model_validate(s) for s in exported.spans if s["trace_id"] == trace_id]
        root = next(s for s in spans if s.parent_span_id is None)
        turns.append(turn_from_trace(Trace(trace_id=trace_id, version=1, status="complete", close_reason="final_marker",
                                           root_span_id=root.span_id, spans=spans)))
    assert [(t.session_id, t.ends_session) for t in turns if t] == [("conv-9", False), ("conv-9", True)]
    with pytest.raises(RuntimeError, match="outside a trace"):
        tracer.end_session()  # reported (raised under pytest) rather than silently ignored
