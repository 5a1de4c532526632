"""Code scorers for session rules: each look while a conversation goes on (continue / finish failing) and the
closing verdict, for session_errors, session_length and session_repetition."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.contracts import Example
from pipeline.contracts.conversation import Conversation
from pipeline.contracts.sessions import Session, Turn
from scorers.base import Score, Scorer
from scorers.builtin.sessions import SessionErrors, SessionLength, SessionRepetition
from scorers.testing import resolver
from tests.support.judge_traces import agent_trace


def turn(n: int, output: str | None = None, **fields: Any) -> Turn:
    return Turn(session_id="s-1", trace_id=f"trace-{n:02d}", started_ns=n, input=f"question {n}",
                output=f"answer {n}" if output is None else output, **fields)


def convo(all_turns: list[Turn], upto: int | None = None, *, final: bool = False) -> Conversation:
    """The conversation as a look after turn `upto` sees it (all turns for the closing look)."""
    seen = all_turns if upto is None else all_turns[:upto]
    closed = {"status": "complete", "close_reason": "idle_timeout"} if final else {"status": "open"}
    return Conversation(Session(session_id="s-1", version=1, turns=seen, **closed), final=final)


async def looks(scorer: Scorer, all_turns: list[Turn]) -> list[Score]:
    """What judging after every turn gives, stopping (as the pipeline does) at the first verdict."""
    out = []
    for n in range(1, len(all_turns) + 1):
        score = await scorer.run(convo(all_turns, n))
        out.append(score)
        if scorer.decide(score, None)[0] is not None:
            break
    return out


def assert_continues(scorer: Scorer, score: Score, turn_number: int) -> None:
    assert (score.value, score.passed) == (None, None)
    assert scorer.decide(score, None)[0] is None and scorer.decide(score, 1)[0] is None  # no threshold decides it
    assert score.metadata["session"]["decision"] == "continue"
    assert (score.metadata["session"]["turn"], score.metadata["session"]["final"]) == (turn_number, False)
    assert score.reason.startswith(f"no verdict yet after turn {turn_number}: ")


# -- session_errors ----------------------------------------------------------------------------------

async def test_session_errors_finishes_failing_at_the_first_turn_with_errors() -> None:
    scorer = SessionErrors()
    all_turns = [turn(1), turn(2), turn(3, errors=2), turn(4), turn(5, status="incomplete")]
    first, second, third = await looks(scorer, all_turns)
    assert_continues(scorer, first, 1)
    assert_continues(scorer, second, 2)
    assert first.metadata["session"]["value"] == 0
    assert (third.value, third.passed) == (1, False) and scorer.decide(third, None) == (False, 0.0)
    assert third.metadata["session"] == {"decision": "finish", "turn": 3, "final": False, "failed_turns": [3]}
    assert third.reason == "1 of 3 turn(s) in trouble: turn 3 (2 spans in error)"

    final = await scorer.run(convo(all_turns, final=True))
    assert (final.value, final.passed) == (2, False)
    assert final.reason == "2 of 5 turn(s) in trouble: turn 3 (2 spans in error); turn 5 (incomplete)"
    assert final.metadata["session"] == {"decision": "finish", "turn": 5, "final": True, "failed_turns": [3, 5]}


async def test_session_errors_params_and_a_clean_conversation() -> None:
    all_turns = [turn(1), turn(2, status="incomplete"), turn(3, errors=1)]
    clean = await SessionErrors().run(convo([turn(1), turn(2)], final=True))
    assert (clean.value, clean.passed, clean.reason) == (0, True, "no errors in 2 turn(s)")
    lenient = SessionErrors(max_failed_turns=1, incomplete_fails=False)
    assert [s.value for s in await looks(lenient, all_turns)] == [None, None, None]  # one turn allowed
    final = await lenient.run(convo(all_turns, final=True))
    assert (final.value, final.passed) == (1, True) and lenient.decide(final, None) == (True, 1.0)
    assert (await SessionErrors().run(convo(all_turns, 2))).passed is False  # incomplete counts by default
    with pytest.raises(ValueError, match="max_failed_turns"):
        SessionErrors(max_failed_turns=-1)


# -- session_length ----------------------------------------------------------------------------------

async def test_session_length_finishes_failing_once_the_limit_is_passed() -> None:
    scorer = resolver().build("session_length", {"max_turns": 3})
    all_turns = [turn(n) for n in range(1, 7)]
    scores = await looks(scorer, all_turns)
    assert len(scores) == 4
    for n, score in enumerate(scores[:3], start=1):
        assert_continues(scorer, score, n)
    assert (scores[3].value, scores[3].passed) == (4, False)
    assert scores[3].reason == "4 turn(s), over the limit of 3"
    final = await scorer.run(convo(all_turns[:3], final=True))
    assert (final.value, final.passed, final.reason) == (3, True, "3 turn(s), limit 3")
    assert final.metadata["session"] == {"decision": "finish", "turn": 3, "final": True}
    assert (await scorer.run(convo(all_turns, final=True))).passed is False
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match="max_turns"):
            SessionLength(max_turns=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        resolver().build("session_length", {})


# -- session_repetition ------------------------------------------------------------------------------

async def test_session_repetition_catches_the_agent_repeating_itself() -> None:
    stuck = "Sorry, I can't help with that."
    all_turns = [turn(1), turn(2, stuck), turn(3, "sorry,  I can't help\nwith that."), turn(4, stuck), turn(5)]
    scorer = SessionRepetition()  # more than 2 identical replies in a row fails
    scores = await looks(scorer, all_turns)
    assert len(scores) == 4
    for n, score in enumerate(scores[:3], start=1):
        assert_continues(scorer, score, n)
    assert scores[2].metadata["session"]["value"] == 2
    fourth = scores[3]
    assert (fourth.value, fourth.passed) == (3, False) and scorer.decide(fourth, None) == (False, 2.0)
    assert fourth.reason.startswith("the same reply in 3 consecutive turns (2–4): ")
    assert fourth.metadata["session"]["repeated_from_turn"] == 2
    final = await scorer.run(convo(all_turns, final=True))
    assert (final.value, final.passed) == (3, False)
    assert (await SessionRepetition(max_repeats=3).run(convo(all_turns, final=True))).passed is True


async def test_repetition_counts_consecutive_non_empty_replies_only() -> None:
    scorer = SessionRepetition(max_repeats=1)
    apart = [turn(1, "same"), turn(2, "other"), turn(3, "same"), turn(4, ""), turn(5, ""), turn(6, "")]
    score = await scorer.run(convo(apart, final=True))
    assert (score.value, score.passed, score.reason) == (1, True, "no reply repeated in consecutive turns")
    empty = await scorer.run(convo([], final=True))
    assert (empty.value, empty.passed) == (0, True)
    with pytest.raises(ValueError, match="max_repeats"):
        SessionRepetition(max_repeats=0)


# -- targets and registration -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["session_errors", "session_length", "session_repetition"])
async def test_session_scorers_refuse_traces_and_examples(name: str) -> None:
    scorer = resolver().build(name, {"max_turns": 5} if name == "session_length" else {})
    for target in (agent_trace(10), Example(inputs="q", outputs="a")):
        with pytest.raises(TypeError, match=f"{name} scores conversations: use it in a rule with "
                                            f"`subject: session`; it was given a {type(target).__name__}"):
            await scorer.run(target)


def test_session_scorers_are_builtins() -> None:
    assert resolver().resolve("session_errors") is SessionErrors
    assert resolver().resolve("session_length") is SessionLength
    assert resolver().resolve("session_repetition") is SessionRepetition
    assert all(not cls.higher_is_better for cls in (SessionErrors, SessionLength, SessionRepetition))
