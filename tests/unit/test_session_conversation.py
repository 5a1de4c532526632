"""pipeline/sessions/conversation.py: what a session scorer gets, and opening a turn's stored trace."""

from __future__ import annotations

import pytest

from pipeline.contracts import Trace
from pipeline.contracts.conversation import Conversation
from pipeline.contracts.sessions import Session, Turn


def stored_trace(trace_id: str) -> Trace:
    return Trace(trace_id=trace_id, version=1, project="bot", status="complete", close_reason="quiet_period",
                 start_ns=0, end_ns=1, spans=[])


class SlowSink:
    """A loader whose trace is stored only after `misses` reads, as when the sink lags the session."""

    def __init__(self, misses: int) -> None:
        self.misses = misses
        self.reads = 0

    async def __call__(self, trace_id: str, version: int) -> Trace | None:
        self.reads += 1
        return stored_trace(trace_id) if self.reads > self.misses else None


def conversation(loader: SlowSink, wait_s: float) -> Conversation:
    session = Session(session_id="s", version=1, status="complete", close_reason="idle_timeout",
                      turns=[Turn(session_id="s", trace_id="t1", started_ns=1)])
    return Conversation(session, final=True, load_trace=loader, store_wait_s=wait_s)


async def test_a_turn_trace_the_sink_has_not_stored_yet_is_waited_for() -> None:
    loader = SlowSink(misses=3)
    trace = await conversation(loader, wait_s=5).trace(1)
    assert trace.trace_id == "t1" and loader.reads == 4


async def test_a_turn_trace_that_never_arrives_is_a_clear_error() -> None:
    loader = SlowSink(misses=1000)
    with pytest.raises(LookupError, match=r"trace t1 v1 of turn 1 is not stored after 0.5 s"):
        await conversation(loader, wait_s=0.5).trace(1)
    assert loader.reads > 1


async def test_a_turn_that_does_not_exist_names_the_conversation_length() -> None:
    with pytest.raises(LookupError, match="turn 2 does not exist: the conversation has 1 turn"):
        await conversation(SlowSink(0), wait_s=1).trace(2)
