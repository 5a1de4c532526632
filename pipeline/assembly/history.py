"""What storage knows of traces and sessions whose assembly state is gone: their highest stored version.

Traces: asked only for first versions that close without a root (`state.needs_history`), and for versions
re-opened from a compact closed state (their earlier spans are stored), in one query per tick. Sessions: asked when a conversation has no state. Either way versions go on from the stored highest + 1
instead of starting again at 1 and overwriting it. Both read through a worker's `storage.reader.Reader`
(its async face), so the assembler's event loop never waits on storage.
"""

from __future__ import annotations

from typing import Any, Protocol

from pipeline.storage.filters import Eq, OneOf, where


class StoredReads(Protocol):
    """The async face of `pipeline.storage.reader.Reader`."""

    @property
    def database(self) -> str: ...

    async def arows(self, sql: str) -> list[list[Any]]: ...

    async def atrace(self, trace_id: str, trace_version: int) -> Any: ...


class StoredSessionVersions:
    """The highest stored version of a session, asked once when a conversation starts a new assembly state:
    a conversation whose state is gone (a broker restart, or `session_tombstone_ttl_s`) goes on from there."""

    def __init__(self, reader: StoredReads) -> None:
        self._reader = reader

    async def highest(self, session_id: str) -> int | None:
        rows = await self._reader.arows(f"SELECT max(version) FROM {self._reader.database}.sessions "
                                        f"{where(Eq('session_id', session_id))}".rstrip())
        version = rows[0][0] if rows else None
        return int(version) if version else None


class StoredVersions:
    def __init__(self, reader: StoredReads) -> None:
        self._reader = reader

    async def readable(self) -> bool:
        """Whether storage answers a read now. Raises StorageError when it does not."""
        await self._reader.arows("SELECT 1")
        return True

    async def latest(self, trace_ids: list[str]) -> dict[str, dict[str, Any]]:
        """trace id -> its highest stored version as a `Trace` dict; traces with nothing stored are left out.
        Raises StorageError when storage cannot be reached (the caller tries again later)."""
        if not trace_ids:
            return {}
        rows = await self._reader.arows(f"SELECT trace_id, max(version) FROM {self._reader.database}.traces "
                                        f"{where(OneOf('trace_id', trace_ids))}GROUP BY trace_id")
        out: dict[str, dict[str, Any]] = {}
        for trace_id, version in rows:
            trace = await self._reader.atrace(str(trace_id), int(version))
            if trace is not None:
                out[str(trace_id)] = trace.model_dump(mode="json", exclude_none=True)
        return out
