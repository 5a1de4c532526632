"""A stored score -> one OpenTelemetry `gen_ai.evaluation.result` event (pure: no OpenTelemetry import).

The convention followed is pinned in `SEMCONV` (docs/opentelemetry.md, "Scores out"): the event name goes
in the log record's `event_name`, `gen_ai.evaluation.name` is required, the score's value and label are
conditionally required, the explanation is recommended, and `error.type` is set when the evaluation ended
in an error. The record is parented to the span the verdict is about: the scored span when the result has
one (`span_id`, async_evaluate), else the scored trace's root (`root_span_id`). What the convention has no
attribute for is under `evalstream.*`.

Trace ids: OpenTelemetry's are 16 bytes (32 hex characters), and that is what our SDK and `evalstream otlp`
produce. Our contracts accept any string, so `otel_trace_id` maps deterministically:
    32 hex characters (any case)  -> that id
    16 hex characters             -> left-padded with zeros (W3C trace context's rule for 64-bit ids)
    anything else, or all zeros   -> no trace context: the event is still exported, uncorrelated,
                                     with the original id in `evalstream.trace_id` (counted, reason given)
Span ids take 16 hex characters; another form leaves the record with the trace id alone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.contracts import ScoreResult, ScoreStatus

EVENT_NAME = "gen_ai.evaluation.result"
# open-telemetry/semantic-conventions-genai, docs/gen-ai/gen-ai-events.md at this commit (status: Development;
# the GenAI conventions moved there from open-telemetry/semantic-conventions, whose v1.41.1 defines error.type)
SEMCONV = "semantic-conventions-genai@002c8a6ea1c8a42b14a4527db83b3cabcded610a"

MAX_EXPLANATION_CHARS = 4096  # the explanation (a judge's reasoning can be long)
MAX_LABEL_CHARS = 256  # the convention wants a low-cardinality label
MAX_ATTRIBUTE_CHARS = 1024  # any other string attribute

SEVERITY_INFO = 9  # OpenTelemetry SeverityNumber.INFO: a verdict
SEVERITY_WARN = 13  # SeverityNumber.WARN: the evaluation ended in an error

_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_HEX16 = re.compile(r"[0-9a-fA-F]{16}")


@dataclass(frozen=True)
class EvaluationEvent:
    """What one log record carries: ids as integers (0 = none), attributes as OpenTelemetry values."""

    timestamp_ns: int
    trace_id: int
    span_id: int
    severity_number: int
    attributes: dict[str, Any] = field(default_factory=dict)
    uncorrelated: str | None = None  # why the record has no trace context (None: it has one)
    event_name: str = EVENT_NAME


def otel_trace_id(trace_id: str) -> int | None:
    """The 128-bit OpenTelemetry trace id for one of ours, or None when it has none (module docstring)."""
    if _HEX32.fullmatch(trace_id):
        value = int(trace_id, 16)
    elif _HEX16.fullmatch(trace_id):
        value = int(trace_id, 16)  # 64-bit ids are the low half, zero-padded on the left
    else:
        return None
    return value or None


def otel_span_id(span_id: str | None) -> int | None:
    if span_id and _HEX16.fullmatch(span_id):
        return int(span_id, 16) or None
    return None


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _score_value(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _score_label(result: ScoreResult) -> str | None:
    """The value when it is a label already, else pass/fail from the rule's threshold, else true/false."""
    if isinstance(result.value, str) and result.value:
        return _cap(result.value, MAX_LABEL_CHARS)
    if result.passed is not None:
        return "pass" if result.passed else "fail"
    if isinstance(result.value, bool):
        return "true" if result.value else "false"
    return None


def _judge(result: ScoreResult) -> dict[str, Any]:
    judge = result.metadata.get("judge") if isinstance(result.metadata, dict) else None
    return judge if isinstance(judge, dict) else {}


def evaluation_event(result: ScoreResult, *, sampling_rate: float | None = None,
                     now_ns: int = 0) -> EvaluationEvent:
    """The `gen_ai.evaluation.result` event of one score result. `sampling_rate` is the rule's, when the
    caller knows the rule; `now_ns` stands in for a result without `scored_at_ns`."""
    attrs: dict[str, Any] = {"gen_ai.evaluation.name": _cap(result.rule, MAX_ATTRIBUTE_CHARS)}
    error = result.status == ScoreStatus.ERROR
    if error:
        attrs["error.type"] = _cap(result.error_type or "_OTHER", MAX_ATTRIBUTE_CHARS)
    else:
        value = _score_value(result.value)
        if value is not None:
            attrs["gen_ai.evaluation.score.value"] = value
        label = _score_label(result)
        if label is not None:
            attrs["gen_ai.evaluation.score.label"] = label
    explanation = result.reason or (result.error_message or "" if error else "")
    if explanation:
        attrs["gen_ai.evaluation.explanation"] = _cap(explanation, MAX_EXPLANATION_CHARS)

    ours: dict[str, Any] = {
        "evalstream.rule": result.rule,
        "evalstream.scorer": result.scorer,
        "evalstream.scorer.version": result.scorer_version,
        "evalstream.trace_id": result.trace_id,
        "evalstream.trace.version": result.trace_version,
        "evalstream.job_id": result.job_id,  # the same for a redelivered result: a backend can deduplicate
        "evalstream.project": result.project,
        "evalstream.source": result.source.value,
        "evalstream.status": result.status.value,
    }
    if result.passed is not None:
        ours["evalstream.passed"] = result.passed
    if result.threshold is not None:
        ours["evalstream.threshold"] = float(result.threshold)
    if sampling_rate is not None:
        ours["evalstream.sampling_rate"] = float(sampling_rate)
    judge = _judge(result)
    if isinstance(judge.get("model"), str) and judge["model"]:
        ours["evalstream.judge.model"] = judge["model"]
    cost = judge.get("cost_usd")
    if isinstance(cost, int | float) and not isinstance(cost, bool) and math.isfinite(cost) and cost >= 0:
        ours["evalstream.judge.cost_usd"] = float(cost)
    if result.span_id:
        ours["evalstream.span_id"] = result.span_id
    if result.request_index:
        ours["evalstream.request_index"] = result.request_index
    if result.is_session:
        ours["evalstream.session.id"] = result.session_id
        if result.session_version is not None:
            ours["evalstream.session.version"] = result.session_version
        if result.final is not None:
            ours["evalstream.session.final"] = result.final
    for key, value in ours.items():
        attrs[key] = _cap(value, MAX_ATTRIBUTE_CHARS) if isinstance(value, str) else value

    trace_id = otel_trace_id(result.trace_id)
    span_id = (otel_span_id(result.span_id) or otel_span_id(result.root_span_id)) if trace_id else None
    return EvaluationEvent(
        timestamp_ns=result.scored_at_ns or now_ns,
        trace_id=trace_id or 0,
        span_id=span_id or 0,
        severity_number=SEVERITY_WARN if error else SEVERITY_INFO,
        attributes=attrs,
        uncorrelated=None if trace_id else "trace_id_not_otel",
    )
