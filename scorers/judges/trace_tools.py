"""Tools an agent judge uses to look into a trace: pure functions over a SpanTree, plus their schemas.

Every result is a JSON-ready dict and bounded (paging, payload caps, a match limit), so one tool call
cannot flood the judge's context. A bad argument gives `{"error": ...}`, which the model can act on.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pipeline.contracts import Span
from scorers.judges.span_tree import SpanTree, render_value

LIST_LIMIT = 50
LIST_MAX = 200
GET_MAX_SPANS = 10
PAYLOAD_CHARS = 3000
SEARCH_MATCHES = 20
SEARCH_MATCHES_PER_FIELD = 3
SEARCH_CONTEXT = 80
SEARCH_FIELDS = ("name", "inputs", "outputs", "attributes", "error")
SEARCHED_CHARS = 200_000  # per field: a regex over megabytes of payload would stall the event loop


def trace_info(tree: SpanTree) -> dict[str, Any]:
    trace = tree.trace
    spans = trace.spans
    tokens_in = sum(s.input_tokens or 0 for s in spans)
    tokens_out = sum(s.output_tokens or 0 for s in spans)
    return {
        "trace_id": trace.trace_id,
        "name": trace.name,
        "project": trace.project,
        "status": str(trace.status),
        "close_reason": str(trace.close_reason),
        "duration_ms": round(trace.duration_ms, 3),
        "root_span_id": tree.short_id(trace.root) if trace.root else None,
        "span_count": len(spans),
        "spans_by_type": dict(Counter(s.span_type for s in spans).most_common()),
        "error_count": sum(s.status == "error" for s in spans),
        "agents": sorted({s.agent_name for s in spans if s.agent_name}),
        "models": sorted({s.model for s in spans if s.model}),
        "llm_tokens": {"input": tokens_in, "output": tokens_out},
        "cost_usd": round(trace.cost_usd, 6),
        "max_depth": max(tree.depths.values(), default=0),
    }


def list_spans(
    tree: SpanTree,
    *,
    span_type: str | None = None,
    name: str | None = None,
    agent: str | None = None,
    status: str | None = None,
    parent_id: str | None = None,
    offset: int = 0,
    limit: int = LIST_LIMIT,
) -> dict[str, Any]:
    """Span summaries in tree order, filtered (name: case-insensitive substring) and paged."""
    parent: Span | None = None
    if parent_id:
        parent = tree.resolve(parent_id)
        if parent is None:
            return {"error": f"no span with id {parent_id!r}"}
    offset, limit = max(0, int(offset)), max(1, min(LIST_MAX, int(limit)))
    needle = name.lower() if name else None
    chosen = [
        (span, depth) for span, depth in tree.walk()
        if (span_type is None or span.span_type == span_type)
        and (needle is None or needle in span.name.lower())
        and (agent is None or span.agent_name == agent)
        and (status is None or str(span.status) == status)
        and (parent is None or span.parent_span_id == parent.span_id)
    ]
    page = chosen[offset:offset + limit]
    following = offset + len(page)
    return {
        "total": len(chosen),
        "offset": offset,
        "next_offset": following if following < len(chosen) else None,
        "spans": [_summary(tree, span, depth) for span, depth in page],
    }


def _summary(tree: SpanTree, span: Span, depth: int) -> dict[str, Any]:
    parent = tree.by_id.get(span.parent_span_id or "")
    return {
        "span_id": tree.short_id(span),
        "parent_id": tree.short_id(parent) if parent else None,
        "depth": depth,
        "name": span.name,
        "type": span.span_type,
        "agent": span.agent_name,
        "duration_ms": round(span.duration_ms, 3),
        "status": str(span.status),
        "error": span.error.type if span.error else None,
        "children": len(tree.children_of(span.span_id)),
    }


def get_spans(tree: SpanTree, span_ids: list[str], max_chars: int = PAYLOAD_CHARS) -> dict[str, Any]:
    """Full details of up to 10 spans (ids or unique prefixes); each payload cut at `max_chars`."""
    if not isinstance(span_ids, list) or not span_ids:
        return {"error": "span_ids must be a non-empty list of span ids"}
    found, missing = [], []
    for ref in span_ids[:GET_MAX_SPANS]:
        span = tree.resolve(str(ref))
        if span is None:
            missing.append(ref)
        else:
            found.append(_details(tree, span, max_chars))
    result: dict[str, Any] = {"spans": found, "missing": missing}
    if len(span_ids) > GET_MAX_SPANS:
        result["not_fetched"] = span_ids[GET_MAX_SPANS:]
        result["note"] = f"at most {GET_MAX_SPANS} spans per call"
    return result


def _details(tree: SpanTree, span: Span, max_chars: int) -> dict[str, Any]:
    kids = tree.children_of(span.span_id)
    out = _summary(tree, span, tree.depths.get(span.span_id, 0))
    out.update({
        "full_span_id": span.span_id,
        "start_offset_ms": round(max(0, span.start_ns - tree.trace.start_ns) / 1e6, 3),
        "model": span.model,
        "input_tokens": span.input_tokens,
        "output_tokens": span.output_tokens,
        "cost_usd": span.cost_usd,
        "inputs": render_value(span.inputs, max_chars) if span.inputs is not None else None,
        "outputs": render_value(span.outputs, max_chars) if span.outputs is not None else None,
        "attributes": render_value(span.attributes, max_chars) if span.attributes else None,
        "error": ({"type": span.error.type, "message": render_value(span.error.message, max_chars)}
                  if span.error else None),
        "child_ids": [tree.short_id(k) for k in kids[:20]] + ([f"… {len(kids) - 20} more"] if len(kids) > 20 else []),
    })
    return out


def search_trace(
    tree: SpanTree,
    pattern: str,
    *,
    fields: list[str] | None = None,
    max_matches: int = SEARCH_MATCHES,
    context_chars: int = SEARCH_CONTEXT,
    ignore_case: bool = True,
) -> dict[str, Any]:
    """Regex search over span names, inputs, outputs, attributes and errors, with context around each match."""
    try:
        regex = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        return {"error": f"invalid regular expression {pattern!r}: {exc}"}
    chosen = [f for f in (fields or SEARCH_FIELDS) if f in SEARCH_FIELDS]
    if not chosen:
        return {"error": f"fields must be among {list(SEARCH_FIELDS)}"}
    max_matches = max(1, min(100, int(max_matches)))
    context_chars = max(0, min(400, int(context_chars)))
    matches: list[dict[str, Any]] = []
    spans_matched = 0
    more = False
    for span, _ in tree.walk():
        hit = False
        for field in chosen:
            text = _field_text(span, field)
            if not text:
                continue
            for count, m in enumerate(regex.finditer(text)):
                if count >= SEARCH_MATCHES_PER_FIELD or len(matches) >= max_matches:
                    more = True
                    break
                hit = True
                before = text[max(0, m.start() - context_chars):m.start()]
                after = text[m.end():m.end() + context_chars]
                matches.append({"span_id": tree.short_id(span), "span_name": span.name, "field": field,
                                "match": m.group(0)[:200], "context": f"{before}[[{m.group(0)[:200]}]]{after}"})
        spans_matched += hit
        if len(matches) >= max_matches:
            more = True
            break
    return {"pattern": pattern, "matches": matches, "spans_matched": spans_matched, "truncated": more}


def _field_text(span: Span, field: str) -> str:
    if field == "name":
        return span.name
    if field == "error":
        return f"{span.error.type}: {span.error.message}" if span.error else ""
    value = {"inputs": span.inputs, "outputs": span.outputs, "attributes": span.attributes or None}[field]
    return "" if value is None else render_value(value, SEARCHED_CHARS)
