"""Stored traces, read back page by page in a stable order, as the wire form of `Trace`.

A trace is in the window when its newest version closed in [since, until). Pages follow the keyset
(closed_at, trace_id), so a page never repeats or skips a trace however the table is merged. Spans
are those stored with that version (`spans.trace_version`); rows stored twice count once.
The SQL and the row mapping (the reverse of `storage/rows.py`) are pure; `StoredTraces` runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.storage.filters import Eq, InSelect, MicrosRange, conjunction, literal, quote

__all__ = ["SPAN_SELECT", "TRACE_SELECT", "Page", "StoredTraces", "Window", "assemble", "quote", "span_wire", "trace_wire"]

Cursor = tuple[int, str]  # (closed_at in epoch microseconds, trace_id)

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


@dataclass(frozen=True)
class Window:
    database: str
    since_us: int
    until_us: int
    project: str | None = None

    @property
    def closed(self) -> MicrosRange:
        """Closed in the window."""
        return MicrosRange("closed_at", self.since_us, self.until_us)

    def _where(self) -> str:
        newest = (f"SELECT trace_id, max(version) FROM {self.database}.traces "
                  f"WHERE {MicrosRange('closed_at', self.since_us).sql()} GROUP BY trace_id")
        return conjunction(self.closed, InSelect("(trace_id, version)", newest), Eq("project", self.project))

    def count_sql(self) -> str:
        return f"SELECT count() FROM {self.database}.traces FINAL WHERE {self._where()}"

    def page_sql(self, after: Cursor | None, size: int) -> str:
        where = self._where()
        if after is not None:
            closed, trace_id = literal(int(after[0])), literal(str(after[1]))
            where += (f" AND (toUnixTimestamp64Micro(closed_at) > {closed} OR "
                      f"(toUnixTimestamp64Micro(closed_at) = {closed} AND trace_id > {trace_id}))")
        return (f"SELECT {TRACE_SELECT} FROM {self.database}.traces FINAL WHERE {where} "
                f"ORDER BY closed_us, trace_id LIMIT {int(size)}")

    def spans_sql(self, trace_ids: list[str]) -> str:
        """Every stored version's spans: a tuple IN on (trace_id, trace_version) costs more than
        dropping the few rows of older versions in `assemble`."""
        return f"SELECT {SPAN_SELECT} FROM {self.database}.spans WHERE trace_id IN ({', '.join(map(quote, trace_ids))})"


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


def assemble(trace_rows: list[list[Any]], span_rows: list[list[Any]]) -> list[dict[str, Any]]:
    """Traces in page order, each with the spans of its version once (by span id), in start order."""
    by_trace: dict[str, dict[str, dict[str, Any]]] = {row[0]: {} for row in trace_rows}
    versions = {row[0]: int(row[1]) for row in trace_rows}
    for row in span_rows:
        spans = by_trace.get(row[0])
        if spans is not None and int(row[-1]) == versions[row[0]]:
            spans[row[1]] = span_wire(row)
    out = []
    for row in trace_rows:
        spans = sorted(by_trace[row[0]].values(), key=lambda s: (s["start_ns"], s["span_id"]))
        out.append(trace_wire(row, spans))
    return out


@dataclass
class Page:
    traces: list[dict[str, Any]]
    last: Cursor | None  # the cursor after this page


class StoredTraces:
    """`query(sql) -> rows` is the Reader's (the running sink's endpoint, or ClickHouse itself)."""

    def __init__(self, window: Window, query: Callable[[str], list[list[Any]]]) -> None:
        self.window = window
        self._query = query

    def count(self) -> int:
        return int(self._query(self.window.count_sql())[0][0])

    def page(self, after: Cursor | None, size: int) -> Page:
        rows = self._query(self.window.page_sql(after, size))
        if not rows:
            return Page([], after)
        spans = self._query(self.window.spans_sql([r[0] for r in rows]))
        last = rows[-1]
        return Page(assemble(rows, spans), (int(last[9]), last[0]))
