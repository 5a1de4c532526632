"""An OpenTelemetry span -> an evalstream wire span (`pipeline.contracts.Span` as a dict).

Pure: standard library, orjson and the contracts' bounds only, so the exporter (in the instrumented
service) and the OTLP receiver (in the pipeline) share it. A producer's value out of range for an
optional field (a negative token count, a cost past the cap) is left out, never sent to be refused.
Three attribute vocabularies are understood, in this order of precedence: our own `evalstream.*`,
OpenInference, and the OpenTelemetry GenAI semantic conventions. Each field tries a fixed list of
attributes in order; the first one that is present *and usable* (a token count that is a non-negative
integer, a non-empty string) fills the field and is consumed, and every attribute not consumed is kept
in `attributes`. The table is in docs/opentelemetry.md.

Status: an ended OpenTelemetry span with status UNSET completed normally (instrumentations set
ERROR on failure and rarely set OK), so both UNSET and OK become "ok".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.contracts.bounds import (
    NAME_MAX_CHARS,
    TIMESTAMP_NS_MAX,
    cap_attributes,
)
from pipeline.otel.values import (
    as_count,
    as_text,
    as_usd,
    cap,
    is_index,
    json_or_text,
    parsed_json,
    plain,
    unflatten,
)

STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
DEFAULT_MAX_VALUE_BYTES = 32 * 1024
MAX_NAME_CHARS = NAME_MAX_CHARS  # the contract's limit on span names
MAX_ERROR_MESSAGE = 4000
MAX_STACK = 8000

Event = tuple[str, Mapping[str, Any]]
# OTLP's SpanKind numbers -> the wire span's `kind`; client and producer spans are remote calls the assembler
# waits for (pipeline/assembly/remote.py)
SPAN_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass(frozen=True, slots=True)
class OtelSpan:
    """One ended OpenTelemetry span, independent of where it came from (SDK object or OTLP)."""

    trace_id: str  # 32 lowercase hex characters
    span_id: str  # 16 lowercase hex characters
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    status_code: int = STATUS_UNSET
    status_message: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    events: Sequence[Event] = ()
    resource: Mapping[str, Any] = field(default_factory=dict)
    scope: str | None = None
    kind: int = 0  # OTLP's SpanKind: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer

    @property
    def is_root(self) -> bool:
        return not self.parent_span_id


# -- validation -----------------------------------------------------------------------------------

_HEX = re.compile(r"[0-9a-f]*")


def _valid_id(value: Any, length: int) -> bool:
    return (isinstance(value, str) and len(value) == length and _HEX.fullmatch(value) is not None
            and value.strip("0") != "")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 48 else text[:45] + "..."


def check_span(span: OtelSpan) -> tuple[str, str] | None:
    """Why this span cannot become a wire span, as (OTLP field name, problem); None if it can."""
    if not _valid_id(span.trace_id, 32):
        return "traceId", ("traceId must be 32 hex characters (16 bytes, not all zero), "
                           f"got {_show(span.trace_id)}")
    if not _valid_id(span.span_id, 16):
        return "spanId", ("spanId must be 16 hex characters (8 bytes, not all zero), "
                          f"got {_show(span.span_id)}")
    if span.parent_span_id and not _valid_id(span.parent_span_id, 16):
        return "parentSpanId", ("parentSpanId must be empty or 16 hex characters (8 bytes, not all zero), "
                                f"got {_show(span.parent_span_id)}")
    if not isinstance(span.name, str) or not span.name:
        return "name", "name must not be empty"
    if span.start_ns <= 0:
        return "startTimeUnixNano", "startTimeUnixNano must be set"
    if span.end_ns > TIMESTAMP_NS_MAX:
        return "endTimeUnixNano", (f"endTimeUnixNano ({span.end_ns}) is past the latest time the pipeline "
                                   f"stores ({TIMESTAMP_NS_MAX}, in 2262)")
    if span.end_ns < span.start_ns:
        return "endTimeUnixNano", (f"endTimeUnixNano ({span.end_ns}) is before "
                                   f"startTimeUnixNano ({span.start_ns})")
    if span.status_code not in (STATUS_UNSET, STATUS_OK, STATUS_ERROR):
        return "status.code", ("status.code must be 0 (unset), 1 (ok) or 2 (error), "
                               f"got {_show(span.status_code)}")
    return None


# -- attributes -----------------------------------------------------------------------------------

class _Attributes:
    """The span's attributes, tracking which ones a field consumed."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = {str(k): v for k, v in values.items()}
        self.used: set[str] = set()

    def first(self, keys: Sequence[str], convert: Callable[[Any], Any]) -> Any:
        """The first of `keys` whose value `convert` accepts (not None); that key is consumed."""
        for key in keys:
            if key in self.values and key not in self.used:
                value = convert(self.values[key])
                if value is not None:
                    self.used.add(key)
                    return value
        return None

    def flattened(self, prefix: str) -> Any:
        """Attributes `prefix.N.…` (OpenInference and legacy GenAI messages) as a list; consumed if any."""
        found = {k[len(prefix) + 1:]: v for k, v in self.values.items()
                 if k.startswith(prefix + ".") and is_index(k[len(prefix) + 1:].split(".", 1)[0])
                 and k not in self.used}
        if not found:
            return None
        self.used.update(f"{prefix}.{k}" for k in found)
        return unflatten(found)

    def rest(self) -> dict[str, Any]:
        return {k: v for k, v in self.values.items() if k not in self.used}


_OPENINFERENCE_KINDS = {
    "LLM": "llm", "TOOL": "tool", "AGENT": "agent", "CHAIN": "chain", "RETRIEVER": "retriever",
    "EMBEDDING": "embedding", "GUARDRAIL": "guardrail", "EVALUATOR": "evaluator", "RERANKER": "other",
    "PROMPT": "other", "UNKNOWN": "other",
}
_GENAI_OPERATIONS = {
    "chat": "llm", "text_completion": "llm", "generate_content": "llm", "embeddings": "embedding",
    "execute_tool": "tool", "invoke_agent": "agent", "create_agent": "agent", "retrieval": "retriever",
    "invoke_workflow": "chain",
}
_MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "embedding.model_name")


def _span_type(attrs: _Attributes) -> str:
    explicit = attrs.first(["evalstream.span_type"],
                           lambda v: as_text(v.strip().lower()[:64]) if as_text(v) else None)
    if explicit:
        return explicit
    # These two stay in `attributes`: several of their values map to one span type.
    kind = attrs.values.get("openinference.span.kind")
    if isinstance(kind, str) and kind.upper() in _OPENINFERENCE_KINDS:
        return _OPENINFERENCE_KINDS[kind.upper()]
    operation = attrs.values.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation.lower() in _GENAI_OPERATIONS:
        return _GENAI_OPERATIONS[operation.lower()]
    if any(as_text(attrs.values.get(key)) for key in _MODEL_KEYS):
        return "llm"
    return "function"


def _openinference_messages(attrs: _Attributes, prefix: str) -> list[Any] | None:
    messages = attrs.flattened(prefix)
    if not isinstance(messages, list):
        return None
    return [m["message"] if isinstance(m, dict) and isinstance(m.get("message"), dict) else m
            for m in messages]


def _io_value(attrs: _Attributes, direction: str) -> Any:
    """OpenInference `input.value` / `output.value`, parsed when its mime type says JSON."""
    value = attrs.first([f"{direction}.value"], lambda v: v if v is not None and v != "" else None)
    if value is None:
        return None
    mime = attrs.first([f"{direction}.mime_type"], as_text)
    if isinstance(value, str) and mime and mime.split(";")[0].strip().lower() == "application/json":
        return parsed_json(value)
    return plain(value)


# Per direction: GenAI messages, OpenInference messages, older GenAI content, GenAI tool call, and
# the older GenAI content event.
_IO_KEYS = {
    "input": ("gen_ai.input.messages", "llm.input_messages", "gen_ai.prompt", "gen_ai.tool.call.arguments",
              "gen_ai.content.prompt"),
    "output": ("gen_ai.output.messages", "llm.output_messages", "gen_ai.completion",
               "gen_ai.tool.call.result", "gen_ai.content.completion"),
}


def _io(attrs: _Attributes, events: list[Event], direction: str) -> Any:
    genai, openinference, legacy, tool, event = _IO_KEYS[direction]
    for candidate in (
        lambda: attrs.first([genai], json_or_text),
        lambda: _openinference_messages(attrs, openinference),
        lambda: attrs.first([legacy], json_or_text),
        lambda: attrs.flattened(legacy),  # OpenLLMetry: gen_ai.prompt.0.role / .content
        lambda: attrs.first([tool], json_or_text),
        lambda: _io_value(attrs, direction),
        lambda: _take_event_attribute(events, event, legacy),  # older GenAI: content in span events
    ):
        value = candidate()
        if value is not None:
            return value
    return None


def _take_event_attribute(events: list[Event], event_name: str, key: str) -> Any:
    for i, (name, attributes) in enumerate(events):
        if name == event_name and attributes.get(key) is not None:
            del events[i]
            return json_or_text(attributes[key])
    return None


def _error(span: OtelSpan, attrs: _Attributes, events: list[Event]) -> dict[str, Any]:
    for i in range(len(events) - 1, -1, -1):
        name, attributes = events[i]
        if name == "exception":
            del events[i]
            error: dict[str, Any] = {
                "type": as_text(attributes.get("exception.type")) or "Error",
                "message": (as_text(attributes.get("exception.message"))
                            or span.status_message)[:MAX_ERROR_MESSAGE],
            }
            stack = as_text(attributes.get("exception.stacktrace"))
            if stack:
                error["stack"] = stack[-MAX_STACK:]
            return error
    return {"type": attrs.first(["error.type"], as_text) or "Error",
            "message": span.status_message[:MAX_ERROR_MESSAGE]}


# -- the mapping ----------------------------------------------------------------------------------

def to_wire_span(span: OtelSpan, project: str = "default", *,
                 max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> dict[str, Any]:
    """The wire span for a span that passed `check_span`. Never raises on odd attribute values."""
    attrs = _Attributes(span.attributes)
    events = list(span.events)
    wire: dict[str, Any] = {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id or None,
        "name": span.name[:MAX_NAME_CHARS],
        "span_type": _span_type(attrs),
        "kind": SPAN_KINDS.get(span.kind),
        "start_ns": span.start_ns,
        "end_ns": span.end_ns,
        "project": (attrs.first(["evalstream.project"], as_text)
                    or as_text(span.resource.get("evalstream.project")) or project or "default"),
        "service": as_text(span.resource.get("service.name")),
        "status": "error" if span.status_code == STATUS_ERROR else "ok",
    }
    if span.status_code == STATUS_ERROR:
        wire["error"] = _error(span, attrs, events)
    wire["agent_name"] = attrs.first(["evalstream.agent.name", "gen_ai.agent.name", "agent.name"], as_text)
    wire["agent_id"] = attrs.first(["evalstream.agent.id", "gen_ai.agent.id"], as_text)
    wire["session_id"] = attrs.first(["evalstream.session.id", "gen_ai.conversation.id", "session.id"], as_text)
    wire["model"] = attrs.first(_MODEL_KEYS, as_text)
    wire["input_tokens"] = attrs.first(
        ["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"], as_count)
    wire["output_tokens"] = attrs.first(
        ["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"],
        as_count)
    total = attrs.first(["llm.token_count.total"], as_count)
    if total is None and wire["input_tokens"] is not None and wire["output_tokens"] is not None:
        total = as_count(wire["input_tokens"] + wire["output_tokens"])  # None past a UInt32
    wire["total_tokens"] = total
    wire["cost_usd"] = attrs.first(["llm.cost.total"], as_usd)
    for direction, key in (("input", "inputs"), ("output", "outputs")):
        value = _io(attrs, events, direction)
        if value is not None:
            wire[key] = cap(plain(value), max_value_bytes)

    attributes = {key: cap(plain(value), max_value_bytes) for key, value in attrs.rest().items()}
    if span.scope:
        attributes["otel.scope.name"] = span.scope
    if events:
        attributes["otel.events"] = cap(
            [{"name": name, "attributes": plain(event_attributes)} if event_attributes else {"name": name}
             for name, event_attributes in events],
            max_value_bytes)
    if attributes:
        wire["attributes"] = cap_attributes(attributes, "otel.dropped_attributes")
    return {key: value for key, value in wire.items() if value is not None}
