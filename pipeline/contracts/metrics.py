"""WorkerMetrics: what one worker process measured at one moment, stored by the sink (`consumer_lag`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.contracts.bounds import INT32_MAX, NonNegativeFinite, NonNegativeInt64, TimestampNs
from pipeline.contracts.spans import _Wire


class ConsumerLag(_Wire):
    """How far one consumer group is behind on one partition this worker owns (docs/metrics.md)."""

    consumer_group: str
    topic: str
    partition: int = Field(ge=0, le=INT32_MAX)
    lag_records: NonNegativeInt64  # records on the partition not yet processed by this group
    lag_seconds: NonNegativeFinite  # age of the oldest of them; 0 when caught up


class WorkerMetrics(_Wire):
    v: Literal[1] = 1
    kind: Literal["worker_metrics"] = "worker_metrics"
    worker: str = Field(min_length=1)  # host:pid
    at_ns: TimestampNs  # when the sample was taken
    lag: list[ConsumerLag] = Field(default_factory=list)
