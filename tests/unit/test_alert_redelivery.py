"""pipeline/alerts/redelivery: failed alerts are retried with a doubling, capped wait, never given up."""

from __future__ import annotations

import time

from pipeline.alerts.redelivery import retry_delay_s, schedule_retry
from pipeline.contracts import Alert


def test_the_wait_doubles_up_to_the_cap_and_never_stops() -> None:
    assert [retry_delay_s(n, 30, 900) for n in range(7)] == [30, 60, 120, 240, 480, 900, 900]
    assert retry_delay_s(1000, 30, 900) == 900


def test_a_scheduled_retry_carries_the_alert_and_its_time() -> None:
    alert = Alert(alert_id="a", alert_rule="r", kind="firing", title="t", text="x", fired_at_ns=time.time_ns())
    retry = schedule_retry(alert, 2, now_ns=1_000_000_000, backoff_s=1, max_backoff_s=60)
    assert retry.alert == alert and retry.retries == 2 and retry.not_before_ns == 5_000_000_000
