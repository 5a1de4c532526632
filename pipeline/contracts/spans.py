"""Span and SpanBatch: what instrumented services send, keyed by trace id.

One SpanBatch carries many spans of one trace, because a Faust worker handles a few
thousand events per second while the broker moves tens of thousands of messages.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.contracts.bounds import (
    ATTRIBUTES_MAX,
    EVALUATIONS_MAX,
    ID_MAX_CHARS,
    NAME_MAX_CHARS,
    SPAN_TYPE_MAX_CHARS,
    CostUsd,
    Finite,
    TimestampNs,
    UInt32,
)

CONTRACT_VERSION = 1


class SpanType(StrEnum):
    LLM = "llm"
    TOOL = "tool"
    FUNCTION = "function"
    AGENT = "agent"
    RETRIEVER = "retriever"
    CHAIN = "chain"
    EMBEDDING = "embedding"
    GUARDRAIL = "guardrail"
    EVALUATOR = "evaluator"
    OTHER = "other"


class SpanKind(StrEnum):
    """OpenTelemetry's span kinds. A CLIENT or PRODUCER span is a remote call: its trace waits for the callee."""

    INTERNAL = "internal"
    SERVER = "server"
    CLIENT = "client"
    PRODUCER = "producer"
    CONSUMER = "consumer"


class SpanStatus(StrEnum):
    UNSET = "unset"
    OK = "ok"
    ERROR = "error"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ErrorInfo(_Wire):
    type: str
    message: str = ""
    stack: str | None = None


class EvaluationRequest(_Wire):
    """An `async_evaluate` call attached to a span: score this example with that scorer."""

    scorer: str
    example: dict[str, Any] | None = None  # left out by the SDK when the request was not sampled
    sampling_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    threshold: Finite | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class Span(_Wire):
    """A span as sent. Every field is bounded by the column that stores it (contracts/bounds.py), so a span
    that validates can be stored; one that does not is refused by the assembler, naming the field."""

    trace_id: str = Field(min_length=1, max_length=ID_MAX_CHARS)
    span_id: str = Field(min_length=1, max_length=ID_MAX_CHARS)
    parent_span_id: str | None = Field(default=None, max_length=ID_MAX_CHARS)
    name: str = Field(min_length=1, max_length=NAME_MAX_CHARS)
    span_type: str = Field(default=SpanType.FUNCTION, max_length=SPAN_TYPE_MAX_CHARS)
    kind: SpanKind | None = None  # client / producer: it carried the trace to another service
    # On a root: how many other spans of the trace were still running in its process when it ended (work that
    # outlives the root); the trace waits for that process's `final` batch, up to remote_wait_s.
    spans_still_open: UInt32 | None = None
    start_ns: TimestampNs
    end_ns: TimestampNs
    status: SpanStatus = SpanStatus.UNSET
    error: ErrorInfo | None = None
    attributes: dict[str, Any] = Field(default_factory=dict, max_length=ATTRIBUTES_MAX)
    inputs: Any = None
    outputs: Any = None
    project: str = "default"
    service: str | None = None
    agent_name: str | None = None
    agent_id: str | None = None
    session_id: str | None = None  # over SESSION_ID_MAX_CHARS: the trace is kept, its turn dead-lettered
    model: str | None = None
    input_tokens: UInt32 | None = None
    output_tokens: UInt32 | None = None
    total_tokens: UInt32 | None = None
    cost_usd: CostUsd | None = None
    evaluations: list[EvaluationRequest] = Field(default_factory=list, max_length=EVALUATIONS_MAX)

    @property
    def is_root(self) -> bool:
        return not self.parent_span_id

    @property
    def duration_ms(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e6


class SpanBatch(_Wire):
    """Spans of one trace. `final` says the sender saw the root end and flushed everything."""

    # Levels of JSON nesting `decode` accepts (orjson writes 254): a trace, a job batch or a backfill
    # batch wraps these spans in a few more levels, and must still be writable.
    max_depth: ClassVar[int] = 128
    v: Literal[1] = 1
    kind: Literal["spans"] = "spans"
    trace_id: str = Field(min_length=1, max_length=ID_MAX_CHARS)
    spans: list[Span] = Field(default_factory=list)
    final: bool = False


class SpanBundle(_Wire):
    """SpanBatches of several traces of one partition, in one message (`kind: span_bundle`): the SDK packs a
    flush's traces so that the assembler handles one event for many traces. The assembler validates each
    batch alone, so a bad one is dead-lettered and the others go on."""

    v: Literal[1] = 1
    kind: Literal["span_bundle"] = "span_bundle"
    batches: list[SpanBatch]
