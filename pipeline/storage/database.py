"""The process's one ClickHouse client, used from one thread: chDB allows a single opener per path,
and inserts and queries must not interleave on its session."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline.storage.client import connect
from pipeline.storage.migrations import migrate

log = logging.getLogger(__name__)

READ_ONLY = {"readonly": 2}


class Database:
    def __init__(self, dsn: str, database: str) -> None:
        self.dsn = dsn
        self.database = database
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Any = None

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def open_sync(self, ttl_days: int) -> list[str]:
        self._client = connect(self.dsn)
        return migrate(self._client, self.database, ttl_days)

    async def open(self, ttl_days: int) -> list[str]:
        return await self._call(self.open_sync, ttl_days)

    def _insert_many(self, batch: dict[str, list[list[Any]]], columns: dict[str, list[str]]) -> None:
        for table, table_rows in batch.items():
            self._client.insert(f"{self.database}.{table}", table_rows, column_names=columns[table])

    async def insert_many(self, batch: dict[str, list[list[Any]]], columns: dict[str, list[str]]) -> None:
        await self._call(self._insert_many, batch, columns)

    def query_sync(self, sql: str) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
        result = self._client.query(sql, settings=READ_ONLY)
        types = [t.name for t in result.column_types]
        return list(result.column_names), types, result.result_rows

    async def query(self, sql: str) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
        return await self._call(self.query_sync, sql)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._call(client.close)
        self._executor.shutdown(wait=False)
