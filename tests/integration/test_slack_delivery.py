"""Slack delivery through slack-sdk's real webhook client: a 429 is retried after its Retry-After."""

from __future__ import annotations

import time

from pipeline.alerts.channels import SlackWebhookChannel
from pipeline.contracts import Alert, DeliveryStatus
from tests.integration.slack_server import SlackServer


def make_alert() -> Alert:
    return Alert(alert_id="a1", alert_rule="burst", kind="count", rule="errors", title="[burst] 3 failures",
                 text="• t1: boom", failures=3, trace_ids=["t1"], fired_at_ns=time.time_ns())


async def test_a_rate_limited_alert_waits_for_retry_after_and_is_delivered_once() -> None:
    with SlackServer() as slack:
        slack.rate_limited, slack.retry_after_s = 1, 1
        result = await SlackWebhookChannel(slack.url).deliver(make_alert())
    assert result.delivery_status == DeliveryStatus.DELIVERED
    assert len(slack.arrivals) == 2 and len(slack.messages) == 1
    assert slack.arrivals[1] - slack.arrivals[0] >= 0.9  # waited for Retry-After (1 s), did not hammer
    assert slack.messages[0]["text"] == "[burst] 3 failures"
