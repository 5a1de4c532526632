"""pipeline/sessions/trace_loader.py: a session scorer loads a turn's stored trace version, the way the sink
stored it, through the sink's query endpoint (embedded chDB) without blocking its event loop."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import StorageError
from pipeline.runfile import update_run_file
from pipeline.sessions.trace_loader import make_trace_loader
from pipeline.settings import Settings
from pipeline.storage.query_server import QueryServer
from tests.unit.test_storage_wire import TURN, stored


def embedded(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, clickhouse_dsn=None)  # chDB under data_dir, whatever the environment says


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
