"""Alerts to any HTTP endpoint (a JSON POST signed with HMAC-SHA256) and to a Python hook.

The signature lets the receiver check that the alert came from this pipeline and was not
replayed: `X-Evalstream-Signature: sha256=<hex hmac(secret, f"{timestamp}.{body}")>`, with the
timestamp in `X-Evalstream-Timestamp` (reject ones more than a few minutes old). Each try of the
retry loop is a `DeliveryAttempt` on the returned alert.
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

from pipeline.alerts.channel import attempt, finish, retry_after
from pipeline.contracts import Alert, DeliveryAttempt
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
                                                                   "delivery_attempts", "attempts"}))
        attempts: list[DeliveryAttempt] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s)) as session:
            while len(attempts) < self._max_attempts:
                timestamp = f"{time.time():.0f}"
                headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
                if self._secret:
                    headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
                wait = self._backoff_s * 2 ** len(attempts)
                try:
                    async with session.post(self.url, data=body, headers=headers) as response:
                        if response.status < 300:
                            attempts.append(attempt(self.name, True, http_status=response.status))
                            return finish(alert, self.name, attempts, None)
                        header = response.headers.get("Retry-After")
                        attempts.append(attempt(
                            self.name, False, http_status=response.status,
                            error=f"HTTP {response.status}: {(await response.text())[:200]}",
                            retry_after_s=retry_after(response.headers)))
                        if response.status not in RETRYABLE:
                            break
                        wait = _retry_after(header, wait)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    attempts.append(attempt(self.name, False, error=f"{type(exc).__name__}: {exc}"))
                if len(attempts) < self._max_attempts:
                    await asyncio.sleep(wait)
        return finish(alert, self.name, attempts, attempts[-1].error)


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
            error = f"{type(exc).__name__}: {exc}"
            return finish(alert, self.name, [attempt(self.name, False, error=error)], error)
        return finish(alert, self.name, [attempt(self.name, True)], None)
