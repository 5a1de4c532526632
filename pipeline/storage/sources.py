"""The ways to reach the store for reading, each behind one blocking `query(sql) -> QueryResult`.

- `ClientSource`: clickhouse-connect on a ClickHouse server (`http(s)://`), or on embedded chDB opened directly
  when nothing else has it open;
- `EndpointSource`: the query endpoint of the process that owns embedded chDB (`query_server.py`), found in
  run.json, because chDB allows one opener per path.

(The fourth way, the owner's own `Database`, is async already: `reader.py` uses it as it is.) Every read runs
with the read-only settings; every failure is a `StorageError` with the cause's first line.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import StorageError
from pipeline.runfile import read_run_file
from pipeline.settings import Settings
from pipeline.storage.client import connect, dsn_of, is_embedded
from pipeline.storage.database import READ_ONLY

log = logging.getLogger(__name__)

CLI_TIMEOUT_S = 60.0
WORKER_TIMEOUT_S = 30.0


@dataclass
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]


class Source(Protocol):
    def query(self, sql: str) -> QueryResult: ...

    def close(self) -> None: ...


def first_line(text: object) -> str:
    return str(text).strip().splitlines()[0] if str(text).strip() else ""


class ClientSource:
    """A server gets one client per thread, so reads run side by side; chDB opened directly gets one client
    and one read at a time."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._shared = is_embedded(dsn)
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()

    def open(self) -> ClientSource:
        """Connect now (on this thread), so a store that cannot be opened is an error at once."""
        self._client()
        return self

    def _client(self) -> Any:
        if self._shared:
            with self._lock:
                if not self._clients:
                    self._clients.append(connect(self._dsn))
                return self._clients[0]
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = connect(self._dsn)
            with self._lock:
                self._clients.append(client)
        return client

    def query(self, sql: str) -> QueryResult:
        client = self._client()
        try:
            if self._shared:
                with self._lock:
                    result = client.query(sql, settings=READ_ONLY)
            else:
                result = client.query(sql, settings=READ_ONLY)
        except Exception as exc:  # the caller sees one error type, with the cause's first line
            raise StorageError(first_line(exc)) from exc
        return QueryResult(list(result.column_names), [t.name for t in result.column_types],
                           [list(r) for r in result.result_rows])

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # closing is best effort
                log.debug("reader: closing a ClickHouse client failed", exc_info=True)


class EndpointSource:
    """POST /query to the owner's endpoint: `url` when it was found once, else the URL in `run_file`, read at
    every query (the sink may start after a worker, or restart on another port)."""

    def __init__(self, url: str | None, run_file: Path, timeout_s: float) -> None:
        self._url = url
        self._run_file = run_file
        self._timeout_s = timeout_s

    def query(self, sql: str) -> QueryResult:
        url = self._url or read_run_file(self._run_file).get("query_url")
        if not url:
            raise StorageError(f"no query endpoint in {self._run_file}: embedded chDB is read through the sink "
                               "while the pipeline runs, and no sink is running on this data dir")
        request = urllib.request.Request(f"{url}/query", data=json.dumps({"sql": sql}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
            except (ValueError, AttributeError):
                detail = exc.reason
            raise StorageError(first_line(detail)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise StorageError(f"the sink's query endpoint at {url} is not reachable: {exc}") from None
        return QueryResult(body["columns"], body["types"], body["rows"])

    def close(self) -> None:
        pass


def reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


def open_source(settings: Settings) -> Source:
    """For a command, found once: the server; for chDB, the running owner's endpoint if it answers, else
    chDB opened directly. Raises StorageError when the store cannot be opened."""
    dsn = dsn_of(settings)
    if is_embedded(dsn):
        url = read_run_file(settings.run_file).get("query_url")
        if url and reachable(url):
            return EndpointSource(url, settings.run_file, CLI_TIMEOUT_S)
        if not settings.clickhouse_dsn and not (settings.data_dir / "clickhouse").exists():
            # opening it would create an empty store here, and every query would say its database is missing
            raise StorageError(f"no evalstream data in {settings.data_dir}: nothing has run with this data dir. "
                               "Start one with `evalstream up`, or set EVALSTREAM_DATA_DIR to where it ran.")
    try:
        return ClientSource(dsn).open()
    except StorageError as exc:
        raise StorageError(f"{exc}\nIf the pipeline is running, its query endpoint was not reachable "
                           f"(see {settings.run_file}).") from None


def worker_source(settings: Settings) -> Source:
    """For a worker, nothing opened up front: a server directly; chDB only through the sink's endpoint (a
    worker never opens chDB itself, the sink has it), looked up at every query."""
    dsn = dsn_of(settings)
    if is_embedded(dsn):
        return EndpointSource(None, settings.run_file, WORKER_TIMEOUT_S)
    return ClientSource(dsn)
