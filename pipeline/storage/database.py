"""The process's one ClickHouse client, used from one thread: chDB allows a single opener per path,
and inserts and queries must not interleave on its session."""

from __future__ import annotations

import asyncio
import logging
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline.errors import StorageDataError, StorageError
from pipeline.storage.client import connect
from pipeline.storage.migrations import migrate

log = logging.getLogger(__name__)

READ_ONLY = {"readonly": 2}

# ClickHouse errors about the inserted values themselves: the same rows fail again wherever they go. Any
# other server error (too many parts, memory, a missing table, a timeout) is the store's and passes.
DATA_ERROR_NAMES = {
    "CANNOT_PARSE_TEXT": 6, "CANNOT_PARSE_QUOTED_STRING": 26, "CANNOT_PARSE_INPUT_ASSERTION_FAILED": 27,
    "CANNOT_PARSE_DATE": 38, "CANNOT_PARSE_DATETIME": 41, "TYPE_MISMATCH": 53, "ARGUMENT_OUT_OF_BOUND": 69,
    "CANNOT_CONVERT_TYPE": 70, "CANNOT_PARSE_NUMBER": 72, "INCORRECT_DATA": 117, "TOO_LARGE_STRING_SIZE": 131,
    "SIZES_OF_ARRAYS_DONT_MATCH": 190, "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE": 321,
    "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN": 349, "DECIMAL_OVERFLOW": 407,
}
_DATA_ERROR_CODES = set(DATA_ERROR_NAMES.values())


def is_data_error(exc: BaseException) -> bool:
    """Whether an insert failed for the rows' values rather than for the store.

    Data: clickhouse-connect's DataError (a value its column type cannot hold: -1 or 2**40 for a UInt32, a
    time past an Int64) and the plain ValueError / TypeError / AttributeError / OverflowError / struct.error
    its converters raise for a value of the wrong type; or a server exception named in DATA_ERROR_NAMES.
    Not data: OperationalError (connection, timeout, retries spent), any other server exception, and
    ProgrammingError, which says our statement or schema is wrong (column count, table): every row would fail.
    """
    from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

    if isinstance(exc, DataError):
        return True
    if isinstance(exc, OperationalError):
        return False
    if isinstance(exc, DatabaseError):
        code = getattr(exc, "code", None)
        name = getattr(exc, "name", None)
        return name in DATA_ERROR_NAMES or (code is not None and code in _DATA_ERROR_CODES)
    return isinstance(exc, ValueError | TypeError | AttributeError | OverflowError | struct.error)


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
        client = self._client
        if client is None:
            raise StorageError("the ClickHouse client is not open")
        for table, table_rows in batch.items():
            try:
                client.insert(f"{self.database}.{table}", table_rows, column_names=columns[table])
            except Exception as exc:
                if is_data_error(exc):
                    raise StorageDataError(table, exc) from exc
                raise

    async def insert_many(self, batch: dict[str, list[list[Any]]], columns: dict[str, list[str]]) -> None:
        """Insert each table's rows. Raises StorageDataError when a table's rows hold a value ClickHouse
        cannot store (tables before it are stored), anything else when the store failed."""
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
