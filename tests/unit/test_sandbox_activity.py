"""pipeline/scoring/sandbox/protocol.py: the judges' activity a sandbox reports is untrusted. What parses is
kept; an entry of the wrong shape, or past the cap, is only counted as dropped, and nothing it says can
overflow the evaluation trace built from it."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.contracts import ScoreResult, ScoreStatus
from pipeline.scoring.evaluation_trace import build_evaluation_trace
from pipeline.scoring.sandbox.protocol import ACTIVITY_MAX_ENTRIES, activity_fields, parse_activity
from scorers.judges.records import JudgeActivity, JudgeCall, TraceToolCall


def call(**fields: Any) -> JudgeCall:
    return JudgeCall(model="m", messages=[{"role": "user", "content": "q"}], tool_names=[], tool_choice=None,
                     response_text="a", input_tokens=3, output_tokens=1, cost_usd=0.0001, latency_ms=2.0,
                     attempts=1, **fields)


def over_the_wire(activity: JudgeActivity) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(activity_fields(activity)))


def test_what_the_child_records_is_what_the_parent_gets() -> None:
    activity = JudgeActivity()
    activity.add(call())
    activity.add(TraceToolCall(step=1, name="search", arguments={"q": "x"}, result_chars=2, ms=0.5, result="ok"))
    wire = over_the_wire(activity)
    entries, dropped = parse_activity(wire["activity"], wire["activity_dropped"])
    assert dropped == 0
    assert entries[0].model == "m" and entries[0].input_tokens == 3  # type: ignore[union-attr]
    assert entries[1].result == "ok"  # type: ignore[union-attr]
    assert activity_fields(JudgeActivity()) == {}  # no judge call: no activity in the reply


def test_entries_of_the_wrong_shape_are_counted_not_kept() -> None:
    good = over_the_wire(_one(call()))["activity"][0]
    hostile = [
        "not an object",
        {"kind": "rootkit"},
        {**good, "input_tokens": -5},
        {**good, "input_tokens": True},
        {**good, "latency_ms": 1e300},  # would overflow the span's end time
        {**good, "started_at": "yesterday"},
        {**good, "messages": "hi"},
        {**good, "tool_calls": [1, 2]},
        {**good, "retries": [{"attempt": "x"}]},
        {"kind": "tool", "step": 1, "name": "t", "arguments": [], "result_chars": 0, "ms": 0, "started_at": 0},
    ]
    entries, dropped = parse_activity([good, *hostile], 3)
    assert len(entries) == 1 and dropped == 3 + len(hostile)
    assert parse_activity("everything", -1) == ((), 0)
    assert parse_activity(None, 2**40) == ((), 0)


def test_past_the_cap_entries_are_counted_as_dropped() -> None:
    activity = JudgeActivity(max_entries=ACTIVITY_MAX_ENTRIES + 10)
    for _ in range(ACTIVITY_MAX_ENTRIES + 10):
        activity.add(call())
    wire = over_the_wire(activity)
    assert len(wire["activity"]) == ACTIVITY_MAX_ENTRIES and wire["activity_dropped"] == 10
    entries, dropped = parse_activity(wire["activity"] * 2, wire["activity_dropped"])
    assert len(entries) == ACTIVITY_MAX_ENTRIES and dropped == 10 + ACTIVITY_MAX_ENTRIES


def test_what_parses_builds_a_valid_evaluation_trace() -> None:
    big = call(started_at=9.9e11)
    big.latency_ms = 9.9e11
    entries, _ = parse_activity(over_the_wire(_one(big))["activity"], 0)
    result = ScoreResult(job_id="j1", rule="r", trace_id="t1", trace_version=1, scorer="s", scorer_version="1",
                         status=ScoreStatus.SCORED, value=1.0, passed=True, scored_at_ns=1)
    batch = build_evaluation_trace("e" * 32, result, list(entries), started_ns=1, ended_ns=2)
    assert len(batch.spans) == 2  # the root and the call


def _one(entry: JudgeCall | TraceToolCall) -> JudgeActivity:
    activity = JudgeActivity()
    activity.add(entry)
    return activity
