"""scorers/: the built-in scorers on hand-built traces, Scorer.decide, @scorer and the registry."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.contracts import ErrorInfo, Example, Span, Trace
from pipeline.errors import ScorerNotFoundError, ScorerReturnTypeError
from scorers import Score, Scorer, builtin_names, scorer
from scorers.builtin import ErrorSpans, RepeatedToolCalls, TraceLatency
from scorers.testing import resolver


def _span(span_id: str, name: str = "op", **kw: Any) -> Span:
    return Span(trace_id="t", span_id=span_id, parent_span_id=kw.pop("parent", "root"), name=name,
                start_ns=kw.pop("start_ns", 0), end_ns=kw.pop("end_ns", 0), **kw)


def _trace(spans: list[Span] | None = None, duration_ms: float = 100.0) -> Trace:
    return Trace(trace_id="t", version=1, status="complete", close_reason="quiet_period", root_span_id="root",
                 start_ns=1_000_000_000, end_ns=1_000_000_000 + int(duration_ms * 1e6),
                 spans=spans if spans is not None else [_span("root", parent=None)])


# -- trace_latency ----------------------------------------------------------------------------------

async def test_trace_latency_value_is_the_duration_in_ms() -> None:
    s = TraceLatency(max_ms=3000)
    score = await s.run(_trace(duration_ms=2500))
    assert score.value == 2500.0
    assert "2500 ms" in score.reason and "3000 ms" in score.reason
    assert s.decide(score, None) == (True, 3000.0)


@pytest.mark.parametrize("max_ms, passed", [(2000, False), (2499.999, False), (2500, True), (2600, True)])
async def test_trace_latency_passes_at_or_under_max_ms(max_ms: float, passed: bool) -> None:
    s = TraceLatency(max_ms=max_ms)
    score = await s.run(_trace(duration_ms=2500))
    assert s.decide(score, None) == (passed, float(max_ms))


async def test_trace_latency_rule_threshold_wins() -> None:
    s = TraceLatency(max_ms=1000)
    score = await s.run(_trace(duration_ms=2500))
    assert s.decide(score, None) == (False, 1000.0)
    assert s.decide(score, 5000.0) == (True, 5000.0)
    assert s.decide(score, 2000.0) == (False, 2000.0)


def test_trace_latency_default_and_invalid_params() -> None:
    assert TraceLatency().threshold == 5000.0
    with pytest.raises(ValueError, match="max_ms"):
        TraceLatency(max_ms=0)
    with pytest.raises(TypeError):
        TraceLatency(limit=3)  # type: ignore[call-arg]


@pytest.mark.parametrize("cls", [TraceLatency, ErrorSpans, RepeatedToolCalls])
async def test_trace_scorers_refuse_examples(cls: type[Scorer]) -> None:
    with pytest.raises(TypeError, match="traces, not examples"):
        await cls().run(Example(inputs="x"))


# -- error_spans ------------------------------------------------------------------------------------

async def test_error_spans_passes_a_clean_trace() -> None:
    s = ErrorSpans()
    score = await s.run(_trace([_span("root", parent=None), _span("a", status="ok")]))
    assert score.value == 0 and score.reason == "no span in error"
    assert s.decide(score, None) == (True, 0.0)


async def test_error_spans_counts_errors_and_names_the_first() -> None:
    spans = [
        _span("root", parent=None),
        _span("a", name="search", status="error", error=ErrorInfo(type="HTTPError", message="502 from upstream")),
        _span("b", name="answer", status="error"),
        _span("c", status="ok"),
    ]
    s = ErrorSpans()
    score = await s.run(_trace(spans))
    assert score.value == 2
    assert "2 span(s)" in score.reason and "search" in score.reason
    assert "HTTPError: 502 from upstream" in score.reason
    assert s.decide(score, None) == (False, 0.0)
    assert ErrorSpans(max_errors=2).decide(score, None) == (True, 2.0)
    assert s.decide(score, 5.0) == (True, 5.0)


async def test_error_spans_without_error_info() -> None:
    score = await ErrorSpans().run(_trace([_span("x", name="boom", status="error")]))
    assert score.value == 1 and "status=error" in score.reason


def test_error_spans_rejects_negative_max_errors() -> None:
    with pytest.raises(ValueError, match="max_errors"):
        ErrorSpans(max_errors=-1)


# -- repeated_tool_calls ----------------------------------------------------------------------------

def _tool(span_id: str, name: str, inputs: Any, span_type: str = "tool") -> Span:
    return _span(span_id, name=name, span_type=span_type, inputs=inputs)


async def test_repeated_tool_calls_finds_a_loop() -> None:
    spans = [
        _span("root", parent=None),
        _tool("1", "search", {"q": "refund", "page": 1}),
        _tool("2", "search", {"page": 1, "q": "refund"}),  # same input, other key order
        _tool("3", "search", {"q": "refund", "page": 1}),
        _tool("4", "search", {"q": "refund", "page": 2}),
        _tool("5", "lookup", {"q": "refund", "page": 1}),
        _tool("6", "search", {"q": "refund", "page": 1}, span_type="llm"),  # not a tool
    ]
    s = RepeatedToolCalls()
    score = await s.run(_trace(spans))
    assert score.value == 3
    assert "search called 3x" in score.reason and "refund" in score.reason
    assert s.decide(score, None) == (False, 2.0)
    assert RepeatedToolCalls(max_repeats=3).decide(score, None) == (True, 3.0)


async def test_repeated_tool_calls_without_repeats_or_tools() -> None:
    s = RepeatedToolCalls()
    once = await s.run(_trace([_tool("1", "search", {"q": 1}), _tool("2", "search", {"q": 2})]))
    assert once.value == 1 and s.decide(once, None) == (True, 2.0)
    none = await s.run(_trace([_span("root", parent=None, span_type="llm")]))
    assert none.value == 0 and none.reason == "no tool calls"


def test_repeated_tool_calls_rejects_max_repeats_0() -> None:
    with pytest.raises(ValueError, match="max_repeats"):
        RepeatedToolCalls(max_repeats=0)


# -- Scorer.decide ----------------------------------------------------------------------------------

class Higher(Scorer):
    name = "higher"
    threshold = 0.5


class Plain(Scorer):
    name = "plain"


@pytest.mark.parametrize("score, rule_threshold, expected", [
    (Score(value=0.7), None, (True, 0.5)),  # scorer threshold, higher is better
    (Score(value=0.3), None, (False, 0.5)),
    (Score(value=0.5), None, (True, 0.5)),  # boundary passes
    (Score(value=0.7), 0.8, (False, 0.8)),  # rule threshold wins
    (Score(value=0.7, passed=True), 0.8, (False, 0.8)),  # ...even over the scorer's own passed
    (Score(value=0.3, passed=True), None, (True, 0.5)),  # own passed wins over own threshold
    (Score(value=True), None, (True, 0.5)),  # bools are not compared with the threshold
    (Score(value=False), 0.1, (False, 0.1)),
    (Score(value="good"), None, (None, 0.5)),  # a label with no verdict
    (Score(value=None, passed=False), None, (False, 0.5)),
    (Score(value=0), 0.0, (True, 0.0)),  # a zero threshold is a threshold
])
def test_decide(score: Score, rule_threshold: float | None, expected: tuple) -> None:
    assert Higher().decide(score, rule_threshold) == expected


def test_decide_without_any_threshold() -> None:
    assert Plain().decide(Score(value=0.9), None) == (None, None)
    assert Plain().decide(Score(value=0.9), 0.5) == (True, 0.5)


def test_class_scorer_without_params_rejects_params() -> None:
    with pytest.raises(TypeError, match="takes no params"):
        Plain(x=1)


async def test_sync_class_scorer_returning_a_bare_float() -> None:
    class Bare(Scorer):
        name = "bare"

        def score(self, target: Any) -> float:
            return 0.25

    score = await Bare().run(_trace())
    assert score == Score(value=0.25)


# -- @scorer ----------------------------------------------------------------------------------------

@scorer(threshold=0.5)
def overlap(target: Any, weight: float = 1.0) -> float:
    """Fraction of expected words in the output."""
    expected = set(str(target.expected).split())
    got = set(str(target.outputs).split())
    return weight * len(expected & got) / len(expected)


@scorer(name="is_polite", version="2")
def polite(target: Any) -> bool:
    return "please" in str(target.outputs)


@scorer(threshold=100, higher_is_better=False)
async def cost_cents(target: Any) -> float:
    return target.cost_usd * 100


@scorer()
def label(target: Any) -> str:
    return "positive"


@scorer()
def nothing(target: Any) -> None:
    return None


EXAMPLE = Example(outputs="refund issued please wait", expected="refund issued today")


async def test_function_scorer_float_with_threshold_and_params() -> None:
    s = overlap()
    assert isinstance(s, Scorer) and s.name == "overlap" and s.threshold == 0.5
    score = await s.run(EXAMPLE)
    assert score.value == pytest.approx(2 / 3) and s.decide(score, None) == (True, 0.5)
    halved = overlap(weight=0.5)
    score = await halved.run(EXAMPLE)
    assert score.value == pytest.approx(1 / 3) and halved.decide(score, None) == (False, 0.5)
    assert overlap.__doc__ == "Fraction of expected words in the output."


async def test_function_scorer_bool() -> None:
    s = polite()
    assert s.name == "is_polite" and s.version == "2"
    score = await s.run(EXAMPLE)
    assert score.value is True and s.decide(score, None) == (True, None)
    rude = await s.run(Example(outputs="no"))
    assert s.decide(rude, None) == (False, None)


async def test_async_function_scorer_lower_is_better() -> None:
    s = cost_cents()
    cheap = _trace([_span("root", parent=None, cost_usd=0.5)])
    dear = _trace([_span("root", parent=None, cost_usd=2.0)])
    assert s.decide(await s.run(cheap), None) == (True, 100)
    assert s.decide(await s.run(dear), None) == (False, 100)


async def test_function_scorer_label_and_bad_return() -> None:
    score = await label().run(EXAMPLE)
    assert score.value == "positive" and label().decide(score, None) == (None, None)
    with pytest.raises(ScorerReturnTypeError, match="returned NoneType"):
        await nothing().run(EXAMPLE)


# -- registry ---------------------------------------------------------------------------------------

def test_builtins_are_registered_by_name() -> None:
    assert builtin_names() == ["agent_judge", "error_spans", "groundedness", "helpfulness", "json_output",
                               "llm_criteria", "llm_label", "llm_scale", "pii_leak", "repeated_tool_calls",
                               "session_agent_judge", "session_criteria", "session_errors", "session_length",
                               "session_repetition", "task_completion", "tool_errors", "trace_cost", "trace_latency"]
    assert resolver().resolve("trace_latency") is TraceLatency
    assert isinstance(resolver().build("error_spans", {"max_errors": 1}), ErrorSpans)


def test_dotted_paths_resolve_classes_and_function_scorers() -> None:
    assert resolver().resolve(f"{__name__}:Higher") is Higher
    assert resolver().resolve(f"{__name__}:overlap") is overlap


@pytest.mark.parametrize("ref, fragment", [
    ("nope", "unknown scorer 'nope'"),
    ("no_such_module_xyz:thing", "cannot import"),
    (f"{__name__}:_span", "is not a Scorer"),
    (f"{__name__}:missing", "is not a Scorer"),
])
def test_unknown_scorers(ref: str, fragment: str) -> None:
    with pytest.raises(ScorerNotFoundError, match=fragment):
        resolver().resolve(ref)
