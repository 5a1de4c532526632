"""Stored rows back to the wire form of `Trace` and its spans: the reverse of `rows.py`. Pure.

The SELECT column lists give times in epoch microseconds (what DateTime64(6) holds), so the round trip
of a trace through storage is exact.

Which spans belong to a version: the `spans` table keeps one row per span id, replaced by the row of a later
version once merged (`ReplacingMergeTree(trace_version)`). `assemble` (many traces, each at its newest
version) takes the rows stored with that version. `trace_from_rows` (any version) gives each span id its
newest row at or below the version; when a later version's rows have replaced some of them (fewer spans than
the version's `span_count`), the missing ones come from the later rows, earliest start first.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.contracts.traces import Trace
from pipeline.storage.filters import Eq, OneOf, where

Rows = list[list[Any]]

TRACE_SELECT = (
    "trace_id, version, project, status, close_reason, root_span_id, name, "
    "toUnixTimestamp64Micro(start_time) AS start_us, toUnixTimestamp64Micro(end_time) AS end_us, "
    "toUnixTimestamp64Micro(closed_at) AS closed_us"
)
SPAN_SELECT = (
    "trace_id, span_id, parent_span_id, project, service, name, span_type, "
    "toUnixTimestamp64Micro(start_time) AS start_us, toUnixTimestamp64Micro(end_time) AS end_us, status, "
    "error_type, error_message, agent_name, agent_id, session_id, model, input_tokens, output_tokens, "
    "total_tokens, cost_usd, attributes, inputs, outputs, kind, trace_version"
)
TRACE_FIELDS = len(TRACE_SELECT.split(", "))  # a version's row is TRACE_SELECT, then span_count


def version_sql(database: str, trace_id: str, version: int) -> str:
    """The `traces` row of one version: TRACE_SELECT + span_count, for `trace_from_rows`."""
    return (f"SELECT {TRACE_SELECT}, span_count FROM {database}.traces FINAL "
            f"{where(Eq('trace_id', trace_id), Eq('version', int(version)))}LIMIT 1")


def spans_sql(database: str, trace_ids: list[str]) -> str:
    """Every stored row of the traces' spans, of every version (no FINAL: rows of older versions not merged
    away yet count). A tuple IN on (trace_id, trace_version) costs more than dropping the few extra rows."""
    return f"SELECT {SPAN_SELECT} FROM {database}.spans {where(OneOf('trace_id', trace_ids))}".rstrip()


def _lenient_json(text: str) -> Any:
    """`rows._json` stored strings as they were and everything else as JSON."""
    if text == "":
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def span_wire(row: list[Any]) -> dict[str, Any]:
    (trace_id, span_id, parent, project, service, name, span_type, start_us, end_us, status, error_type,
     error_message, agent_name, agent_id, session_id, model, input_tokens, output_tokens, total_tokens, cost_usd,
     attributes, inputs, outputs, kind, _version) = row
    attrs = _lenient_json(attributes)
    return {
        "trace_id": trace_id, "span_id": span_id, "parent_span_id": parent or None, "name": name,
        "span_type": span_type, "start_ns": int(start_us) * 1000, "end_ns": int(end_us) * 1000, "status": status,
        "error": {"type": error_type, "message": error_message} if error_type else None,
        "attributes": attrs if isinstance(attrs, dict) else {}, "inputs": _lenient_json(inputs),
        "outputs": _lenient_json(outputs), "project": project, "service": service or None,
        "agent_name": agent_name or None, "agent_id": agent_id or None, "session_id": session_id or None,
        "model": model or None, "input_tokens": input_tokens, "output_tokens": output_tokens,
        "total_tokens": total_tokens, "cost_usd": cost_usd, "kind": kind or None,
    }


def trace_wire(row: list[Any], spans: list[dict[str, Any]]) -> dict[str, Any]:
    trace_id, version, project, status, close_reason, root_span_id, name, start_us, end_us, closed_us = row
    return {
        "v": 1, "trace_id": trace_id, "version": int(version), "project": project, "status": status,
        "close_reason": close_reason, "root_span_id": root_span_id or None, "name": name or None,
        "start_ns": int(start_us) * 1000, "end_ns": int(end_us) * 1000, "closed_at_ns": int(closed_us) * 1000,
        "spans": spans,
    }


def _in_start_order(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(spans, key=lambda s: (s["start_ns"], s["span_id"]))


def assemble(trace_rows: Rows, span_rows: Rows) -> list[dict[str, Any]]:
    """Traces (TRACE_SELECT rows) in their order, each with the spans stored with its version, once (by span
    id), in start order."""
    by_trace: dict[str, dict[str, dict[str, Any]]] = {row[0]: {} for row in trace_rows}
    versions = {row[0]: int(row[1]) for row in trace_rows}
    for row in span_rows:
        spans = by_trace.get(row[0])
        if spans is not None and int(row[-1]) == versions[row[0]]:
            spans[row[1]] = span_wire(row)
    return [trace_wire(row, _in_start_order(list(by_trace[row[0]].values()))) for row in trace_rows]


def trace_from_rows(trace_rows: Rows, span_rows: Rows) -> Trace | None:
    """The `traces` row of one version (`version_sql`) and its trace's span rows (`spans_sql`) -> a Trace,
    or None when that version is not stored."""
    if not trace_rows:
        return None
    row = list(trace_rows[0])
    version, span_count = int(row[1]), int(row[TRACE_FIELDS] or 0)
    mine: dict[str, tuple[int, list[Any]]] = {}  # span id -> its newest row at or below the version
    later: dict[str, tuple[int, list[Any]]] = {}  # span id -> its earliest row above it
    for span in span_rows:
        span_id, span_version = span[1], int(span[-1])
        if span_version <= version:
            if span_id not in mine or span_version > mine[span_id][0]:
                mine[span_id] = (span_version, span)
        elif span_id not in later or span_version < later[span_id][0]:
            later[span_id] = (span_version, span)
    spans = [span_wire(r) for _, r in mine.values()]
    missing = _in_start_order([span_wire(r) for s, (_, r) in later.items() if s not in mine])
    spans += missing[: max(0, span_count - len(spans))]
    return Trace.model_validate(trace_wire(row[:TRACE_FIELDS], _in_start_order(spans)))
