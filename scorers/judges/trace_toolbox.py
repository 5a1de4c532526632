"""The trace tools as the judge model sees them: JSON schemas, and a dispatcher that runs a tool call."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from pipeline.contracts import Trace
from scorers.judges import trace_tools
from scorers.judges.records import TraceToolCall, note_activity
from scorers.judges.span_tree import SpanTree

log = logging.getLogger(__name__)

RESULT_CHARS = 12_000

_ID = {"type": "string", "description": "A span id as shown in brackets (a unique prefix is enough)."}

TOOL_SCHEMAS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "get_trace_info",
        "description": "Overview of the trace: status, duration, span counts by type, errors, agents, models, "
                       "tokens and cost.",
        "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
    }},
    {"type": "function", "function": {
        "name": "list_spans",
        "description": "List span summaries (id, parent, name, type, agent, duration, status) in tree order, "
                       "filtered and paged.",
        "parameters": {"type": "object", "properties": {
            "span_type": {"type": "string", "description": "llm, tool, agent, retriever, function, ..."},
            "name": {"type": "string", "description": "Case-insensitive substring of the span name."},
            "agent": {"type": "string"},
            "status": {"type": "string", "enum": ["ok", "error", "unset"]},
            "parent_id": {**_ID, "description": "Only the direct children of this span."},
            "offset": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer", "minimum": 1, "maximum": trace_tools.LIST_MAX},
        }, "additionalProperties": False},
    }},
    {"type": "function", "function": {
        "name": "get_spans",
        "description": f"Full details of up to {trace_tools.GET_MAX_SPANS} spans: inputs, outputs, attributes, "
                       f"error, model, tokens, children. Long payloads are cut.",
        "parameters": {"type": "object", "properties": {
            "span_ids": {"type": "array", "items": _ID, "maxItems": trace_tools.GET_MAX_SPANS},
        }, "required": ["span_ids"], "additionalProperties": False},
    }},
    {"type": "function", "function": {
        "name": "search_trace",
        "description": "Regular-expression search (case-insensitive) across span names, inputs, outputs, "
                       "attributes and errors. Returns matching spans with the text around each match.",
        "parameters": {"type": "object", "properties": {
            "pattern": {"type": "string", "description": "A Python regular expression."},
            "fields": {"type": "array", "items": {"type": "string", "enum": list(trace_tools.SEARCH_FIELDS)}},
            "max_matches": {"type": "integer", "minimum": 1, "maximum": 100},
        }, "required": ["pattern"], "additionalProperties": False},
    }},
]

TOOL_NAMES = frozenset(t["function"]["name"] for t in TOOL_SCHEMAS)


class TraceToolbox:
    """Runs the judge model's tool calls against one trace, and remembers them."""

    def __init__(self, trace: Trace, *, payload_chars: int = trace_tools.PAYLOAD_CHARS,
                 result_chars: int = RESULT_CHARS) -> None:
        self.tree = SpanTree(trace)
        self.payload_chars = payload_chars
        self.result_chars = result_chars
        self.calls: list[TraceToolCall] = []

    def run(self, name: str, arguments: str, step: int) -> str:
        """The tool's result as JSON text (an `error` object when the call is bad); logged at debug level."""
        started, began = time.perf_counter(), time.time()
        args: dict[str, Any] = {}
        error: str | None = None
        try:
            parsed = orjson.loads(arguments or "{}")
            if not isinstance(parsed, dict):
                raise TypeError("arguments must be a JSON object")
            args = parsed
            result = self._dispatch(name, args)
        except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
            result = {"error": f"bad arguments for {name}: {exc}"}
        if isinstance(result, dict) and "error" in result:
            error = str(result["error"])
        text = orjson.dumps(result).decode()
        if len(text) > self.result_chars:
            text = text[:self.result_chars] + f"… [result cut at {self.result_chars} chars: page or narrow the query]"
        ms = (time.perf_counter() - started) * 1000
        call = TraceToolCall(step, name, args, len(text), round(ms, 3), error, result=text, started_at=began)
        self.calls.append(call)
        note_activity(call)
        log.debug("agent judge on trace %s step %d: %s(%s) -> %d chars in %.1f ms%s", self.tree.trace.trace_id,
                  step, name, arguments, len(text), ms, f" error: {error}" if error else "")
        return text

    def _dispatch(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        tree = self.tree
        if name == "get_trace_info":
            return trace_tools.trace_info(tree)
        if name == "list_spans":
            allowed = {"span_type", "name", "agent", "status", "parent_id", "offset", "limit"}
            return trace_tools.list_spans(tree, **_only(args, allowed))
        if name == "get_spans":
            return trace_tools.get_spans(tree, args.get("span_ids"), max_chars=self.payload_chars)
        if name == "search_trace":
            options = _only(args, {"pattern", "fields", "max_matches"})
            pattern = options.pop("pattern", None)
            if not isinstance(pattern, str):
                return {"error": "pattern (a string) is required"}
            return trace_tools.search_trace(tree, pattern, **options)
        return {"error": f"unknown tool {name!r}; the tools are {sorted(TOOL_NAMES)}"}


def _only(args: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    unknown = set(args) - allowed
    if unknown:
        raise TypeError(f"unknown argument(s) {sorted(unknown)}")
    return {k: v for k, v in args.items() if v is not None}
