"""Read-only queries for the CLI, wherever the data is.

- a ClickHouse server: query it directly;
- embedded chDB with the pipeline running: through the owner's query endpoint (run.json);
- embedded chDB with nothing running: open the path directly.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from pipeline.errors import StorageError
from pipeline.runfile import read_run_file
from pipeline.settings import Settings
from pipeline.storage.client import connect, is_embedded
from pipeline.storage.database import READ_ONLY


@dataclass
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]


class Reader:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Any = None
        self._url: str | None = None
        dsn = settings.resolved_dsn
        if is_embedded(dsn):
            self._url = read_run_file(settings.run_file).get("query_url")
            if self._url and not self._reachable(self._url):
                self._url = None
        if self._url is None:
            try:
                self._client = connect(dsn)
            except StorageError as exc:
                raise StorageError(
                    f"{exc}\nIf the pipeline is running, its query endpoint was not reachable "
                    f"(see {settings.run_file})."
                ) from None

    @property
    def database(self) -> str:
        return self._settings.clickhouse_database

    @staticmethod
    def _reachable(url: str) -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def query(self, sql: str) -> QueryResult:
        if self._url is not None:
            return self._remote(sql)
        try:
            result = self._client.query(sql, settings=READ_ONLY)
        except Exception as exc:  # noqa: BLE001 - any failure of the query endpoint falls back to a direct read
            raise StorageError(str(exc).strip().splitlines()[0]) from None
        return QueryResult(list(result.column_names), [t.name for t in result.column_types],
                           [list(r) for r in result.result_rows])

    def _remote(self, sql: str) -> QueryResult:
        request = urllib.request.Request(f"{self._url}/query", data=json.dumps({"sql": sql}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
            raise StorageError(str(detail).strip().splitlines()[0]) from None
        return QueryResult(body["columns"], body["types"], body["rows"])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
