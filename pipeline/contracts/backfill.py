"""BackfillBatch: stored traces sent back through named rules by `evalstream backfill`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.contracts.bounds import TimestampNs
from pipeline.contracts.spans import _Wire
from pipeline.contracts.traces import Trace


class BackfillBatch(_Wire):
    """Many stored traces (their newest version) for the router to evaluate against `rules` only.

    Jobs, scores and decisions that follow carry `source=backfill`. Sending a batch twice is harmless:
    its jobs get the same ids, so storage replaces the rows.
    """

    v: Literal[1] = 1
    kind: Literal["backfill"] = "backfill"
    backfill_id: str = Field(min_length=1, max_length=64)
    rules: list[str] = Field(min_length=1)
    traces: list[Trace] = Field(default_factory=list)
    sent_at_ns: TimestampNs = 0
