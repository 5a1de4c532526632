"""pipeline/views/session_view.py: the transcript of `sessions show` with its verdicts (pure, on plain rows).
The SQL of `sessions list` is tested with the filters (test_storage_filters.py)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from pipeline.views.session_view import build_view, render

HEADER = {"session_id": "chat-1", "version": 2, "project": "bot", "status": "complete",
          "close_reason": "end_marker", "turn_count": 3, "error_count": 1, "duration_ms": 42_500.0,
          "cost_usd": 0.0125}


def turn(n: int, **kw: Any) -> dict[str, Any]:
    return {"turn": n, "trace_id": f"t{n}", "trace_version": 1, "status": "complete", "input": f"question {n}",
            "output": f"answer {n}", "errors": 0, "agents": ["support"], "ends_session": False, **kw}


def score(rule: str, n: int, final: bool = False, passed: bool | None = None, **kw: Any) -> dict[str, Any]:
    return {"rule": rule, "scorer": "judge", "turn": n, "final": final, "status": "scored", "passed": passed,
            "value": None, "reason": f"{rule} after {n}", "scored_at": f"2027-01-15 10:00:0{n}", **kw}


def text_of(view: Any) -> str:
    console = Console(width=200, record=True)
    console.print(render(view))
    return console.export_text()


def test_each_look_sits_under_the_turn_it_was_judged_after_and_closing_verdicts_come_last() -> None:
    view = build_view(
        HEADER,
        [turn(3, ends_session=True), turn(1), turn(2, errors=1, status="incomplete", output="")],
        [score("goal", 1), score("goal", 2, passed=False, value="0.0"), score("tone", 1),
         score("goal", 3, final=True, passed=False), score("tone", 3, final=True, passed=True, value="1.0")],
        [{"rule": "goal", "outcome": "scored", "reason": ""}, {"rule": "tone", "outcome": "scored", "reason": ""}])
    assert [t.turn for t in view.turns] == [1, 2, 3]  # turn order, whatever order the rows came in
    assert [(v.rule, v.outcome) for v in view.turns[0].looks] == [("goal", "continue"), ("tone", "continue")]
    assert [(v.rule, v.outcome) for v in view.turns[1].looks] == [("goal", "finish: fail")]
    assert view.turns[2].looks == []
    assert [(v.rule, v.outcome) for v in view.closing] == [("goal", "fail"), ("tone", "pass")]
    assert view.pending == []  # rules with a closing verdict are not listed again

    text = text_of(view)
    assert ("session chat-1 v2 · bot · complete (end_marker) · 3 turn(s) · 42.5 s · $0.0125 · 1 error span(s)"
            in text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    at = {line: i for i, line in enumerate(lines)}
    assert "Turn 1 (trace t1 v1 · agents support)" in at
    assert "User: question 1" in at and "Agent: answer 1" in at
    assert "Turn 2 (trace t2 v1 · incomplete · 1 error(s) · agents support)" in at
    assert "Agent: (no output: the turn did not finish)" in at
    assert "Turn 3 (trace t3 v1 · agents support · ended the session)" in at
    # the look after turn 2 comes after turn 2's exchange and before turn 3
    assert at["Agent: (no output: the turn did not finish)"] < at["◆ goal (judge): finish: fail 0.0 — goal after 2"] \
        < at["Turn 3 (trace t3 v1 · agents support · ended the session)"]
    assert at["◆ goal (judge): continue — goal after 1"] < at["Turn 2 (trace t2 v1 · incomplete · 1 error(s) · "
                                                              "agents support)"]
    assert at["Closing verdicts"] < at["◆ goal (judge): fail — goal after 3"]
    assert "◆ tone (judge): pass 1.0 — tone after 3" in at


def test_rules_without_a_closing_verdict_show_their_decision_and_errors_show_their_message() -> None:
    view = build_view(
        {**HEADER, "status": "open", "close_reason": "", "turn_count": 2},
        [turn(1), turn(2)],
        [score("goal", 2, status="error", reason="TimeoutError: judge took 30 s", value="0.0"),
         score("tone", 5)],  # a look that names a turn this version does not have
        [{"rule": "goal", "outcome": "queued", "reason": ""},
         {"rule": "politeness", "outcome": "sampled_out", "reason": "sampling_rate=0.1"}])
    assert [(p.rule, p.outcome) for p in view.pending] == [("goal", "queued"), ("politeness", "sampled_out")]
    text = text_of(view)
    assert "open (running; as of turn 2) · 2 turn(s)" in text
    assert "◆ goal (judge): error — TimeoutError: judge took 30 s" in text  # no value for an error
    assert "◆ tone (judge) after turn 5: continue" in text  # shown, not lost
    assert "Closing verdicts (the session is still open)" in text
    assert "◆ politeness: sampled_out — sampling_rate=0.1" in text and "◆ goal: queued" in text


def test_a_rescored_closing_verdict_replaces_the_older_one_and_markup_in_a_conversation_is_shown_as_is() -> None:
    view = build_view(
        HEADER, [turn(1, input="what does [bold]x[/bold] mean?", output="[red]nothing[/]")],
        [score("goal", 1, final=True, passed=False, scored_at="2027-01-15 10:00:01"),
         score("goal", 1, final=True, passed=True, scored_at="2027-01-15 11:00:00")], [])
    assert [(v.rule, v.passed) for v in view.closing] == [("goal", True)]
    text = text_of(view)
    assert "User: what does [bold]x[/bold] mean?" in text and "Agent: [red]nothing[/]" in text


def test_an_empty_closing_section_says_so() -> None:
    assert "none yet" in text_of(build_view(HEADER, [turn(1)], [], []))
