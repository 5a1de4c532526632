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
