"""SpanHandle → the wire span (`pipeline.contracts.Span` as a dict). Runs on the exporter's thread.

What the contract would refuse is kept within its bounds (pipeline/contracts/bounds.py) here, because a
refused span costs the pipeline its whole batch: a name or span type too long is cut, a token count or
cost out of range is left out.
"""

from __future__ import annotations

import traceback
from typing import Any

from pipeline.contracts.bounds import (
    EVALUATIONS_MAX,
    NAME_MAX_CHARS,
    SPAN_TYPE_MAX_CHARS,
    cap_attributes,
    is_cost,
    is_count,
)
from pipeline.sdk.capture import Capture
from pipeline.sdk.span import SpanHandle

MAX_ERROR_MESSAGE = 4000
MAX_STACK = 8000


def bound_inputs(call: tuple) -> dict[str, Any]:
    binder, args, kwargs = call
    return binder.bind(args, kwargs)


def error_info(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__name__,
        "message": str(exc)[:MAX_ERROR_MESSAGE],
        "stack": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-MAX_STACK:],
    }


def span_to_wire(span: SpanHandle, capture: Capture, project: str, service: str | None) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "trace_id": f"{span.trace_id_int:032x}",
        "span_id": f"{span.span_id_int:016x}",
        "parent_span_id": None if span.parent_id_int is None else f"{span.parent_id_int:016x}",
        "name": span.name[:NAME_MAX_CHARS],
        "span_type": span.span_type[:SPAN_TYPE_MAX_CHARS],
        "start_ns": span.start_ns,
        "end_ns": span.end_ns,
        "status": span.status,
        "project": project,
    }
    if service:
        wire["service"] = service
    if span.kind is not None:
        wire["kind"] = span.kind
    elif span.remote_parent:
        wire["kind"] = "server"  # its parent is a remote call of another service's span
    if span.spans_still_open:
        wire["spans_still_open"] = span.spans_still_open
    if span.agent is not None:
        wire["agent_name"], wire["agent_id"] = span.agent
    if span.session_id:
        wire["session_id"] = span.session_id
    inputs = bound_inputs(span.call) if span.call is not None else span.inputs
    if inputs is not None:
        wire["inputs"] = capture(inputs)
    if span.error is not None:
        wire["error"] = error_info(span.error)
    elif span.outputs is not None or span.call is not None:
        wire["outputs"] = capture(span.outputs)
    if span.attributes:
        wire["attributes"] = cap_attributes({str(k): capture(v) for k, v in span.attributes.items()})
    if span.llm:
        llm = span.llm
        wire["model"] = llm.get("model")
        tokens_in, tokens_out = llm.get("input_tokens"), llm.get("output_tokens")
        wire["input_tokens"] = tokens_in if is_count(tokens_in) else None
        wire["output_tokens"] = tokens_out if is_count(tokens_out) else None
        if wire["input_tokens"] is not None and wire["output_tokens"] is not None \
                and is_count(tokens_in + tokens_out):
            wire["total_tokens"] = tokens_in + tokens_out
        wire["cost_usd"] = llm["cost_usd"] if is_cost(llm.get("cost_usd")) else None
        if "extra" in llm:
            wire.setdefault("attributes", {})["llm"] = capture(llm["extra"])
    if span.evaluations:
        wire["evaluations"] = [{**request, "example": capture(request["example"])} if "example" in request
                               else request for request in span.evaluations[:EVALUATIONS_MAX]]
    return wire
