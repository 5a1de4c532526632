"""Alert observations (score results routed to an alert rule) and alerts (the messages sent about them).

An *incident* is one (alert rule, group) being in breach: it opens with a `firing` message, may be
`escalated` (warning to critical), carries `digest`s of the matches held back during a cooldown,
and closes with one `resolved` message. Every message is an `Alert` with its own id.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from pipeline.contracts.bounds import Finite, NonNegativeFinite, TimestampNs, UInt16, UInt32
from pipeline.contracts.spans import _Wire


class AlertObservation(_Wire):
    """One score result as the alerter sees it: whether it matched, and enough to say why."""

    trace_id: str
    job_id: str = ""
    rule: str
    scorer: str
    project: str = ""
    scored_at_ns: TimestampNs
    matched: bool
    group: dict[str, str] = Field(default_factory=dict)
    value: Finite | str | bool | None = None
    threshold: Finite | None = None
    reason: str = ""


class AlertThread(_Wire):
    """Where an incident's first message landed (Slack `ts` per channel), learnt after a late delivery."""

    group_key: str
    incident_id: str
    thread: dict[str, str]


class AlertObservationBatch(_Wire):
    """Keyed by alert rule name, so one alerter partition owns every window of that rule."""

    v: Literal[1] = 1
    alert_rule: str
    observations: list[AlertObservation] = Field(default_factory=list)
    thread: AlertThread | None = None


class AlertKind(StrEnum):
    FIRING = "firing"  # the group went into breach: a new incident
    ESCALATED = "escalated"  # warning -> critical within the incident
    DIGEST = "digest"  # matches held back by the cooldown, sent when it ended
    RESOLVED = "resolved"  # a whole window passed without breach
    TEST = "test"  # `evalstream alerts test`


class AlertLevel(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"
    CONSOLE = "console"  # no channel configured: printed to the worker's console
    FAILED = "failed"


class DeliveryAttempt(_Wire):
    """One try at one channel. Slack's own retries (429, 5xx) are each an attempt of their own."""

    attempt_id: str
    channel: str
    at_ns: TimestampNs
    ok: bool
    http_status: UInt16 | None = None
    error: str | None = None
    retry_after_s: NonNegativeFinite | None = None


class AlertTrace(_Wire):
    trace_id: str
    reason: str = ""
    url: str | None = None  # from `trace_url_template`


class Alert(_Wire):
    v: Literal[1] = 1
    alert_id: str
    incident_id: str = ""
    alert_rule: str
    kind: AlertKind = AlertKind.FIRING
    level: AlertLevel | None = None
    rule: str | None = None
    scorer: str | None = None
    project: str | None = None
    group: dict[str, str] = Field(default_factory=dict)
    title: str
    text: str
    measure: Literal["count", "rate"] = "count"
    observed: Finite | None = None  # the window's count or failure rate that this message is about
    threshold: Finite | None = None  # the level's threshold it is compared with
    failures: UInt32 = 1  # matches this message reports (the window's, the digest's, or the incident's total)
    samples: UInt32 | None = None  # results seen in the window (rate alerts)
    suppressed: UInt32 = 0  # digest: matches held back by the cooldown, exactly
    window_s: Finite | None = None
    window_start_ns: TimestampNs | None = None
    incident_started_ns: TimestampNs | None = None
    trace_ids: list[str] = Field(default_factory=list)
    traces: list[AlertTrace] = Field(default_factory=list)  # the ones shown, with their reasons
    dashboard_url: str | None = None  # from `alert_dashboard_url_template`
    fired_at_ns: TimestampNs
    thread: dict[str, str] = Field(default_factory=dict)  # channel -> Slack ts of the incident's first message
    channel: str = "console"
    delivery_status: DeliveryStatus = DeliveryStatus.CONSOLE
    delivery_error: str | None = None
    delivery_attempts: UInt16 = 0
    attempts: list[DeliveryAttempt] = Field(default_factory=list)  # this delivery round's attempts
    delivered_to: list[str] = Field(default_factory=list)  # channels that accepted it: a redelivery skips them


class AlertRetry(_Wire):
    """An alert whose delivery failed, waiting on the retry topic until `not_before_ns`."""

    v: Literal[1] = 1
    alert: Alert
    not_before_ns: TimestampNs
    retries: int = Field(default=0, ge=0)  # redelivery rounds so far
