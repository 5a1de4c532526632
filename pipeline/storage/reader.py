"""The one way to read storage, wherever the data is (`sources.py`):

- a ClickHouse server: queried directly;
- embedded chDB with the pipeline running: through the owner's query endpoint (run.json);
- embedded chDB with nothing running: opened directly (commands only; a worker never opens it);
- in the process that owns the store, its own `Database` (no HTTP round trip to itself).

Two faces over the same store. The sync face (`query`, `rows`) is for commands and views. The async face
(`aquery`, `arows`, `atrace`) is for workers: reads run on the reader's own threads (or the owner's
`Database` thread), so an event loop never waits on storage.

    Reader(settings)                         a command's reader: finds the store now, raises StorageError if
                                             it cannot be opened
    Reader.for_workers(settings[, owner])    a worker's: opens nothing up front; for chDB it asks the sink's
                                             endpoint, looked up at every read

Every read is read-only. A trace version that is not stored (yet) loads as None; storage that cannot be
reached raises `StorageError`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

from pipeline.contracts.traces import Trace
from pipeline.settings import Settings
from pipeline.storage.database import Database
from pipeline.storage.sources import QueryResult, Source, open_source, worker_source
from pipeline.storage.wire import Rows, spans_sql, trace_from_rows, version_sql

__all__ = ["CACHED_TRACES", "QueryResult", "Reader"]

CACHED_TRACES = 16  # stored versions never change: a judge that opens the same turn again reads it once


class Reader:
    def __init__(self, settings: Settings, *, source: Source | None = None, owner: Database | None = None,
                 max_threads: int = 4) -> None:
        """A command's reader (see the module docstring); `source` and `owner` are for `for_workers`."""
        self._settings = settings
        self._owner = owner
        self._source = source if source is not None or owner is not None else open_source(settings)
        self._max_threads = max_threads
        self._executor: ThreadPoolExecutor | None = None
        self._cache: OrderedDict[tuple[str, int], Trace] = OrderedDict()

    @classmethod
    def for_workers(cls, settings: Settings, owner: Database | None = None, max_threads: int = 4) -> Reader:
        """A worker process's reader. Pass `owner` only in the process that owns the store (the sink's): its
        reads then go to that `Database`, which offers the async face only. Close the reader on shutdown."""
        return cls(settings, source=None if owner is not None else worker_source(settings), owner=owner,
                   max_threads=max_threads)

    @property
    def database(self) -> str:
        """The ClickHouse database the tables are in, for the caller's SQL."""
        return self._settings.clickhouse_database

    # -- the sync face: commands and views ------------------------------------------------------------

    def query(self, sql: str) -> QueryResult:
        if self._source is None:
            raise RuntimeError("this reader reads through its owner's Database: use aquery / arows / atrace")
        return self._source.query(sql)

    def rows(self, sql: str) -> Rows:
        return self.query(sql).rows

    # -- the async face: workers ----------------------------------------------------------------------

    async def aquery(self, sql: str) -> QueryResult:
        if self._owner is not None:
            columns, types, rows = await self._owner.query(sql)
            return QueryResult(list(columns), list(types), [list(r) for r in rows])
        return await self._off_loop(self.query, sql)

    async def arows(self, sql: str) -> Rows:
        return (await self.aquery(sql)).rows

    async def atrace(self, trace_id: str, trace_version: int) -> Trace | None:
        """The stored trace at that version, or None when it is not stored (yet). A `TraceLoader`
        (pipeline.sessions.conversation); each caller gets its own copy, so a scorer may change it."""
        key = (trace_id, int(trace_version))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key].model_copy(deep=True)
        trace_rows = await self.arows(version_sql(self.database, trace_id, trace_version))
        if not trace_rows:
            return None
        span_rows = await self.arows(spans_sql(self.database, [trace_id]))
        trace = await self._off_loop(trace_from_rows, trace_rows, span_rows)
        if trace is not None:
            self._cache[key] = trace.model_copy(deep=True)
            while len(self._cache) > CACHED_TRACES:
                self._cache.popitem(last=False)
        return trace

    async def _off_loop(self, fn: Any, *args: Any) -> Any:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self._max_threads, thread_name_prefix="reader")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- both -----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Closes what the reader opened (never the owner's Database)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if self._source is not None:
            self._source.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
