"""DeadLetter: a message or job the pipeline could not process, with the reason."""

from __future__ import annotations

from typing import Literal

from pipeline.contracts.bounds import Int32, Int64, NonNegativeInt64, TimestampNs
from pipeline.contracts.spans import _Wire


class DeadLetter(_Wire):
    v: Literal[1] = 1
    stage: str  # assembler, router, scorer, alerter, sink
    source_topic: str
    partition: Int32 = -1
    offset: Int64 = -1
    key: str | None = None
    error_type: str
    reason: str
    payload_size: NonNegativeInt64 = 0
    payload_excerpt: str = ""  # the first few KiB, so the bad input can be inspected
    trace_id: str | None = None
    job_id: str | None = None
    item: str | None = None  # which item of a message of many: its trace id, or `batches[3]`
    at_ns: TimestampNs
