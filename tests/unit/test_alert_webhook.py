"""pipeline/alerts/webhook: signed JSON webhooks with retries, Python hooks, and fan-out to several channels."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline.alerts.channels import FanOutChannel
from pipeline.alerts.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HookChannel,
    WebhookChannel,
    load_hook,
    verify,
)
from pipeline.contracts import Alert, DeliveryStatus
from pipeline.errors import ConfigError

SECRET = "s3cret"


def make_alert() -> Alert:
    return Alert(alert_id="a1", alert_rule="tool-error", kind="each", rule="tool-errors", title="tool-errors failed",
                 text="1 failure", trace_ids=["t1"], fired_at_ns=time.time_ns())


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
    assert b'"alert_rule":"tool-error"' in body and b"delivery_status" not in body


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
    mixed = await FanOutChannel([HookChannel(record_alert), HookChannel(broken_hook)]).deliver(make_alert())
    assert mixed.delivery_status == DeliveryStatus.FAILED and "pager is down" in mixed.delivery_error
    assert len(received) == 2  # the working channel still delivered
