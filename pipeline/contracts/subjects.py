"""What a span rule's scorer receives: the span it is about, and the trace it belongs to for context.

A `SpanSubject` is not a wire message: the scorer worker builds it from a job (`subject: span`) and the
trace that travels with it. Its accessors read the span; `trace` is there for a scorer that needs the
surroundings (the parent, the other calls, the root's request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.contracts.spans import ErrorInfo, Span
from pipeline.contracts.traces import Trace


@dataclass(frozen=True)
class SpanSubject:
    span: Span
    trace: Trace

    @classmethod
    def of(cls, trace: Trace, span_id: str) -> SpanSubject:
        """The subject for `span_id` of `trace`; KeyError when the trace has no such span."""
        for span in trace.spans:
            if span.span_id == span_id:
                return cls(span=span, trace=trace)
        raise KeyError(f"span {span_id!r} is not in trace {trace.trace_id} v{trace.version}")

    @property
    def span_id(self) -> str:
        return self.span.span_id

    @property
    def trace_id(self) -> str:
        return self.trace.trace_id

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def span_type(self) -> str:
        return self.span.span_type

    @property
    def inputs(self) -> Any:
        return self.span.inputs

    @property
    def outputs(self) -> Any:
        return self.span.outputs

    @property
    def attributes(self) -> dict[str, Any]:
        return self.span.attributes

    @property
    def model(self) -> str | None:
        return self.span.model

    @property
    def agent(self) -> str | None:
        return self.span.agent_name

    @property
    def tokens(self) -> dict[str, int | None]:
        """input / output / total tokens as the span reported them (None where it did not)."""
        s = self.span
        total = s.total_tokens
        if total is None and (s.input_tokens is not None or s.output_tokens is not None):
            total = (s.input_tokens or 0) + (s.output_tokens or 0)
        return {"input": s.input_tokens, "output": s.output_tokens, "total": total}

    @property
    def cost(self) -> float | None:
        """The span's cost in USD, when it has one."""
        return self.span.cost_usd

    @property
    def error(self) -> ErrorInfo | None:
        return self.span.error

    @property
    def has_error(self) -> bool:
        return self.span.status == "error"

    @property
    def duration_ms(self) -> float:
        return self.span.duration_ms

    @property
    def parent(self) -> Span | None:
        parent_id = self.span.parent_span_id
        return next((s for s in self.trace.spans if parent_id and s.span_id == parent_id), None)
