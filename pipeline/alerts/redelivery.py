"""When to try a failed alert delivery again: doubling from `backoff_s` up to `max_backoff_s`, forever.

An alert is never given up on: its row stays `failed` (with the last error and the number of
attempts) until a redelivery succeeds and replaces it with `delivered`.
"""

from __future__ import annotations

from pipeline.contracts import Alert, AlertRetry


def retry_delay_s(retries: int, backoff_s: float, max_backoff_s: float) -> float:
    return min(max_backoff_s, backoff_s * 2 ** max(0, retries))


def schedule_retry(alert: Alert, retries: int, now_ns: int, backoff_s: float, max_backoff_s: float) -> AlertRetry:
    delay = retry_delay_s(retries, backoff_s, max_backoff_s)
    return AlertRetry(alert=alert, not_before_ns=now_ns + int(delay * 1e9), retries=retries)
