"""scorers/builtin: tool errors and retries, cost limits, JSON output and PII / secret leaks."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.contracts import ErrorInfo, Example, Span, Trace
from scorers.builtin import JsonOutput, PiiLeak, ToolErrors, TraceCost
from scorers.testing import resolver


def _span(span_id: str, name: str = "op", **kw: Any) -> Span:
    return Span(trace_id="t", span_id=span_id, parent_span_id=kw.pop("parent", "root"), name=name,
                start_ns=kw.pop("start_ns", 0), end_ns=kw.pop("end_ns", 0), **kw)


def _trace(*spans: Span, output: Any = None) -> Trace:
    root = _span("root", "agent", parent=None, outputs=output)
    return Trace(trace_id="t", version=1, status="complete", close_reason="quiet_period", root_span_id="root",
                 start_ns=0, end_ns=1, spans=[root, *spans])


def _tool(i: int, name: str, ok: bool = True) -> Span:
    return _span(f"s{i}", name, span_type="tool", start_ns=i, status="ok" if ok else "error",
                 error=None if ok else ErrorInfo(type="Timeout", message="upstream"))


async def _decide(scorer: Any, target: Any) -> tuple[Any, bool | None, str]:
    score = await scorer.run(target)
    passed, _ = scorer.decide(score, None)
    return score.value, passed, score.reason


async def test_tool_errors_counts_failures_and_retries() -> None:
    trace = _trace(_tool(1, "search", ok=False), _tool(2, "search"), _tool(3, "fetch"))
    value, passed, reason = await _decide(ToolErrors(max_errors=0, max_retries=1), trace)
    assert (value, passed) == (2, False) and "1 failed tool call" in reason and "search (Timeout)" in reason
    assert (await _decide(ToolErrors(max_errors=1, max_retries=1), trace))[1] is True
    assert (await _decide(ToolErrors(), _trace(_tool(1, "a"), _tool(2, "a"))))[:2] == (0, True)  # no failure


async def test_trace_cost_checks_dollars_and_tokens() -> None:
    trace = _trace(_span("l1", "llm", cost_usd=0.02, input_tokens=900, output_tokens=200),
                   _span("l2", "llm", cost_usd=None, total_tokens=100))
    assert (await _decide(TraceCost(max_usd=0.05), trace))[:2] == (0.02, True)
    _, passed, reason = await _decide(TraceCost(max_usd=0.05, max_tokens=1000), trace)
    assert passed is False and "1200 tokens > 1000" in reason
    with pytest.raises(ValueError, match="max_usd, max_tokens"):
        TraceCost()


@pytest.mark.parametrize(("output", "passed", "why"), [
    ('{"order": 7, "status": "shipped"}', True, "matches"),
    ({"order": 7, "status": "shipped"}, True, "matches"),
    ('{"order": "seven"}', False, "order: 'seven' is not of type 'integer'"),
    ("Sure! here is the JSON: {", False, "not valid JSON"),
    (None, False, "no output"),
])
async def test_json_output_validates_against_a_schema(output: Any, passed: bool, why: str) -> None:
    schema = {"type": "object", "required": ["order"], "properties": {"order": {"type": "integer"}}}
    value, ok, reason = await _decide(JsonOutput(schema=schema), _trace(output=output))
    assert ok is passed and value is passed and why in reason


async def test_json_output_works_on_examples_and_rejects_a_broken_schema() -> None:
    assert (await _decide(JsonOutput(), Example(outputs="[1, 2]")))[1] is True
    with pytest.raises(Exception, match="is not valid under any of the given schemas|is not of type"):
        JsonOutput(schema={"type": 12})


async def test_pii_leak_finds_and_masks_pii_and_secrets() -> None:
    text = ("Mail ann@example.com or call 415-555-0134. Card 4111 1111 1111 1111, not 1234 5678 9012 3456. "
            "Key sk-abcdefghijklmnopqrstuvwx123")
    score = await PiiLeak().run(_trace(output=text))
    kinds = sorted(f["kind"] for f in score.metadata["findings"])
    assert kinds == ["credit_card", "email", "openai_key", "phone"]  # the non-Luhn number is not a card
    assert "ann@example.com" not in str(score.metadata) and "sk-abcdefghijklmnop" not in str(score.metadata)
    assert PiiLeak().decide(score, None)[0] is False
    clean = await PiiLeak().run(Example(outputs="Your package ships Monday."))
    assert clean.value == 0 and PiiLeak().decide(clean, None)[0] is True


async def test_pii_leak_scope_and_custom_patterns() -> None:
    trace = _trace(_span("t1", "lookup", outputs={"email": "bob@corp.io"}), output="done")
    assert (await PiiLeak().run(trace)).value == 0  # only the final output by default
    assert (await PiiLeak(scope="all_spans").run(trace)).value == 1
    custom = PiiLeak(detect=["email"], patterns={"employee_id": r"EMP-\d{6}"})
    assert (await custom.run(_trace(output="ask EMP-123456"))).reason == "1 finding(s): employee_id"
    with pytest.raises(ValueError, match="unknown detectors"):
        PiiLeak(detect=["dna"])


def test_new_builtins_are_reachable_by_name_with_params() -> None:
    scorers = resolver()
    assert isinstance(scorers.build("tool_errors", {"max_retries": 0}), ToolErrors)
    assert isinstance(scorers.build("pii_leak", {"detect": ["email"]}), PiiLeak)
