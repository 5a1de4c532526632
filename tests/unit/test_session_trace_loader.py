"""pipeline/sessions/trace_loader.py: a session scorer loads a turn's stored trace version, the way the sink
stored it, through the sink's query endpoint (embedded chDB) without blocking its event loop."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.contracts import ErrorInfo, Span, Trace
from pipeline.errors import StorageError
from pipeline.runfile import update_run_file
from pipeline.sessions.trace_loader import make_trace_loader, trace_from_rows
from pipeline.settings import Settings
from pipeline.storage import rows
from pipeline.storage.query_server import QueryServer


def embedded(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, clickhouse_dsn=None)  # chDB under data_dir, whatever the environment says


US = 1_000  # stored times are microseconds: use whole microseconds so the round trip is exact


def span(trace_id: str, span_id: str, start: int, **kw: Any) -> Span:
    return Span(trace_id=trace_id, span_id=span_id, name=kw.pop("name", span_id), start_ns=start * US,
                end_ns=(start + 5) * US, **kw)


def trace(version: int, spans: list[Span], **kw: Any) -> Trace:
    return Trace(trace_id=spans[0].trace_id, version=version, project="bot", status="complete",
                 close_reason="quiet_period", root_span_id=spans[0].span_id, name=spans[0].name,
                 start_ns=spans[0].start_ns, end_ns=max(s.end_ns for s in spans), closed_at_ns=99 * US, spans=spans,
                 **kw)


def stored(t: Trace) -> tuple[list[Any], list[list[Any]]]:
    """The trace as the sink stored it, read back as the loader selects it (TRACE_SELECT + span_count)."""
    r = dict(zip(rows.TRACE_COLUMNS, rows.trace_row(t), strict=True))
    trace_row = [r["trace_id"], r["version"], r["project"], r["status"], r["close_reason"], r["root_span_id"],
                 r["name"], r["start_time"], r["end_time"], r["closed_at"], r["span_count"]]
    span_rows = []
    for s in t.spans:
        c = dict(zip(rows.SPAN_COLUMNS, rows.span_row(s, t.version), strict=True))
        span_rows.append([c["trace_id"], c["span_id"], c["parent_span_id"], c["project"], c["service"], c["name"],
                          c["span_type"], c["start_time"], c["end_time"], c["status"], c["error_type"],
                          c["error_message"], c["agent_name"], c["agent_id"], c["session_id"], c["model"],
                          c["input_tokens"], c["output_tokens"], c["total_tokens"], c["cost_usd"], c["attributes"],
                          c["inputs"], c["outputs"], c["kind"], c["trace_version"]])
    return trace_row, span_rows


TURN = trace(1, [
    span("t1", "root", 10, project="bot", session_id="chat-1", agent_name="support", inputs={"message": "refund?"},
         outputs="Sure, done.", attributes={"evalstream.session.end": True}),
    span("t1", "llm", 11, parent_span_id="root", span_type="llm", model="gpt-4o-mini", input_tokens=12,
         output_tokens=3, cost_usd=0.002, project="bot", inputs=[{"role": "user", "content": "refund?"}]),
    span("t1", "tool", 12, parent_span_id="root", span_type="tool", status="error", project="bot",
         error=ErrorInfo(type="Timeout", message="crm took 30 s")),
])


def test_a_stored_trace_loads_back_as_the_trace_that_was_stored() -> None:
    trace_row, span_rows = stored(TURN)
    loaded = trace_from_rows([trace_row], list(reversed(span_rows)))
    assert loaded == TURN  # spans in start order, JSON values decoded, errors and tokens kept
    assert loaded.root is not None and loaded.root.inputs == {"message": "refund?"}
    assert loaded.spans[2].error == ErrorInfo(type="Timeout", message="crm took 30 s")
    assert trace_from_rows([], span_rows) is None  # that version is not stored


def test_an_older_version_gets_its_own_spans_not_those_a_later_version_added() -> None:
    v1 = trace(1, TURN.spans[:2])
    v2 = trace(2, [*TURN.spans, span("t1", "late", 50, parent_span_id="root", project="bot")])
    (v1_row, v1_spans), (_, v2_spans) = stored(v1), stored(v2)
    # not merged yet: both versions' rows are there
    assert [s.span_id for s in trace_from_rows([v1_row], v1_spans + v2_spans).spans] == ["root", "llm"]
    # merged: v2's rows replaced v1's (one row per span id); v1 still gets v1's number of spans, earliest first
    assert [s.span_id for s in trace_from_rows([v1_row], v2_spans).spans] == ["root", "llm"]


class FakeDatabase:
    """What the sink's query endpoint answers from: the stored rows of one trace, two versions."""

    def __init__(self) -> None:
        self.versions = {1: stored(TURN)}
        self.queries: list[str] = []

    async def query(self, sql: str) -> tuple[list[str], list[str], list[list[Any]]]:
        self.queries.append(sql)
        if "FROM evalstream.traces" in sql:
            version = int(re.search(r"version = (\d+)", sql).group(1))
            found = self.versions.get(version)
            return [], [], [found[0]] if found and "'t1'" in sql else []
        return [], [], [r for _, spans in self.versions.values() for r in spans]


async def _serve(tmp_path: Path) -> tuple[QueryServer, FakeDatabase, Settings]:
    db = FakeDatabase()
    server = QueryServer(db, lambda: {"status": "ok"})  # type: ignore[arg-type]
    settings = embedded(tmp_path)
    update_run_file(settings.run_file, query_url=await server.start())
    return server, db, settings


def test_a_scorer_in_the_sink_process_loads_through_the_query_endpoint_without_blocking_its_loop(
        tmp_path: Path) -> None:
    async def main() -> None:
        server, db, settings = await _serve(tmp_path)
        loader = make_trace_loader(settings)
        try:
            # the endpoint is served by this very loop: a read that blocked it would never be answered
            got = await asyncio.wait_for(loader("t1", 1), timeout=10)
            assert got == TURN
            assert await loader("t1", 7) is None and await loader("other", 1) is None  # not stored (yet)
            asked = len(db.queries)
            again = await loader("t1", 1)
            assert again == TURN and len(db.queries) == asked  # a stored version never changes: read once
            again.spans.clear()
            assert len((await loader("t1", 1)).spans) == 3  # one scorer's changes do not leak into another's
        finally:
            loader.close()
            await server.stop()

    asyncio.run(main())


def test_without_a_running_sink_embedded_storage_is_an_error_not_a_missing_trace(tmp_path: Path) -> None:
    async def main() -> None:
        loader = make_trace_loader(embedded(tmp_path))
        try:
            with pytest.raises(StorageError, match="no sink is running"):
                await loader("t1", 1)
            update_run_file(embedded(tmp_path).run_file, query_url="http://127.0.0.1:9")
            with pytest.raises(StorageError, match="not reachable"):
                await loader("t1", 1)
        finally:
            loader.close()

    asyncio.run(main())


def test_the_owner_of_the_database_can_hand_it_to_the_loader(tmp_path: Path) -> None:
    async def main() -> None:
        db = FakeDatabase()
        loader = make_trace_loader(embedded(tmp_path), database=db)  # type: ignore[arg-type]
        try:
            assert await loader("t1", 1) == TURN  # no run.json, no HTTP
        finally:
            loader.close()

    asyncio.run(main())
