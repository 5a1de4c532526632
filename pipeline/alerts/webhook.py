"""Alerts to any HTTP endpoint (a JSON POST signed with HMAC-SHA256) and to a Python hook.

The signature lets the receiver check that the alert came from this pipeline and was not
replayed: `X-Evalstream-Signature: sha256=<hex hmac(secret, f"{timestamp}.{body}")>`, with the
timestamp in `X-Evalstream-Timestamp` (reject ones more than a few minutes old).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from pipeline.contracts import Alert, DeliveryStatus
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Evalstream-Signature"
TIMESTAMP_HEADER = "X-Evalstream-Timestamp"
RETRYABLE = {429, 500, 502, 503, 504}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, max_age_s: float = 300,
           now: float | None = None) -> bool:
    """For receivers: the signature matches and the timestamp is recent."""
    try:
        age = abs((now if now is not None else time.time()) - float(timestamp))
    except ValueError:
        return False
    return age <= max_age_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def _retry_after(value: str | None, fallback: float) -> float:
    try:
        return min(60.0, max(0.0, float(value))) if value else fallback
    except ValueError:
        return fallback


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str, secret: str | None = None, *, max_attempts: int = 4, timeout_s: float = 10,
                 backoff_s: float = 0.5) -> None:
        self.url = url
        self._secret = secret
        self._max_attempts = max_attempts
        self._timeout_s = timeout_s
        self._backoff_s = backoff_s

    async def deliver(self, alert: Alert) -> Alert:
        import aiohttp

        body = orjson.dumps(alert.model_dump(mode="json", exclude={"channel", "delivery_status", "delivery_error",
                                                                   "delivery_attempts"}))
        attempts, error = 0, ""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s)) as session:
            while attempts < self._max_attempts:
                attempts += 1
                timestamp = f"{time.time():.0f}"
                headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
                if self._secret:
                    headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
                wait = self._backoff_s * 2 ** (attempts - 1)
                try:
                    async with session.post(self.url, data=body, headers=headers) as response:
                        if response.status < 300:
                            return _result(alert, self.name, attempts, None)
                        error = f"HTTP {response.status}: {(await response.text())[:200]}"
                        if response.status not in RETRYABLE:
                            break
                        wait = _retry_after(response.headers.get("Retry-After"), wait)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                if attempts < self._max_attempts:
                    await asyncio.sleep(wait)
        log.error("alert %s: webhook %s failed after %d attempt(s): %s", alert.alert_id, self.url, attempts, error)
        return _result(alert, self.name, attempts, error)


def load_hook(ref: str) -> Callable[[Alert], Any]:
    """`package.module:function`: called with each Alert (sync functions run in a thread)."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"alert hook {ref!r}: use 'package.module:function'")
    hook = getattr(importlib.import_module(module_name), attr, None)
    if not callable(hook):
        raise ConfigError(f"alert hook {ref!r}: {attr!r} is not a function")
    return hook


class HookChannel:
    """An `on_fail` hook in Python: page someone, open a ticket, roll back a deploy."""

    name = "hook"

    def __init__(self, hook: Callable[[Alert], Any]) -> None:
        self._hook = hook

    async def deliver(self, alert: Alert) -> Alert:
        try:
            if inspect.iscoroutinefunction(self._hook):
                await self._hook(alert)
            else:
                await asyncio.to_thread(self._hook, alert)
        except Exception as exc:  # noqa: BLE001 - the hook's failure is recorded on the alert row
            log.error("alert %s: hook failed: %r", alert.alert_id, exc)
            return _result(alert, self.name, 1, f"{type(exc).__name__}: {exc}")
        return _result(alert, self.name, 1, None)


def _result(alert: Alert, channel: str, attempts: int, error: str | None) -> Alert:
    return alert.model_copy(update={
        "channel": channel, "delivery_attempts": alert.delivery_attempts + attempts,
        "delivery_status": DeliveryStatus.FAILED if error else DeliveryStatus.DELIVERED,
        "delivery_error": error[:1000] if error else None,
    })
