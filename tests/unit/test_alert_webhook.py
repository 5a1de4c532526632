"""pipeline/alerts/webhook: signed JSON webhooks with retries, Python hooks, and fan-out to several channels."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline.alerts.channel import ConsoleChannel, FanOutChannel
from pipeline.alerts.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HookChannel,
    WebhookChannel,
    load_hook,
    verify,
)
from pipeline.contracts import Alert, AlertKind, DeliveryStatus
from pipeline.errors import ConfigError

SECRET = "s3cret"


def make_alert() -> Alert:
    return Alert(alert_id="a1", incident_id="inc-1", alert_rule="tool-error", kind=AlertKind.FIRING,
                 rule="tool-errors", title="tool-errors failed", text="1 failure", trace_ids=["t1"], fired_at_ns=time.time_ns())


class Receiver:
    """A local endpoint that answers with the scripted statuses, then 200."""

    def __init__(self, statuses: list[int], retry_after: str | None = None) -> None:
        self.statuses = list(statuses)
        self.retry_after = retry_after
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Retry-After": self.retry_after} if self.retry_after and status == 429 else {}
        return web.Response(status=status, text="busy" if status >= 300 else "ok", headers=headers)


async def serve(receiver: Receiver) -> TestServer:
    app = web.Application()
    app.router.add_post("/alerts", receiver.handle)
    server = TestServer(app)
    await server.start_server()
    return server


async def test_webhook_posts_signed_json_that_a_receiver_can_verify() -> None:
    receiver = Receiver([])
    server = await serve(receiver)
    try:
        result = await WebhookChannel(str(server.make_url("/alerts")), SECRET).deliver(make_alert())
    finally:
        await server.close()
    assert result.delivery_status == DeliveryStatus.DELIVERED and result.delivery_attempts == 1
    ((headers, body),) = receiver.requests
    assert verify(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert not verify("wrong", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert not verify(SECRET, headers[TIMESTAMP_HEADER], body + b" ", headers[SIGNATURE_HEADER])  # tampered
    assert not verify(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER], now=time.time() + 3600)
    assert b'"alert_rule":"tool-error"' in body and b"delivery_status" not in body and b'"attempts"' not in body
    (attempt,) = result.attempts
    assert (attempt.channel, attempt.ok, attempt.http_status, attempt.error) == ("webhook", True, 200, None)


async def test_webhook_retries_429_and_5xx_then_records_the_failure() -> None:
    receiver = Receiver([429, 503], retry_after="0.05")
    server = await serve(receiver)
    try:
        ok = await WebhookChannel(str(server.make_url("/alerts")), backoff_s=0.01).deliver(make_alert())
        receiver.statuses = [500] * 10
        failed = await WebhookChannel(str(server.make_url("/alerts")), backoff_s=0.01,
                                      max_attempts=3).deliver(make_alert())
        receiver.statuses = [400]
        rejected = await WebhookChannel(str(server.make_url("/alerts")), backoff_s=0.01).deliver(make_alert())
    finally:
        await server.close()
    assert ok.delivery_status == DeliveryStatus.DELIVERED and ok.delivery_attempts == 3
    assert failed.delivery_status == DeliveryStatus.FAILED and failed.delivery_attempts == 3
    assert failed.delivery_error.startswith("HTTP 500")
    assert rejected.delivery_attempts == 1 and rejected.delivery_error.startswith("HTTP 400")  # not retried
    assert [(a.ok, a.http_status, a.retry_after_s) for a in ok.attempts] == [
        (False, 429, 0.05), (False, 503, None), (True, 200, None)]
    assert [a.http_status for a in failed.attempts] == [500] * 3 and not any(a.ok for a in failed.attempts)
    assert failed.delivery_error == failed.attempts[-1].error
    assert len({a.attempt_id for a in ok.attempts + failed.attempts}) == 6  # each try has its own id


async def test_webhook_attempts_are_this_rounds_only_and_counted_on_top_of_earlier_rounds() -> None:
    receiver = Receiver([503])
    server = await serve(receiver)
    try:
        first = await WebhookChannel(str(server.make_url("/alerts")), max_attempts=1).deliver(make_alert())
        second = await WebhookChannel(str(server.make_url("/alerts"))).deliver(first)
    finally:
        await server.close()
    assert first.delivery_status == DeliveryStatus.FAILED and first.delivery_attempts == 1
    assert second.delivery_status == DeliveryStatus.DELIVERED and second.delivery_attempts == 2
    assert [a.ok for a in second.attempts] == [True]


async def test_an_unreachable_webhook_records_the_connection_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/alerts"
    result = await WebhookChannel(url, max_attempts=2, backoff_s=0.01).deliver(make_alert())
    assert result.delivery_status == DeliveryStatus.FAILED and len(result.attempts) == 2
    assert all(a.http_status is None and a.error and "Connect" in a.error for a in result.attempts)


received: list[Alert] = []


def record_alert(alert: Alert) -> None:
    received.append(alert)


def broken_hook(alert: Alert) -> None:
    raise RuntimeError("pager is down")


async def test_a_python_hook_gets_every_alert_and_its_failure_is_recorded() -> None:
    received.clear()
    ok = await HookChannel(load_hook(f"{__name__}:record_alert")).deliver(make_alert())
    failed = await HookChannel(broken_hook).deliver(make_alert())
    assert ok.delivery_status == DeliveryStatus.DELIVERED and [a.alert_id for a in received] == ["a1"]
    assert failed.delivery_status == DeliveryStatus.FAILED and "pager is down" in failed.delivery_error
    assert [(a.channel, a.ok) for a in ok.attempts + failed.attempts] == [("hook", True), ("hook", False)]
    assert failed.attempts[0].error == failed.delivery_error and failed.delivery_attempts == 1
    with pytest.raises(ConfigError, match="package.module:function"):
        load_hook("no_colon")


async def test_fan_out_delivers_everywhere_and_fails_if_any_channel_failed() -> None:
    received.clear()
    calls: list[Any] = []

    async def async_hook(alert: Alert) -> None:
        calls.append(alert.alert_id)

    both = FanOutChannel([HookChannel(record_alert), HookChannel(async_hook)])
    result = await both.deliver(make_alert())
    assert result.delivery_status == DeliveryStatus.DELIVERED and result.channel == "hook+hook"
    assert calls == ["a1"] and len(received) == 1
    assert len(result.attempts) == 2 and result.delivery_attempts == 2
    mixed = await FanOutChannel([HookChannel(record_alert), HookChannel(broken_hook)]).deliver(make_alert())
    assert mixed.delivery_status == DeliveryStatus.FAILED and "pager is down" in mixed.delivery_error
    assert len(received) == 2  # the working channel still delivered
    assert sorted(a.ok for a in mixed.attempts) == [False, True]
    assert mixed.delivered_to == ["hook"]
    again = await FanOutChannel([HookChannel(record_alert), HookChannel(broken_hook)]).deliver(mixed)
    assert len(received) == 2  # a redelivery goes only to the channel that failed
    assert [a.ok for a in again.attempts] == [False] and again.delivered_to == ["hook"]


async def test_the_console_records_its_one_attempt(capsys: pytest.CaptureFixture[str]) -> None:
    result = await ConsoleChannel().deliver(make_alert())
    assert result.delivery_status == DeliveryStatus.CONSOLE and result.delivery_attempts == 1
    assert [(a.channel, a.ok) for a in result.attempts] == [("console", True)]
    assert "tool-errors failed" in capsys.readouterr().out
