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

import base64
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.contracts.bounds import (
    NAME_MAX_CHARS,
    TIMESTAMP_NS_MAX,
    cap_attributes,
    is_cost,
    is_count,
)

STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
DEFAULT_MAX_VALUE_BYTES = 32 * 1024
MAX_NAME_CHARS = NAME_MAX_CHARS  # the contract's limit on span names
MAX_ERROR_MESSAGE = 4000
MAX_STACK = 8000
TRUNCATED = "…[truncated]"
_MAX_INDEX_DIGITS = 32  # int() refuses strings of over 4300 digits; no index or count is this long
_MAX_DEPTH = 64  # orjson writes at most 254 levels of nesting, and a wire span wraps a value in a few more

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


# -- values ---------------------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """A JSON-able copy of an attribute value (OpenTelemetry values are scalars, sequences and maps)."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)  # orjson encodes 64-bit integers only
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [plain(v) for v in value]
    return str(value)


def cap(value: Any, max_bytes: int) -> Any:
    """`value` if its JSON fits in `max_bytes`, else its (JSON) text cut to fit and marked."""
    if isinstance(value, str):
        if len(value) * 4 <= max_bytes:
            return value
        raw = value.encode()
    elif value is None or isinstance(value, bool | int | float):
        return value
    elif _too_deep(value):  # orjson could not write it: keep it as text
        return cap(str(value), max_bytes)
    else:
        raw = orjson.dumps(value)
    if len(raw) <= max_bytes:
        return value
    return raw[:max_bytes].decode(errors="ignore") + TRUNCATED


def _is_index(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= _MAX_INDEX_DIGITS


def _too_deep(value: Any, depth: int = 0) -> bool:
    if isinstance(value, Mapping):
        items: Any = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return False
    return depth >= _MAX_DEPTH or any(_too_deep(item, depth + 1) for item in items)


def _parsed(text: str) -> Any:
    """The JSON document in `text`, or `text` itself if it is not JSON or nested too deep to write back
    (orjson reads 1024 levels but writes only 254)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return text if _too_deep(value) else value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if (isinstance(value, float) and value.is_integer()) or (isinstance(value, str) and _is_index(value)):
        value = int(value)
    return value if is_count(value) else None


def _usd(value: Any) -> float | None:
    return float(value) if is_cost(value) else None


def _json_or_text(value: Any) -> Any:
    """A JSON document if the string holds one (messages and tool arguments are sent as JSON text)."""
    if isinstance(value, str):
        if not value:
            return None
        return _parsed(value) if value[0] in "[{" else value
    return plain(value)


def _unflatten(flat: Mapping[str, Any]) -> Any:
    """{"0.message.role": "user"} -> [{"message": {"role": "user"}}]: numeric segments are list indices."""
    root: dict[str, Any] = {}
    for path, value in flat.items():
        node = root
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        if not isinstance(node.get(leaf), dict):  # a leaf never hides a subtree with the same name
            node[leaf] = plain(value)
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(_is_index(key) for key in node):
        return [_lists(node[key]) for key in sorted(node, key=int)]
    return {key: _lists(value) for key, value in node.items()}


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
                 if k.startswith(prefix + ".") and _is_index(k[len(prefix) + 1:].split(".", 1)[0])
                 and k not in self.used}
        if not found:
            return None
        self.used.update(f"{prefix}.{k}" for k in found)
        return _unflatten(found)

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
                           lambda v: _text(v.strip().lower()[:64]) if _text(v) else None)
    if explicit:
        return explicit
    # These two stay in `attributes`: several of their values map to one span type.
    kind = attrs.values.get("openinference.span.kind")
    if isinstance(kind, str) and kind.upper() in _OPENINFERENCE_KINDS:
        return _OPENINFERENCE_KINDS[kind.upper()]
    operation = attrs.values.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation.lower() in _GENAI_OPERATIONS:
        return _GENAI_OPERATIONS[operation.lower()]
    if any(_text(attrs.values.get(key)) for key in _MODEL_KEYS):
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
    mime = attrs.first([f"{direction}.mime_type"], _text)
    if isinstance(value, str) and mime and mime.split(";")[0].strip().lower() == "application/json":
        return _parsed(value)
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
        lambda: attrs.first([genai], _json_or_text),
        lambda: _openinference_messages(attrs, openinference),
        lambda: attrs.first([legacy], _json_or_text),
        lambda: attrs.flattened(legacy),  # OpenLLMetry: gen_ai.prompt.0.role / .content
        lambda: attrs.first([tool], _json_or_text),
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
            return _json_or_text(attributes[key])
    return None


def _error(span: OtelSpan, attrs: _Attributes, events: list[Event]) -> dict[str, Any]:
    for i in range(len(events) - 1, -1, -1):
        name, attributes = events[i]
        if name == "exception":
            del events[i]
            error: dict[str, Any] = {
                "type": _text(attributes.get("exception.type")) or "Error",
                "message": (_text(attributes.get("exception.message"))
                            or span.status_message)[:MAX_ERROR_MESSAGE],
            }
            stack = _text(attributes.get("exception.stacktrace"))
            if stack:
                error["stack"] = stack[-MAX_STACK:]
            return error
    return {"type": attrs.first(["error.type"], _text) or "Error",
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
        "project": (attrs.first(["evalstream.project"], _text)
                    or _text(span.resource.get("evalstream.project")) or project or "default"),
        "service": _text(span.resource.get("service.name")),
        "status": "error" if span.status_code == STATUS_ERROR else "ok",
    }
    if span.status_code == STATUS_ERROR:
        wire["error"] = _error(span, attrs, events)
    wire["agent_name"] = attrs.first(["evalstream.agent.name", "gen_ai.agent.name", "agent.name"], _text)
    wire["agent_id"] = attrs.first(["evalstream.agent.id", "gen_ai.agent.id"], _text)
    wire["session_id"] = attrs.first(["evalstream.session.id", "gen_ai.conversation.id", "session.id"], _text)
    wire["model"] = attrs.first(_MODEL_KEYS, _text)
    wire["input_tokens"] = attrs.first(
        ["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"], _count)
    wire["output_tokens"] = attrs.first(
        ["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"],
        _count)
    total = attrs.first(["llm.token_count.total"], _count)
    if total is None and wire["input_tokens"] is not None and wire["output_tokens"] is not None:
        total = _count(wire["input_tokens"] + wire["output_tokens"])  # None past a UInt32
    wire["total_tokens"] = total
    wire["cost_usd"] = attrs.first(["llm.cost.total"], _usd)
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
