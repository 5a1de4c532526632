"""Stored traces, read back page by page in a stable order, as the wire form of `Trace`.

A trace is in the window when its newest version closed in [since, until). Pages follow the keyset
(closed_at, trace_id), so a page never repeats or skips a trace however the table is merged. Spans are
those stored with that version (`storage.wire.assemble`). The SQL is pure; `StoredTraces` runs it through
the command's `Reader`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.storage.filters import Eq, Fixed, InSelect, MicrosRange, conjunction, literal
from pipeline.storage.wire import TRACE_SELECT, assemble, spans_sql

Cursor = tuple[int, str]  # (closed_at in epoch microseconds, trace_id)


@dataclass(frozen=True)
class Window:
    database: str
    since_us: int
    until_us: int
    project: str | None = None

    @property
    def closed(self) -> MicrosRange:
        """Closed in the window."""
        return MicrosRange("closed_at", self.since_us, self.until_us)

    def _where(self) -> str:
        newest = (f"SELECT trace_id, max(version) FROM {self.database}.traces "
                  f"WHERE {MicrosRange('closed_at', self.since_us).sql()} GROUP BY trace_id")
        return conjunction(self.closed, InSelect("(trace_id, version)", newest), Eq("project", self.project))

    def count_sql(self) -> str:
        return f"SELECT count() FROM {self.database}.traces FINAL WHERE {self._where()}"

    def page_sql(self, after: Cursor | None, size: int) -> str:
        after_cursor = None
        if after is not None:
            closed, trace_id = literal(int(after[0])), literal(str(after[1]))
            after_cursor = Fixed(f"(toUnixTimestamp64Micro(closed_at) > {closed} OR "
                                 f"(toUnixTimestamp64Micro(closed_at) = {closed} AND trace_id > {trace_id}))")
        where = conjunction(Fixed(self._where()), after_cursor)
        return (f"SELECT {TRACE_SELECT} FROM {self.database}.traces FINAL WHERE {where} "
                f"ORDER BY closed_us, trace_id LIMIT {int(size)}")

    def spans_sql(self, trace_ids: list[str]) -> str:
        return spans_sql(self.database, trace_ids)


@dataclass
class Page:
    traces: list[dict[str, Any]]
    last: Cursor | None  # the cursor after this page


class StoredTraces:
    """`query(sql) -> rows` is the Reader's (the running sink's endpoint, or ClickHouse itself)."""

    def __init__(self, window: Window, query: Callable[[str], list[list[Any]]]) -> None:
        self.window = window
        self._query = query

    def count(self) -> int:
        return int(self._query(self.window.count_sql())[0][0])

    def page(self, after: Cursor | None, size: int) -> Page:
        rows = self._query(self.window.page_sql(after, size))
        if not rows:
            return Page([], after)
        spans = self._query(self.window.spans_sql([r[0] for r in rows]))
        last = rows[-1]
        return Page(assemble(rows, spans), (int(last[9]), last[0]))
