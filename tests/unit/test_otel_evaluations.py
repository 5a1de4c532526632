"""pipeline/otel/evaluations.py: a score result -> the `gen_ai.evaluation.result` event (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.contracts import ScoreResult
from pipeline.otel.evaluations import (
    EVENT_NAME,
    MAX_EXPLANATION_CHARS,
    SEVERITY_INFO,
    SEVERITY_WARN,
    evaluation_event,
    otel_span_id,
    otel_trace_id,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT = "00f067aa0ba902b7"
CHILD = "53995c3f42cd8ad8"


def result(**fields: Any) -> ScoreResult:
    base: dict[str, Any] = {"job_id": "job-1", "rule": "helpful", "scorer": "llm_judge", "scorer_version": "3",
                            "trace_id": TRACE, "trace_version": 2, "root_span_id": ROOT, "status": "scored",
                            "value": 0.8, "passed": True, "threshold": 0.5, "reason": "answers the question",
                            "scored_at_ns": 1_700_000_000_000_000_000}
    return ScoreResult(**{**base, **fields})


def test_a_trace_level_score_is_an_event_on_the_root_span() -> None:
    event = evaluation_event(result(metadata={"judge": {"model": "openai/gpt-4o-mini", "cost_usd": 0.0012}}),
                             sampling_rate=0.25)
    assert event.event_name == EVENT_NAME == "gen_ai.evaluation.result"
    assert event.trace_id == int(TRACE, 16) and event.span_id == int(ROOT, 16)
    assert event.timestamp_ns == 1_700_000_000_000_000_000 and event.severity_number == SEVERITY_INFO
    assert event.uncorrelated is None
    a = event.attributes
    assert a["gen_ai.evaluation.name"] == "helpful"
    assert a["gen_ai.evaluation.score.value"] == 0.8
    assert a["gen_ai.evaluation.score.label"] == "pass"
    assert a["gen_ai.evaluation.explanation"] == "answers the question"
    assert "error.type" not in a
    assert a["evalstream.rule"] == "helpful" and a["evalstream.scorer"] == "llm_judge"
    assert a["evalstream.scorer.version"] == "3" and a["evalstream.trace.version"] == 2
    assert a["evalstream.judge.model"] == "openai/gpt-4o-mini" and a["evalstream.judge.cost_usd"] == 0.0012
    assert a["evalstream.sampling_rate"] == 0.25
    assert a["evalstream.passed"] is True and a["evalstream.threshold"] == 0.5
    assert a["evalstream.job_id"] == "job-1" and a["evalstream.trace_id"] == TRACE
    assert "evalstream.session.id" not in a and "evalstream.span_id" not in a


def test_a_span_scored_result_is_an_event_on_its_span() -> None:
    event = evaluation_event(result(span_id=CHILD, request_index=2))
    assert event.span_id == int(CHILD, 16)
    assert event.attributes["evalstream.span_id"] == CHILD and event.attributes["evalstream.request_index"] == 2


def test_an_error_result_has_error_type_and_no_score() -> None:
    event = evaluation_event(result(status="error", value=None, passed=None, error_type="ScorerTimeoutError",
                                    error_message="no result within 30 s", reason="scorer error: timeout"))
    a = event.attributes
    assert a["error.type"] == "ScorerTimeoutError" and event.severity_number == SEVERITY_WARN
    assert "gen_ai.evaluation.score.value" not in a and "gen_ai.evaluation.score.label" not in a
    assert a["gen_ai.evaluation.explanation"] == "scorer error: timeout"
    assert a["evalstream.status"] == "error"
    unnamed = evaluation_event(result(status="error", value=None, passed=None, reason=""))
    assert unnamed.attributes["error.type"] == "_OTHER"  # the convention's fallback value


@pytest.mark.parametrize(("value", "passed", "score", "label"), [
    (True, None, 1.0, "true"),
    (False, None, 0.0, "false"),
    (False, False, 0.0, "fail"),
    ("relevant", None, None, "relevant"),
    (3, None, 3.0, None),
    (None, None, None, None),
])
def test_values_and_labels(value: Any, passed: bool | None, score: float | None, label: str | None) -> None:
    a = evaluation_event(result(value=value, passed=passed, threshold=None)).attributes
    assert a.get("gen_ai.evaluation.score.value") == score
    assert a.get("gen_ai.evaluation.score.label") == label
    assert "evalstream.passed" not in a if passed is None else a["evalstream.passed"] is passed


def test_a_session_result_names_its_session_and_its_latest_turns_trace() -> None:
    event = evaluation_event(result(root_span_id=None, session_id="conv-9", session_version=3, turn=4, final=True))
    assert event.trace_id == int(TRACE, 16) and event.span_id == 0  # the trace alone: no root span known
    assert event.attributes["evalstream.session.id"] == "conv-9"
    assert event.attributes["evalstream.session.version"] == 3 and event.attributes["evalstream.session.final"] is True


def test_attribute_sizes_are_bounded() -> None:
    a = evaluation_event(result(reason="x" * 100_000, value="L" * 10_000, rule="r" * 5000)).attributes
    assert len(a["gen_ai.evaluation.explanation"]) == MAX_EXPLANATION_CHARS
    assert a["gen_ai.evaluation.explanation"].endswith("…")
    assert len(a["gen_ai.evaluation.score.label"]) == 256
    assert len(a["gen_ai.evaluation.name"]) == 1024 and len(a["evalstream.rule"]) == 1024


def test_trace_id_mapping() -> None:
    assert otel_trace_id(TRACE) == int(TRACE, 16)
    assert otel_trace_id(TRACE.upper()) == int(TRACE, 16)
    assert otel_trace_id("a3ce929d0e0e4736") == int("a3ce929d0e0e4736", 16)  # 64-bit: zero-padded
    for other in ("trace-1", "", "0" * 32, TRACE + "0", "g" * 32):
        assert otel_trace_id(other) is None
    assert otel_span_id(ROOT) == int(ROOT, 16)
    assert otel_span_id("root") is None and otel_span_id(None) is None and otel_span_id("0" * 16) is None


def test_a_trace_id_that_is_not_opentelemetrys_gives_an_uncorrelated_event_that_keeps_it() -> None:
    event = evaluation_event(result(trace_id="trace-1", root_span_id="root"))
    assert event.trace_id == 0 and event.span_id == 0
    assert event.uncorrelated == "trace_id_not_otel"
    assert event.attributes["evalstream.trace_id"] == "trace-1"
    one_bad_span = evaluation_event(result(span_id="not-hex"))
    assert one_bad_span.span_id == int(ROOT, 16)  # falls back to the root


def test_a_result_without_a_time_takes_now() -> None:
    assert evaluation_event(result(scored_at_ns=0), now_ns=42).timestamp_ns == 42
