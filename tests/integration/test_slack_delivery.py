"""Slack delivery through slack-sdk's real webhook client: a 429 is retried after its Retry-After."""

from __future__ import annotations

import asyncio
import time

import pytest

from pipeline.alerts.slack import SlackWebhookChannel
from pipeline.contracts import Alert, AlertKind, AlertLevel, AlertTrace, DeliveryStatus
from tests.integration.slack_server import SlackServer


def make_alert(**changes: object) -> Alert:
    fields: dict = {
        "alert_id": "a1", "incident_id": "inc-1", "alert_rule": "burst", "kind": AlertKind.FIRING,
        "level": AlertLevel.CRITICAL, "rule": "errors", "scorer": "error_spans", "project": "shop",
        "title": "[burst] 3 failures", "text": "• t1: boom", "observed": 3, "threshold": 3, "failures": 3,
        "window_s": 60, "trace_ids": ["t1"], "traces": [AlertTrace(trace_id="t1", reason="boom")],
        "fired_at_ns": time.time_ns(),
    }
    return Alert(**{**fields, **changes})


async def test_a_rate_limited_alert_waits_for_retry_after_and_is_delivered_once() -> None:
    with SlackServer() as slack:
        slack.rate_limited, slack.retry_after_s = 1, 1
        result = await SlackWebhookChannel(slack.url).deliver(make_alert(delivery_attempts=2))
    assert result.delivery_status == DeliveryStatus.DELIVERED
    assert len(slack.arrivals) == 2 and len(slack.messages) == 1
    assert slack.arrivals[1] - slack.arrivals[0] >= 0.9  # waited for Retry-After (1 s), did not hammer
    assert slack.messages[0]["text"].startswith("[burst] 3 failures")
    limited, delivered = result.attempts
    assert (limited.ok, limited.http_status, limited.retry_after_s) == (False, 429, 1.0)
    assert (delivered.ok, delivered.http_status, delivered.error) == (True, 200, None)
    assert {a.channel for a in result.attempts} == {"slack-webhook"}
    assert limited.attempt_id != delivered.attempt_id and limited.at_ns <= delivered.at_ns
    assert result.delivery_attempts == 2 + 2  # earlier rounds plus this one's two tries


async def test_every_kind_is_a_plain_webhook_message_with_blocks() -> None:
    with SlackServer() as slack:
        channel = SlackWebhookChannel(slack.url)
        for kind in (AlertKind.FIRING, AlertKind.DIGEST, AlertKind.RESOLVED):
            result = await channel.deliver(make_alert(kind=kind, thread={"slack-bot": "1700000000.000100"}))
            assert result.delivery_status == DeliveryStatus.DELIVERED
            assert result.thread == {"slack-bot": "1700000000.000100"}  # untouched: webhooks have no threads
    assert len(slack.messages) == 3
    assert all("thread_ts" not in m for m in slack.messages)
    assert slack.messages[0]["blocks"][0]["text"]["text"] == "🔴 CRITICAL · burst firing"
    assert slack.messages[2]["blocks"][0]["text"]["text"] == "✅ Resolved · burst"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_a_server_error_is_retried_and_every_try_is_recorded(status: int) -> None:
    with SlackServer() as slack:
        slack.down, slack.down_status = True, status
        result = await SlackWebhookChannel(slack.url, max_retries=2).deliver(make_alert())
    assert result.delivery_status == DeliveryStatus.FAILED and str(status) in result.delivery_error
    assert slack.refused == 3  # the first try and two retries; then it is left to the redelivery queue
    assert [(a.ok, a.http_status) for a in result.attempts] == [(False, status)] * 3
    assert result.delivery_attempts == 3


async def test_a_server_error_that_clears_is_delivered_by_a_retry() -> None:
    with SlackServer() as slack:
        slack.down, slack.down_status = True, 502
        channel = SlackWebhookChannel(slack.url, max_retries=3)
        delivery = asyncio.create_task(channel.deliver(make_alert()))
        while slack.refused == 0:
            await asyncio.sleep(0.01)
        slack.down = False  # back before the retry (slack-sdk waits 0.5 s first)
        result = await delivery
    assert result.delivery_status == DeliveryStatus.DELIVERED and len(slack.messages) == 1
    assert [(a.ok, a.http_status) for a in result.attempts] == [(False, 502), (True, 200)]
