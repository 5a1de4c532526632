"""A job's judge activity -> its evaluation trace: one whole, final SpanBatch (pure).

    root     evaluator span of the job: rule, scorer, the evaluated trace (id, version, span), the verdict
    ├ llm    one per model call: model, messages, response, tokens, cost, latency, attempts, retries, error
    ├ tool   one per tool a judge ran for the model: name, arguments, what it returned
    └ ...    in the order they started (a tool run follows the call that asked for it)

Bounded, never failing: at most `max_spans` calls and tool runs (the rest counted on the root), each text
cut at `text_chars` with a marker, values nested deeper than `max_depth` kept as JSON text, and the whole
encoded batch within `max_bytes`: texts are cut shorter until it fits, then the latest spans are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.contracts import ErrorInfo, ScoreResult, Span, SpanBatch, SpanStatus, SpanType, encode
from pipeline.contracts.bounds import ID_MAX_CHARS, NAME_MAX_CHARS, TIMESTAMP_NS_MAX, is_cost, is_count
from pipeline.contracts.evaluation_traces import JUDGE_PROJECT, SERVICE
from scorers.judges.records import JudgeCall, TraceToolCall

TRUNCATED = "evalstream.truncated"  # on a span whose texts were cut: the cap in characters


@dataclass(frozen=True)
class EvaluationTraceLimits:
    max_spans: int = 256  # calls and tool runs
    text_chars: int = 20_000  # each message content, response, tool result
    max_depth: int = 12  # deeper values are kept as JSON text
    max_bytes: int = 1024 * 1024  # the encoded SpanBatch
    min_text_chars: int = 200  # cut no shorter than this before dropping spans


def build_evaluation_trace(trace_id: str, result: ScoreResult, entries: Sequence[JudgeCall | TraceToolCall], *,
                           started_ns: int, ended_ns: int, dropped: int = 0,
                           limits: EvaluationTraceLimits = EvaluationTraceLimits()) -> SpanBatch:
    """The evaluation trace `trace_id` of `result`'s job, from the judge activity recorded while it ran."""
    kept, over = list(entries[:limits.max_spans]), max(0, len(entries) - limits.max_spans) + dropped
    chars = limits.text_chars
    while True:
        batch = _batch(trace_id, result, kept, over, started_ns, ended_ns, chars, limits.max_depth)
        size = len(encode(batch))
        if size <= limits.max_bytes:
            return batch
        if chars > limits.min_text_chars:
            # shrink in proportion, with a margin: the texts are most of the size
            chars = max(limits.min_text_chars, int(chars * min(0.5, limits.max_bytes / size)))
        elif kept:
            cut = max(1, math.ceil(len(kept) * (1 - limits.max_bytes / size)))
            kept, over = kept[:-cut], over + cut
        else:  # the root alone is over the limit: only its own texts are left to cut
            return _batch(trace_id, result, [], over, started_ns, ended_ns, 0, 1)


def _batch(trace_id: str, result: ScoreResult, entries: list[JudgeCall | TraceToolCall], dropped: int,
           started_ns: int, ended_ns: int, chars: int, depth: int) -> SpanBatch:
    root_id = _span_id(0)
    children = [_llm_span(e, trace_id, _span_id(i), root_id, chars, depth) if isinstance(e, JudgeCall)
                else _tool_span(e, trace_id, _span_id(i), root_id, chars, depth)
                for i, e in enumerate(entries, start=1)]
    start = min([_ns(started_ns), *(s.start_ns for s in children)])
    end = max([_ns(ended_ns), start, *(s.end_ns for s in children)])
    root = _root_span(trace_id, root_id, result, entries, dropped, start, end, chars, depth)
    return SpanBatch(trace_id=trace_id, spans=[root, *children], final=True)


def _root_span(trace_id: str, span_id: str, result: ScoreResult, entries: list[JudgeCall | TraceToolCall],
               dropped: int, start: int, end: int, chars: int, depth: int) -> Span:
    cap = _Cap(chars, depth)
    calls = [e for e in entries if isinstance(e, JudgeCall)]
    attributes: dict[str, Any] = {
        "evalstream.rule": result.rule, "evalstream.scorer": result.scorer, "evalstream.job_id": result.job_id,
        "evalstream.evaluated_trace_id": result.trace_id, "evalstream.evaluated_trace_version": result.trace_version,
        "evalstream.source": result.source.value, "evalstream.judge.calls": len(calls),
        "evalstream.judge.tool_calls": len(entries) - len(calls), "evalstream.attempts": result.attempts,
    }
    for key, value in (("evalstream.evaluated_span_id", result.span_id),
                       ("evalstream.session_id", result.session_id),
                       ("evalstream.session_version", result.session_version)):
        if value is not None:
            attributes[key] = value
    if dropped:
        attributes["evalstream.judge.spans_dropped"] = dropped
    error = None
    if result.error_type:
        error = ErrorInfo(type=result.error_type[:200], message=cap.text(result.error_message))
    verdict = {"status": result.status.value, "value": result.value, "passed": result.passed,
               "reason": cap.text(result.reason),
               "criteria": [c.model_dump(mode="json") for c in result.criteria]}
    tokens_in = sum(c.input_tokens for c in calls if is_count(c.input_tokens))
    tokens_out = sum(c.output_tokens for c in calls if is_count(c.output_tokens))
    cost = sum(c.cost_usd for c in calls if is_cost(c.cost_usd))
    return Span(
        trace_id=trace_id, span_id=span_id, name=f"evaluate {result.rule}"[:NAME_MAX_CHARS],
        span_type=SpanType.EVALUATOR, start_ns=start, end_ns=end,
        status=SpanStatus.ERROR if error else SpanStatus.OK, error=error,
        attributes={**attributes, "evalstream.judge.input_tokens": tokens_in,
                    "evalstream.judge.output_tokens": tokens_out, "evalstream.judge.cost_usd": cost},
        inputs={"trace_id": result.trace_id, "trace_version": result.trace_version, "span_id": result.span_id,
                "rule": result.rule, "scorer": result.scorer},
        outputs=cap.value(verdict), project=JUDGE_PROJECT, service=SERVICE,
        agent_name=result.scorer[:NAME_MAX_CHARS] or None,
    )


def _llm_span(call: JudgeCall, trace_id: str, span_id: str, parent: str, chars: int, depth: int) -> Span:
    cap = _Cap(chars, depth)
    start = _ns(call.started_at * 1e9)
    end = _ns(start + round(max(0.0, call.latency_ms) * 1e6))
    attributes: dict[str, Any] = {"evalstream.judge.attempts": call.attempts, "evalstream.judge.cached": call.cached}
    if call.retries:
        attributes["evalstream.judge.retries"] = cap.value(
            [{"attempt": r.attempt, "error": r.error, "status": r.status, "wait_s": r.wait_s,
              "retry_after_s": r.retry_after_s} for r in call.retries[:50]])
        if len(call.retries) > 50:
            attributes["evalstream.judge.retries_dropped"] = len(call.retries) - 50
    inputs = cap.value({"messages": call.messages, "tools": call.tool_names, "tool_choice": call.tool_choice})
    outputs = cap.value({"text": call.response_text,
                         "tool_calls": [{"id": t.id, "name": t.name, "arguments": t.arguments} for t in call.tool_calls]})
    error = ErrorInfo(type="JudgeCallError", message=cap.text(call.error)) if call.error else None
    if cap.cut:
        attributes[TRUNCATED] = chars
    tokens_in = call.input_tokens if is_count(call.input_tokens) else None
    tokens_out = call.output_tokens if is_count(call.output_tokens) else None
    total = (tokens_in or 0) + (tokens_out or 0)
    return Span(
        trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=f"chat {call.model}"[:NAME_MAX_CHARS],
        span_type=SpanType.LLM, start_ns=start, end_ns=end,
        status=SpanStatus.ERROR if call.error else SpanStatus.OK,
        error=error, attributes=attributes, inputs=inputs, outputs=outputs, project=JUDGE_PROJECT, service=SERVICE,
        model=call.model[:NAME_MAX_CHARS], input_tokens=tokens_in, output_tokens=tokens_out,
        total_tokens=total if is_count(total) else None,
        cost_usd=call.cost_usd if is_cost(call.cost_usd) else None,
    )


def _tool_span(run: TraceToolCall, trace_id: str, span_id: str, parent: str, chars: int, depth: int) -> Span:
    cap = _Cap(chars, depth)
    start = _ns(run.started_at * 1e9)
    end = _ns(start + round(max(0.0, run.ms) * 1e6))
    attributes: dict[str, Any] = {"evalstream.judge.step": run.step, "evalstream.judge.result_chars": run.result_chars}
    inputs, outputs = cap.value(run.arguments), cap.text(run.result)
    error = ErrorInfo(type="ToolError", message=cap.text(run.error)) if run.error else None
    if cap.cut:
        attributes[TRUNCATED] = chars
    return Span(
        trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=(run.name or "?")[:200],
        span_type=SpanType.TOOL, start_ns=start, end_ns=end,
        status=SpanStatus.ERROR if run.error else SpanStatus.OK,
        error=error, attributes=attributes, inputs=inputs, outputs=outputs,
        project=JUDGE_PROJECT, service=SERVICE,
    )


def _span_id(index: int) -> str:
    return f"{index + 1:016x}"[:ID_MAX_CHARS]


def _ns(value: float) -> int:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return int(min(max(0, value), TIMESTAMP_NS_MAX))


class _Cap:
    """Cuts texts at `chars` (with a marker) and nesting at `depth`; `cut` says whether anything was cut."""

    def __init__(self, chars: int, depth: int) -> None:
        self.chars, self.depth, self.cut = chars, depth, False

    def text(self, text: str | None) -> str:
        text = text or ""
        if len(text) <= self.chars:
            return text
        self.cut = True
        return f"{text[:self.chars]}… [{len(text) - self.chars} more chars]"

    def value(self, value: Any, depth: int | None = None) -> Any:
        """`value` with every string cut, and anything below `depth` levels as (cut) JSON text."""
        depth = self.depth if depth is None else depth
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth <= 0:
            self.cut = True
            return self.text(orjson.dumps(value, default=str).decode())
        if isinstance(value, dict):
            return {str(k)[:NAME_MAX_CHARS]: self.value(v, depth - 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v, depth - 1) for v in value]
        return self.text(str(value))
