"""Alert events (failures routed to an alert rule) and alerts (what was sent)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from pipeline.contracts.jobs import ScoreResult
from pipeline.contracts.spans import _Wire


class AlertEvent(_Wire):
    """A score result that matched an alert rule's condition, keyed by the alert rule."""

    v: Literal[1] = 1
    alert_rule: str
    result: ScoreResult


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"
    CONSOLE = "console"  # no channel configured: printed to the worker's console
    FAILED = "failed"


class Alert(_Wire):
    v: Literal[1] = 1
    alert_id: str
    alert_rule: str
    kind: str  # "each" (every failing result) or "count" (N failures within a window)
    rule: str | None = None
    scorer: str | None = None
    project: str | None = None
    title: str
    text: str
    failures: int = 1
    window_s: float | None = None
    trace_ids: list[str] = Field(default_factory=list)
    fired_at_ns: int
    channel: str = "console"
    delivery_status: DeliveryStatus = DeliveryStatus.CONSOLE
    delivery_error: str | None = None
    delivery_attempts: int = 0


class AlertRetry(_Wire):
    """An alert whose delivery failed, waiting on the retry topic until `not_before_ns`."""

    v: Literal[1] = 1
    alert: Alert
    not_before_ns: int
    retries: int = 0  # redelivery rounds so far
