"""Alert channels behind one interface: `deliver(alert)` sets the alert's delivery fields.

Slack goes through slack-sdk's async clients with its own retry handlers (429 honouring
Retry-After, 5xx, connection errors). A delivery that still fails is stored as `failed`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from pipeline.alerts.message import slack_blocks
from pipeline.contracts import Alert, DeliveryStatus
from pipeline.settings import Settings

log = logging.getLogger(__name__)


class Channel(Protocol):
    name: str

    async def deliver(self, alert: Alert) -> Alert: ...


class ConsoleChannel:
    name = "console"

    async def deliver(self, alert: Alert) -> Alert:
        print(f"\nALERT {alert.title}\n{alert.text}\n", flush=True)
        return alert.model_copy(update={"channel": self.name, "delivery_status": DeliveryStatus.CONSOLE,
                                        "delivery_attempts": 1})


def _retry_handlers(max_retries: int = 3) -> list:
    from slack_sdk.http_retry.builtin_async_handlers import (
        AsyncConnectionErrorRetryHandler,
        AsyncRateLimitErrorRetryHandler,
        AsyncServerErrorRetryHandler,
    )

    return [
        AsyncRateLimitErrorRetryHandler(max_retry_count=max_retries),
        AsyncServerErrorRetryHandler(max_retry_count=max_retries),
        AsyncConnectionErrorRetryHandler(max_retry_count=max_retries),
    ]


class SlackWebhookChannel:
    name = "slack-webhook"

    def __init__(self, url: str) -> None:
        from slack_sdk.webhook.async_client import AsyncWebhookClient

        self._client = AsyncWebhookClient(url, timeout=10, retry_handlers=_retry_handlers())

    async def deliver(self, alert: Alert) -> Alert:
        try:
            response = await self._client.send(text=alert.title, blocks=slack_blocks(alert))
            ok, error = response.status_code == 200, f"HTTP {response.status_code}: {response.body[:200]}"
        except Exception as exc:  # noqa: BLE001 - any delivery failure is recorded on the alert row
            ok, error = False, f"{type(exc).__name__}: {exc}"
        return _delivered(alert, self.name, ok, error)


class SlackBotChannel:
    name = "slack-bot"

    def __init__(self, token: str, channel: str, base_url: str | None = None) -> None:
        from slack_sdk.web.async_client import AsyncWebClient

        kwargs = {"base_url": base_url} if base_url else {}
        self._client = AsyncWebClient(token=token, timeout=10, retry_handlers=_retry_handlers(), **kwargs)
        self._channel = channel

    async def deliver(self, alert: Alert) -> Alert:
        try:
            await self._client.chat_postMessage(channel=self._channel, text=alert.title, blocks=slack_blocks(alert))
            ok, error = True, ""
        except Exception as exc:  # noqa: BLE001 - any delivery failure is recorded on the alert row
            ok, error = False, f"{type(exc).__name__}: {exc}"
        return _delivered(alert, self.name, ok, error)


def _delivered(alert: Alert, channel: str, ok: bool, error: str) -> Alert:
    if not ok:
        log.error("alert %s: delivery to %s failed: %s", alert.alert_id, channel, error)
    return alert.model_copy(update={
        "channel": channel,
        "delivery_status": DeliveryStatus.DELIVERED if ok else DeliveryStatus.FAILED,
        "delivery_error": None if ok else error[:1000],
        "delivery_attempts": alert.delivery_attempts + 1,
    })


class FanOutChannel:
    """Every configured channel gets every alert; the stored status is delivered only if all succeeded."""

    def __init__(self, channels: list[Channel]) -> None:
        self.channels = channels
        self.name = "+".join(c.name for c in channels)

    async def deliver(self, alert: Alert) -> Alert:
        results = await asyncio.gather(*(c.deliver(alert) for c in self.channels))
        errors = [f"{r.channel}: {r.delivery_error}" for r in results if r.delivery_status == DeliveryStatus.FAILED]
        return alert.model_copy(update={
            "channel": self.name,
            "delivery_status": DeliveryStatus.FAILED if errors else DeliveryStatus.DELIVERED,
            "delivery_error": "; ".join(errors)[:1000] or None,
            "delivery_attempts": max(r.delivery_attempts for r in results),
        })


def channel_from_settings(settings: Settings) -> Channel:
    from pipeline.alerts.webhook import HookChannel, WebhookChannel, load_hook

    channels: list[Channel] = []
    if settings.slack_bot_token is not None and settings.slack_channel:
        channels.append(SlackBotChannel(settings.slack_bot_token.get_secret_value(), settings.slack_channel,
                                        settings.slack_base_url))
    elif settings.slack_webhook_url is not None:
        channels.append(SlackWebhookChannel(settings.slack_webhook_url.get_secret_value()))
    if settings.alert_webhook_url:
        secret = settings.alert_webhook_secret.get_secret_value() if settings.alert_webhook_secret else None
        channels.append(WebhookChannel(settings.alert_webhook_url, secret))
    if settings.alert_hook:
        channels.append(HookChannel(load_hook(settings.alert_hook)))
    if not channels:
        return ConsoleChannel()
    return channels[0] if len(channels) == 1 else FanOutChannel(channels)
