"""Load a stored trace version for a session scorer (`Conversation.trace(n)`), inside a worker process.

Where the rows come from:
- a ClickHouse server (`http(s)://`): queried directly, with one client per loader thread;
- embedded chDB: only the sink process may open it, so every worker, the sink's own process included,
  asks the sink's query endpoint. Its URL is read from run.json at each load, because the sink may
  start after the scorer, or restart on another port;
- `database`: the sink process may pass its own `Database` instead (no HTTP round trip to itself).

Reads run on the loader's threads, so a scorer's event loop never waits on storage. A version that is
not stored (yet) loads as None; storage that cannot be reached raises `StorageError`.
The rows become a Trace in `storage/wire.py` (`trace_from_rows`: which spans belong to a version).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline.contracts.traces import Trace
from pipeline.errors import StorageError
from pipeline.runfile import read_run_file
from pipeline.settings import Settings
from pipeline.storage.client import connect, is_embedded
from pipeline.storage.database import READ_ONLY, Database
from pipeline.storage.wire import Rows, spans_sql, trace_from_rows, version_sql

log = logging.getLogger(__name__)

CACHED_TRACES = 16  # stored versions never change: a judge that opens the same turn again reads it once
HTTP_TIMEOUT_S = 30.0


class StoredTraceLoader:
    """A `TraceLoader`: `await loader(trace_id, trace_version)` -> the stored Trace, or None."""

    def __init__(self, settings: Settings, database: Database | None = None, max_threads: int = 4) -> None:
        self._database = settings.clickhouse_database
        self._dsn = settings.resolved_dsn
        self._run_file = settings.run_file
        self._db = database
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="trace-loader")
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, int], Trace] = OrderedDict()

    async def __call__(self, trace_id: str, trace_version: int) -> Trace | None:
        key = (trace_id, int(trace_version))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key].model_copy(deep=True)  # a scorer may change what it got
        trace_rows = await self._rows(version_sql(self._database, trace_id, trace_version))
        if not trace_rows:
            return None
        span_rows = await self._rows(spans_sql(self._database, [trace_id]))
        trace = await asyncio.get_running_loop().run_in_executor(self._executor, trace_from_rows, trace_rows,
                                                                 span_rows)
        if trace is not None:
            self._cache[key] = trace.model_copy(deep=True)
            while len(self._cache) > CACHED_TRACES:
                self._cache.popitem(last=False)
        return trace

    async def rows(self, sql: str) -> Rows:
        """Any read-only query, the way this loader reaches storage."""
        return await self._rows(sql)

    async def _rows(self, sql: str) -> Rows:
        if self._db is not None:
            _columns, _types, rows = await self._db.query(sql)
            return [list(r) for r in rows]
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._query_sync, sql)

    def _query_sync(self, sql: str) -> Rows:
        if is_embedded(self._dsn):
            return self._remote(sql)
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = connect(self._dsn)
            with self._lock:
                self._clients.append(client)
        try:
            return [list(r) for r in client.query(sql, settings=READ_ONLY).result_rows]
        except Exception as exc:  # the scorer sees one error type, with the cause's first line
            raise StorageError(f"reading a stored trace failed: {str(exc).strip().splitlines()[0]}") from exc

    def _remote(self, sql: str) -> Rows:
        url = read_run_file(self._run_file).get("query_url")
        if not url:
            raise StorageError(f"no query endpoint in {self._run_file}: traces in embedded chDB are read through "
                               "the sink, and no sink is running on this data dir")
        request = urllib.request.Request(f"{url}/query", data=json.dumps({"sql": sql}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                return json.loads(response.read())["rows"]
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
            except (ValueError, AttributeError):
                detail = exc.reason
            raise StorageError(f"the sink's query endpoint refused a trace query: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise StorageError(f"the sink's query endpoint at {url} is not reachable: {exc}") from None

    def close(self) -> None:
        self._executor.shutdown(wait=False)
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # closing is best effort
                log.debug("trace loader: closing a ClickHouse client failed", exc_info=True)


def make_trace_loader(settings: Settings, database: Database | None = None) -> StoredTraceLoader:
    """The TraceLoader (pipeline.sessions.conversation) of a worker process: see the module docstring.
    Pass `database` only in the process that owns it (the sink's); close the loader on shutdown."""
    return StoredTraceLoader(settings, database)
