"""The alert channel interface: `deliver(alert)` returns the alert with its delivery fields set. Every try is a
`DeliveryAttempt` in the returned alert's `attempts` (this round only), and `delivery_attempts` grows by their
number; a delivery that still fails is stored as `failed`. Channels: the console (here), Slack (`slack.py`),
a webhook or a Python hook (`webhook.py`); `channels.py` builds the configured ones, fanned out (here)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from pipeline.contracts import Alert, DeliveryAttempt, DeliveryStatus

log = logging.getLogger(__name__)

ERROR_MAX = 1000


class Channel(Protocol):
    name: str

    async def deliver(self, alert: Alert) -> Alert: ...


def attempt(channel: str, ok: bool, *, http_status: int | None = None, error: str | None = None,
            retry_after_s: float | None = None) -> DeliveryAttempt:
    return DeliveryAttempt(attempt_id=uuid.uuid4().hex, channel=channel, at_ns=time.time_ns(), ok=ok,
                           http_status=http_status, error=error[:ERROR_MAX] if error else None,
                           retry_after_s=retry_after_s)


def finish(alert: Alert, channel: str, attempts: list[DeliveryAttempt], error: str | None, *,
           status: DeliveryStatus | None = None, thread: dict[str, str] | None = None) -> Alert:
    """The alert after one delivery round at one channel."""
    if error:
        log.error("alert %s (incident %s): delivery to %s failed after %d attempt(s): %s",
                  alert.alert_id, alert.incident_id, channel, len(attempts), error)
    update: dict[str, Any] = {
        "channel": channel,
        "delivery_status": DeliveryStatus.FAILED if error else status or DeliveryStatus.DELIVERED,
        "delivery_error": error[:ERROR_MAX] if error else None,
        "delivery_attempts": alert.delivery_attempts + len(attempts),
        "attempts": attempts,
    }
    if thread is not None:
        update["thread"] = thread
    return alert.model_copy(update=update)


def retry_after(headers: Mapping[str, Any] | None) -> float | None:
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            try:
                return float(value[0] if isinstance(value, list) else value)
            except (TypeError, ValueError, IndexError):
                return None
    return None


class ConsoleChannel:
    name = "console"

    async def deliver(self, alert: Alert) -> Alert:
        print(f"\nALERT {alert.title}\n{alert.text}\n", flush=True)
        return finish(alert, self.name, [attempt(self.name, True)], None, status=DeliveryStatus.CONSOLE)


class FanOutChannel:
    """Every configured channel gets every alert; the stored status is delivered only if all succeeded."""

    def __init__(self, channels: list[Channel]) -> None:
        self.channels = channels
        self.name = "+".join(c.name for c in channels)
        self._keys: list[str] = []  # unique per channel (two hooks are "hook" and "hook#2"), for delivered_to
        for channel in channels:
            key, n = channel.name, 1
            while key in self._keys:
                n += 1
                key = f"{channel.name}#{n}"
            self._keys.append(key)

    async def deliver(self, alert: Alert) -> Alert:
        """Channels that already accepted this alert (an earlier round) are not sent it again."""
        pending = [(k, c) for k, c in zip(self._keys, self.channels, strict=True) if k not in alert.delivered_to]
        results = await asyncio.gather(*(c.deliver(alert) for _, c in pending))
        errors = [f"{r.channel}: {r.delivery_error}" for r in results if r.delivery_status == DeliveryStatus.FAILED]
        attempts = [a for r in results for a in r.attempts]
        delivered_to = [*alert.delivered_to, *(k for (k, _), r in zip(pending, results, strict=True)
                                               if r.delivery_status != DeliveryStatus.FAILED)]
        thread = dict(alert.thread)
        for result in results:
            thread.update(result.thread)
        return alert.model_copy(update={
            "channel": self.name,
            "delivery_status": DeliveryStatus.FAILED if errors else DeliveryStatus.DELIVERED,
            "delivery_error": "; ".join(errors)[:ERROR_MAX] or None,
            "delivery_attempts": alert.delivery_attempts + len(attempts),
            "attempts": attempts,
            "thread": thread,
            "delivered_to": delivered_to,
        })
