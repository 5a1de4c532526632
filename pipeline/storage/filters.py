"""Typed filters -> SQL conditions, with every value a properly quoted literal.

The one place a caller's value (a rule, a project, an id, a time) becomes SQL. A condition whose value is
unset (None, or an empty string) is left out, so a filter's fields map straight to conditions:

    where(Eq("t.project", project), Has("t.agents", agent), Range("t.closed_at", since, until))
    -> "WHERE t.project = 'bot' AND has(t.agents, 'o\\'brien') AND t.closed_at >= toDateTime64(...)"

Column names and sub-selects are ours, never a caller's: only values pass through `literal`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

Value = str | int | float | bool

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def quote(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def literal(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return quote(str(value))


def _unset(value: object) -> bool:
    return value is None or value == ""


class Condition(Protocol):
    def sql(self) -> str | None:
        """The condition, or None when its value is unset (it does not filter)."""


@dataclass(frozen=True)
class Eq:
    column: str
    value: Value | None

    def sql(self) -> str | None:
        return None if _unset(self.value) else f"{self.column} = {literal(self.value)}"  # type: ignore[arg-type]


@dataclass(frozen=True)
class OneOf:
    """`column IN (...)`; an empty list matches nothing."""

    column: str
    values: Sequence[Value]

    def sql(self) -> str:
        return f"{self.column} IN ({', '.join(literal(v) for v in self.values)})" if self.values else "false"


@dataclass(frozen=True)
class Has:
    """An array column holds the value."""

    column: str
    value: Value | None

    def sql(self) -> str | None:
        return None if _unset(self.value) else f"has({self.column}, {literal(self.value)})"  # type: ignore[arg-type]


@dataclass(frozen=True)
class Range:
    """A DateTime64 column in [since, until), epoch seconds; either end may be open."""

    column: str
    since: float | None = None
    until: float | None = None

    def sql(self) -> str | None:
        parts = []
        if self.since is not None:
            parts.append(f"{self.column} >= toDateTime64({float(self.since):.6f}, 6)")
        if self.until is not None:
            parts.append(f"{self.column} < toDateTime64({float(self.until):.6f}, 6)")
        return " AND ".join(parts) or None


@dataclass(frozen=True)
class MicrosRange:
    """A DateTime64 column in [since_us, until_us), epoch microseconds (exact, for keyset paging)."""

    column: str
    since_us: int | None = None
    until_us: int | None = None

    def sql(self) -> str | None:
        micros = f"toUnixTimestamp64Micro({self.column})"
        parts = []
        if self.since_us is not None:
            parts.append(f"{micros} >= {int(self.since_us)}")
        if self.until_us is not None:
            parts.append(f"{micros} < {int(self.until_us)}")
        return " AND ".join(parts) or None


@dataclass(frozen=True)
class InSelect:
    """`column IN (select)`: the select is ours, built with these conditions."""

    column: str
    select: str

    def sql(self) -> str:
        return f"{self.column} IN ({self.select})"


@dataclass(frozen=True)
class Fixed:
    """A condition written by us, with no string from a caller in it, e.g. "(passed = false OR status = 'error')"."""

    text: str

    def sql(self) -> str:
        return self.text


def conjunction(*conditions: Condition | None) -> str:
    """The set conditions joined with AND ("" when none is set)."""
    parts = [sql for c in conditions if c is not None and (sql := c.sql())]
    return " AND ".join(parts)


def where(*conditions: Condition | None) -> str:
    """"WHERE a AND b " (with a trailing space, to go before ORDER BY / GROUP BY), or "" when none is set."""
    joined = conjunction(*conditions)
    return f"WHERE {joined} " if joined else ""


def parse_time(text: str, now: float) -> float:
    """`30m`, `24h`, `7d` (that long ago) or an ISO date / datetime (UTC unless it says otherwise)."""
    match = _DURATION.match(text.strip())
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r}: use a duration like 30m, 24h, 7d, or an ISO date like 2026-11-20") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()
