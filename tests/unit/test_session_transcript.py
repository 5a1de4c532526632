"""pipeline/sessions/transcript.py: a closed trace as a turn, and turns as a transcript a judge or a person reads."""

from __future__ import annotations

from typing import Any

from pipeline.contracts import Span, Trace
from pipeline.contracts.sessions import Session, Turn
from pipeline.contracts.transcript import render_transcript, render_value, turn_from_trace


def span(span_id: str, parent: str | None = "root", start: int = 0, **kw: Any) -> Span:
    return Span(trace_id="t-1", span_id=span_id, parent_span_id=parent, name=kw.pop("name", f"op-{span_id}"),
                start_ns=start, end_ns=start + 10, project="bot", **kw)


def trace(*spans: Span, status: str = "complete", version: int = 1) -> Trace:
    root = next((s for s in spans if s.is_root), None)
    return Trace(trace_id="t-1", version=version, project="bot", status=status,
                 close_reason="quiet_period" if status == "complete" else "idle_timeout",
                 root_span_id=root.span_id if root else None, name=root.name if root else None,
                 start_ns=min(s.start_ns for s in spans), end_ns=max(s.end_ns for s in spans), spans=list(spans))


def turn(n: int, **kw: Any) -> Turn:
    return Turn(session_id="s", trace_id=f"t{n}", started_ns=n, input=kw.pop("input", f"question {n}"),
                output=kw.pop("output", f"answer {n}"), **kw)


# -- turn_from_trace ------------------------------------------------------------------------------

def test_a_trace_without_a_session_id_is_not_a_turn() -> None:
    assert turn_from_trace(trace(span("root", None, inputs="hi"))) is None


def test_turn_summarises_the_root_and_references_the_trace() -> None:
    root = span("root", None, 100, name="chat", session_id="conv-1", inputs={"message": "Where is my order?"},
                outputs={"answer": "It ships today."}, attributes={"evalstream.session.end": True},
                agent_name="support")
    llm = span("llm", "root", 200, agent_name="planner", status="error", cost_usd=0.25)
    tool = span("tool", "root", 150, agent_name="support", cost_usd=0.5)
    t = turn_from_trace(trace(root, llm, tool, version=2))
    assert t is not None
    assert (t.session_id, t.trace_id, t.trace_version, t.project, t.name) == ("conv-1", "t-1", 2, "bot", "chat")
    assert (t.input, t.output) == ("Where is my order?", "It ships today.")
    assert t.agents == ["support", "planner"] and t.errors == 1 and t.cost_usd == 0.75
    assert t.ends_session and t.status == "complete" and (t.started_ns, t.ended_ns) == (100, 210)


def test_session_id_falls_back_to_the_first_span_that_has_one() -> None:
    spans = (span("root", None, 0), span("b", start=20, session_id="late"), span("a", start=10, session_id="early"))
    t = turn_from_trace(trace(*spans))
    assert t is not None and t.session_id == "early" and not t.ends_session


def test_end_marker_accepts_otel_string_attributes() -> None:
    root = span("root", None, session_id="s", attributes={"evalstream.session.end": "true"})
    assert turn_from_trace(trace(root)).ends_session  # type: ignore[union-attr]
    root = span("root", None, session_id="s", attributes={"evalstream.session.end": "false"})
    assert not turn_from_trace(trace(root)).ends_session  # type: ignore[union-attr]


def test_incomplete_trace_without_root_uses_its_first_span() -> None:
    t = turn_from_trace(trace(span("a", start=5, session_id="s", inputs="partial"), status="incomplete"))
    assert t is not None and t.status == "incomplete" and t.input == "partial" and t.output == ""


# -- rendering values -----------------------------------------------------------------------------

def test_strings_stay_as_they_are() -> None:
    assert render_value("  Hello there ", "input") == "Hello there"
    assert render_value(None, "output") == ""


def test_dicts_use_the_conversational_key() -> None:
    assert render_value({"user_id": 7, "question": "Why?"}, "input") == "Why?"
    assert render_value({"prompt": "p", "temperature": 0}, "input") == "p"
    assert render_value({"reply": "Because.", "tokens": 3}, "output") == "Because."
    assert render_value({"text": "only value"}, "input") == "only value"


def test_chat_messages_give_the_last_user_and_the_last_assistant_message() -> None:
    messages = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "First"},
                {"role": "assistant", "content": "Reply"}, {"role": "user", "content": "Second"}]
    assert render_value({"messages": messages, "model": "m"}, "input") == "Second"
    assert render_value(messages, "input") == "Second"
    assert render_value(messages, "output") == "Reply"
    parts = [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {}}]}]
    assert render_value({"messages": parts}, "input") == "look"
    response = {"choices": [{"message": {"role": "assistant", "content": "From the model"}}]}
    assert render_value(response, "output") == "From the model"


def test_anything_else_is_compact_json() -> None:
    assert render_value({"a": 1, "b": [1, 2]}, "input") == '{"a":1,"b":[1,2]}'
    assert render_value([1, 2], "output") == "[1,2]"
    assert render_value(3.5, "output") == "3.5"


def test_text_is_capped_with_an_ellipsis() -> None:
    text = render_value("x" * 50, "input", max_chars=10)
    assert text == "x" * 9 + "…" and len(text) == 10
    root = span("root", None, session_id="s", inputs="y" * 5_000)
    assert len(turn_from_trace(trace(root), max_text_chars=100).input) == 100  # type: ignore[union-attr]


# -- transcript -----------------------------------------------------------------------------------

def test_transcript_lists_turns_in_order() -> None:
    text = render_transcript([turn(2), turn(1)])
    assert text == ("Turn 1 (trace t1):\nUser: question 1\nAgent: answer 1\n\n"
                    "Turn 2 (trace t2):\nUser: question 2\nAgent: answer 2")


def test_transcript_of_a_session_and_markers_for_incomplete_and_failing_turns() -> None:
    session = Session(session_id="s", version=1, status="incomplete", close_reason="end_marker", turns=[
        turn(1, errors=2), turn(2, status="incomplete", output=""), turn(3, ends_session=True)])
    text = render_transcript(session)
    assert "Turn 1 (trace t1, 2 errors):" in text
    assert "Turn 2 (trace t2, incomplete):\nUser: question 2\nAgent: (no output: the turn did not finish)" in text
    assert "Turn 3 (trace t3, ended the session):" in text


def test_long_transcript_keeps_the_first_and_the_latest_turns() -> None:
    turns = [turn(n, output="a" * 100) for n in range(1, 21)]
    full = render_transcript(turns, max_chars=100_000)
    text = render_transcript(turns, max_chars=len(full) // 3)
    assert len(text) <= len(full) // 3
    assert text.startswith("Turn 1 (trace t1):")
    assert text.endswith("Turn 20 (trace t20):\nUser: question 20\nAgent: " + "a" * 100)
    kept = [int(line.split()[1]) for line in text.splitlines() if line.startswith("Turn ")]
    assert kept[0] == 1 and kept[1:] == list(range(kept[1], 21))  # a run of the most recent turns
    assert f"[… {kept[1] - 2} turns elided …]" in text


def test_transcript_with_huge_first_and_last_turns_still_fits() -> None:
    turns = [turn(1, input="q" * 5_000), turn(2), turn(3, output="z" * 5_000)]
    text = render_transcript(turns, max_chars=1_000)
    assert len(text) <= 1_000
    assert text.startswith("Turn 1 (trace t1):") and "Turn 3 (trace t3):" in text and "[… 1 turn elided …]" in text


def test_empty_transcript() -> None:
    assert render_transcript([]) == ""
