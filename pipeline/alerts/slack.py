"""Slack channels. Slack goes through slack-sdk's async clients and their
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

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.http_retry.async_handler import AsyncRetryHandler

from pipeline.alerts.blocks import resolved_parent_blocks, slack_blocks
from pipeline.alerts.channel import attempt, finish, retry_after
from pipeline.contracts import Alert, AlertKind, DeliveryAttempt

log = logging.getLogger(__name__)
TEXT_MAX = 4000  # Slack truncates `text` past 40,000 characters; notifications show far less


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
