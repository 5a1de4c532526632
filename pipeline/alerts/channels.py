"""Alert channels behind one interface: `deliver(alert)` returns the alert with its delivery fields set.

Every HTTP try is a `DeliveryAttempt` in the returned alert's `attempts` (this round only), and
`delivery_attempts` grows by their number. Slack goes through slack-sdk's async clients and their
own retry handlers (429 honouring Retry-After, 5xx, connection errors); each handler is wrapped in
a `RecordingRetryHandler`, which records the try it is about to retry, so a 429 followed by a
success is two attempts. A delivery that still fails is stored as `failed`.

Threads: `SlackBotChannel` posts the first message of an incident top-level and returns its `ts`
in `alert.thread[channel.name]` and the channel id Slack answered with in
`alert.thread[channel.name + ":channel"]` (chat.update needs the id, not a name). Later messages
of that incident are replies in the thread; `resolved` also rewrites the first message.
`SlackWebhookChannel` has no threads: every message is a plain post.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from slack_sdk.http_retry.async_handler import AsyncRetryHandler

from pipeline.alerts.blocks import resolved_parent_blocks, slack_blocks
from pipeline.contracts import Alert, AlertKind, DeliveryAttempt, DeliveryStatus
from pipeline.settings import Settings

log = logging.getLogger(__name__)

TEXT_MAX = 4000  # Slack truncates `text` past 40,000 characters; notifications show far less
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


class ConsoleChannel:
    name = "console"

    async def deliver(self, alert: Alert) -> Alert:
        print(f"\nALERT {alert.title}\n{alert.text}\n", flush=True)
        return finish(alert, self.name, [attempt(self.name, True)], None, status=DeliveryStatus.CONSOLE)


# --- recording slack-sdk's own retries -------------------------------------------------------------

@dataclass
class _Tries:
    """The tries of one Slack API call, filled by the retry handlers and by the call's outcome."""

    channel: str
    method: str
    attempts: list[DeliveryAttempt] = field(default_factory=list)

    def record(self, ok: bool, *, http_status: int | None = None, error: str | None = None,
               retry_after_s: float | None = None) -> None:
        error = f"{self.method}: {error}" if error and self.method else error
        self.attempts.append(attempt(self.channel, ok, http_status=http_status, error=error,
                                     retry_after_s=retry_after_s))


_tries: ContextVar[_Tries | None] = ContextVar("evalstream_slack_tries", default=None)


class RecordingRetryHandler(AsyncRetryHandler):
    """A slack-sdk retry handler that records each try it retries, then lets the wrapped one decide and wait."""

    def __init__(self, inner: AsyncRetryHandler) -> None:
        super().__init__(max_retry_count=inner.max_retry_count, interval_calculator=inner.interval_calculator)
        self.inner = inner

    async def can_retry_async(self, *, state: Any, request: Any, response: Any = None,
                              error: Exception | None = None) -> bool:
        return await self.inner.can_retry_async(state=state, request=request, response=response, error=error)

    async def prepare_for_next_attempt_async(self, *, state: Any, request: Any, response: Any = None,
                                             error: Exception | None = None) -> None:
        tries = _tries.get()
        if tries is not None:
            status = response.status_code if response is not None else None
            tries.record(False, http_status=status,
                         error=f"{type(error).__name__}: {error}" if error is not None else f"HTTP {status}",
                         retry_after_s=retry_after(response.headers if response is not None else None))
        await self.inner.prepare_for_next_attempt_async(state=state, request=request, response=response,
                                                        error=error)


def retry_handlers(max_retries: int = 3) -> list[AsyncRetryHandler]:
    from slack_sdk.http_retry.builtin_async_handlers import (
        AsyncConnectionErrorRetryHandler,
        AsyncRateLimitErrorRetryHandler,
        AsyncServerErrorRetryHandler,
    )

    class AnyServerErrorRetryHandler(AsyncServerErrorRetryHandler):
        """slack-sdk's own retries 500 and 503 only; a 502 or 504 from a proxy in front of Slack is as transient."""

        async def _can_retry_async(self, *, state: Any, request: Any, response: Any = None,
                                   error: Exception | None = None) -> bool:
            return response is not None and 500 <= response.status_code < 600

    return [RecordingRetryHandler(AsyncRateLimitErrorRetryHandler(max_retry_count=max_retries)),
            RecordingRetryHandler(AnyServerErrorRetryHandler(max_retry_count=max_retries)),
            RecordingRetryHandler(AsyncConnectionErrorRetryHandler(max_retry_count=max_retries))]


def retry_after(headers: Mapping[str, Any] | None) -> float | None:
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            try:
                return float(value[0] if isinstance(value, list) else value)
            except (TypeError, ValueError, IndexError):
                return None
    return None


async def _tried(name: str, method: str, call: Callable[..., Awaitable[Any]], /,
                 **kwargs: Any) -> tuple[Any, list[DeliveryAttempt]]:
    """Call slack-sdk; the response (None if the call failed) and every try it took."""
    from slack_sdk.errors import SlackApiError

    tries = _Tries(name, method)
    token = _tries.set(tries)
    try:
        response = await call(**kwargs)
    except SlackApiError as exc:
        data = exc.response.data if isinstance(exc.response.data, dict) else {}
        tries.record(False, http_status=exc.response.status_code,
                     error=f"HTTP {exc.response.status_code}: {data.get('error') or 'no error in the response'}",
                     retry_after_s=retry_after(exc.response.headers))
        return None, tries.attempts
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the alert row
        tries.record(False, error=f"{type(exc).__name__}: {exc}")
        return None, tries.attempts
    finally:
        _tries.reset(token)
    status = response.status_code
    if status != 200:  # the webhook client returns non-2xx answers instead of raising
        tries.record(False, http_status=status, error=f"HTTP {status}: {str(getattr(response, 'body', ''))[:200]}",
                     retry_after_s=retry_after(response.headers))
        return None, tries.attempts
    tries.record(True, http_status=status)
    return response, tries.attempts


def fallback_text(alert: Alert) -> str:
    """Notifications and clients without Block Kit show this: the title first."""
    text = f"{alert.title}\n{alert.text}" if alert.text else alert.title
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 1] + "…"


# --- Slack channels --------------------------------------------------------------------------------

class SlackWebhookChannel:
    name = "slack-webhook"

    def __init__(self, url: str, *, max_retries: int = 3) -> None:
        from slack_sdk.webhook.async_client import AsyncWebhookClient

        self._client = AsyncWebhookClient(url, timeout=10, retry_handlers=retry_handlers(max_retries))

    async def deliver(self, alert: Alert) -> Alert:
        response, attempts = await _tried(self.name, "", self._client.send, text=fallback_text(alert),
                                          blocks=slack_blocks(alert))
        return finish(alert, self.name, attempts, None if response is not None else attempts[-1].error)


class SlackBotChannel:
    """chat.postMessage with a bot token: one thread per incident, its first message rewritten on resolve."""

    name = "slack-bot"

    def __init__(self, token: str, channel: str, base_url: str | None = None, *, max_retries: int = 3) -> None:
        from slack_sdk.web.async_client import AsyncWebClient

        kwargs = {"base_url": base_url} if base_url else {}
        self._client = AsyncWebClient(token=token, timeout=10, retry_handlers=retry_handlers(max_retries), **kwargs)
        self._channel = channel
        self.channel_key = f"{self.name}:channel"  # thread key of the channel id the first message landed in

    async def deliver(self, alert: Alert) -> Alert:
        parent_ts = alert.thread.get(self.name)
        if parent_ts and alert.kind in (AlertKind.FIRING, AlertKind.TEST):
            # This message is the incident's first one and was posted in an earlier round (the fan-out
            # failed elsewhere and is being redelivered): posting it again would open a second thread.
            return finish(alert, self.name, [], None)
        text, blocks = fallback_text(alert), slack_blocks(alert)
        if not parent_ts:  # a new incident, or one whose first message never arrived: start the thread here
            response, attempts = await _tried(self.name, "chat.postMessage", self._client.chat_postMessage,
                                              channel=self._channel, text=text, blocks=blocks)
            if response is None:
                return finish(alert, self.name, attempts, attempts[-1].error)
            thread = {**alert.thread, self.name: response["ts"], self.channel_key: response["channel"]}
            return finish(alert, self.name, attempts, None, thread=thread)

        channel_id = alert.thread.get(self.channel_key) or self._channel
        response, attempts = await _tried(
            self.name, "chat.postMessage", self._client.chat_postMessage, channel=channel_id, text=text,
            blocks=blocks, thread_ts=parent_ts,
            reply_broadcast=alert.kind in (AlertKind.ESCALATED, AlertKind.RESOLVED))
        if response is None:
            return finish(alert, self.name, attempts, attempts[-1].error)
        if alert.kind == AlertKind.RESOLVED:
            updated, tries = await _tried(self.name, "chat.update", self._client.chat_update, channel=channel_id,
                                          ts=parent_ts, text=f"✅ Resolved · {alert.alert_rule}",
                                          blocks=resolved_parent_blocks(alert))
            attempts += tries
            if updated is None:  # the resolution itself arrived; only the first message still says firing
                log.warning("alert %s (incident %s): could not mark the first message %s resolved: %s",
                            alert.alert_id, alert.incident_id, parent_ts, tries[-1].error)
        return finish(alert, self.name, attempts, None)


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
