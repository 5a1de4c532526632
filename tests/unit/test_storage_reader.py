"""pipeline/storage/reader.py: one Reader, a sync face for commands and an async face for workers, over the
ways to reach the store. Here through the sink's query endpoint (embedded chDB) and through the owner's own
Database; the ClickHouse paths run in tests/integration (test_up_sql, test_session_storage)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.assembly.history import StoredSessionVersions, StoredVersions
from pipeline.errors import StorageError
from pipeline.runfile import update_run_file
from pipeline.settings import Settings
from pipeline.storage.query_server import QueryServer
from pipeline.storage.reader import CACHED_TRACES, Reader
from tests.unit.test_storage_wire import TURN, stored


def embedded(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, clickhouse_dsn=None)  # chDB under data_dir, whatever the environment says


class FakeDatabase:
    """What the sink's query endpoint answers from: the stored rows of trace t1 v1, and session versions."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def query(self, sql: str) -> tuple[list[str], list[str], list[list[Any]]]:
        self.queries.append(sql)
        if "max(version) FROM evalstream.sessions" in sql:
            return ["max(version)"], ["UInt32"], [[4 if "'chat-1'" in sql else 0]]
        if "max(version) FROM evalstream.traces" in sql:
            return ["trace_id", "max(version)"], ["String", "UInt32"], [["t1", 1]] if "'t1'" in sql else []
        if "FROM evalstream.traces" in sql:
            found = "'t1'" in sql and int(re.search(r"version = (\d+)", sql).group(1)) == 1
            return [], [], [stored(TURN)[0]] if found else []
        if "FROM evalstream.spans" in sql:
            return [], [], stored(TURN)[1]
        if sql.startswith("INSERT"):
            raise RuntimeError("Code: 164. DB::Exception: evalstream: Cannot execute query in readonly mode.\nmore")
        return ["x"], ["UInt8"], [[1]]


async def _serve(tmp_path: Path) -> tuple[QueryServer, FakeDatabase, Settings]:
    db = FakeDatabase()
    server = QueryServer(db, lambda: {"status": "ok"})  # type: ignore[arg-type]
    settings = embedded(tmp_path)
    update_run_file(settings.run_file, query_url=await server.start())
    return server, db, settings


def test_a_worker_reads_through_the_sinks_endpoint_without_blocking_its_loop_and_caches_traces(
        tmp_path: Path) -> None:
    async def main() -> None:
        server, db, settings = await _serve(tmp_path)
        reader = Reader.for_workers(settings)
        try:
            # the endpoint is served by this very loop: a read that blocked it would never be answered
            got = await asyncio.wait_for(reader.atrace("t1", 1), timeout=10)
            assert got == TURN
            assert await reader.atrace("t1", 7) is None and await reader.atrace("other", 1) is None  # not stored
            asked = len(db.queries)
            again = await reader.atrace("t1", 1)
            assert again == TURN and len(db.queries) == asked  # a stored version never changes: read once
            again.spans.clear()
            assert len((await reader.atrace("t1", 1)).spans) == 3  # one scorer's changes do not leak into another's
            assert CACHED_TRACES == 16
            with pytest.raises(StorageError, match=r"^RuntimeError: Code: 164\..*readonly mode\.$"):  # first line only
                await reader.aquery("INSERT INTO evalstream.traces VALUES")
        finally:
            reader.close()
            await server.stop()

    asyncio.run(main())


def test_a_command_reads_through_the_running_sinks_endpoint(tmp_path: Path) -> None:
    async def main() -> None:
        server, _db, settings = await _serve(tmp_path)
        try:
            def command() -> Any:  # a command blocks: off this loop, which serves the endpoint
                with Reader(settings) as reader:
                    return reader.query("SELECT 1"), reader.rows("SELECT 1"), reader.database

            result, rows, database = await asyncio.to_thread(command)
            assert (result.columns, result.types, result.rows, rows, database) == (
                ["x"], ["UInt8"], [[1]], [[1]], "evalstream")
        finally:
            await server.stop()

    asyncio.run(main())


def test_without_a_running_sink_a_workers_embedded_storage_is_an_error_not_a_missing_trace(
        tmp_path: Path) -> None:
    async def main() -> None:
        reader = Reader.for_workers(embedded(tmp_path))  # opens nothing: the sink may start later
        try:
            with pytest.raises(StorageError, match="no sink is running"):
                await reader.atrace("t1", 1)
            update_run_file(embedded(tmp_path).run_file, query_url="http://127.0.0.1:9")
            with pytest.raises(StorageError, match="not reachable"):
                await reader.atrace("t1", 1)
        finally:
            reader.close()

    asyncio.run(main())


def test_the_owner_of_the_database_hands_it_to_its_reader_and_history_asks_it(tmp_path: Path) -> None:
    async def main() -> None:
        db = FakeDatabase()
        reader = Reader.for_workers(embedded(tmp_path), owner=db)  # type: ignore[arg-type]
        try:
            assert await reader.atrace("t1", 1) == TURN  # no run.json, no HTTP
            assert await StoredVersions(reader).latest(["t1", "o'k"]) == {
                "t1": TURN.model_dump(mode="json", exclude_none=True)}
            assert "WHERE trace_id IN ('t1', 'o\\'k') GROUP BY trace_id" in db.queries[-1]  # t1 v1 came from the cache
            sessions = StoredSessionVersions(reader)
            assert await sessions.highest("chat-1") == 4 and await sessions.highest("new") is None
            with pytest.raises(RuntimeError, match="use aquery"):
                reader.query("SELECT 1")  # the owner's Database has an async face only
        finally:
            reader.close()

    asyncio.run(main())
