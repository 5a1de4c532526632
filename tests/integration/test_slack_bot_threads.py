"""SlackBotChannel through slack-sdk's real AsyncWebClient: one thread per incident, resolved rewrites its head."""

from __future__ import annotations

import time

from pipeline.alerts.channel import FanOutChannel
from pipeline.alerts.slack import SlackBotChannel
from pipeline.alerts.webhook import HookChannel
from pipeline.contracts import Alert, AlertKind, AlertLevel, AlertTrace, DeliveryStatus
from tests.integration.slack_server import CHANNEL_ID, SlackServer

TOKEN = "xoxb-test-token"
START_NS = 1_700_000_000 * 10**9


def make_alert(kind: AlertKind, alert_id: str, **changes: object) -> Alert:
    fields: dict = {
        "alert_id": alert_id, "incident_id": "inc-1", "alert_rule": "burst", "kind": kind,
        "level": AlertLevel.CRITICAL, "rule": "errors", "scorer": "error_spans", "project": "shop",
        "group": {"agent": "researcher"}, "title": f"[burst] {kind.value}", "text": "• t1: boom",
        "observed": 5, "threshold": 5, "failures": 5, "window_s": 60, "window_start_ns": START_NS,
        "incident_started_ns": START_NS, "trace_ids": ["t1"], "traces": [AlertTrace(trace_id="t1")],
        "fired_at_ns": time.time_ns(),
    }
    return Alert(**{**fields, **changes})


def bot(slack: SlackServer, token: str = TOKEN, **kwargs: object) -> SlackBotChannel:
    return SlackBotChannel(token, "#alerts", base_url=slack.api_base_url, **kwargs)


async def test_an_incident_is_one_thread_and_resolving_rewrites_its_first_message() -> None:
    with SlackServer(TOKEN) as slack:
        channel = bot(slack)
        firing = await channel.deliver(make_alert(AlertKind.FIRING, "a1"))
        assert firing.delivery_status == DeliveryStatus.DELIVERED
        ts = firing.thread["slack-bot"]
        assert firing.thread == {"slack-bot": ts, "slack-bot:channel": CHANNEL_ID}
        (ok,) = firing.attempts
        assert ok.ok and ok.http_status == 200 and ok.channel == "slack-bot" and firing.delivery_attempts == 1

        digest = await channel.deliver(make_alert(AlertKind.DIGEST, "a2", suppressed=7, thread=firing.thread))
        escalated = await channel.deliver(make_alert(AlertKind.ESCALATED, "a3", thread=firing.thread))
        resolved = await channel.deliver(make_alert(AlertKind.RESOLVED, "a4", failures=40, thread=firing.thread))

    assert [r.delivery_status for r in (digest, escalated, resolved)] == [DeliveryStatus.DELIVERED] * 3
    assert resolved.thread == firing.thread and len(resolved.attempts) == 2  # the reply and the chat.update
    head, *replies = slack.posts
    assert head["channel"] == "#alerts" and "thread_ts" not in head and head["ts"] == ts
    assert head["text"].startswith("[burst] firing") and head["blocks"][0]["text"]["text"].endswith("burst firing")
    assert [(p["thread_ts"], p["reply_broadcast"], p["channel"]) for p in replies] == [
        (ts, False, CHANNEL_ID), (ts, True, CHANNEL_ID), (ts, True, CHANNEL_ID)]
    (update,) = slack.updates
    assert update["channel"] == CHANNEL_ID and update["ts"] == ts
    assert update["blocks"][0]["text"]["text"] == "✅ Resolved · burst"
    assert "40 failures" in update["blocks"][1]["elements"][0]["text"]


async def test_a_message_of_an_incident_whose_first_message_never_arrived_starts_the_thread() -> None:
    with SlackServer(TOKEN) as slack:
        digest = await bot(slack).deliver(make_alert(AlertKind.DIGEST, "a2", suppressed=3))
    assert digest.delivery_status == DeliveryStatus.DELIVERED
    assert digest.thread["slack-bot"] == slack.posts[0]["ts"] and "thread_ts" not in slack.posts[0]


async def test_a_failing_chat_update_does_not_fail_the_resolution() -> None:
    with SlackServer(TOKEN) as slack:
        thread = {"slack-bot": "1700000000.000001", "slack-bot:channel": "C-GONE"}
        resolved = await bot(slack).deliver(make_alert(AlertKind.RESOLVED, "a4", thread=thread))
    assert resolved.delivery_status == DeliveryStatus.DELIVERED and resolved.delivery_error is None
    reply, update = resolved.attempts
    assert reply.ok and not update.ok and "chat.update" in update.error and "channel_not_found" in update.error
    assert resolved.delivery_attempts == 2 and slack.updates == []


async def test_with_slack_down_delivery_fails_with_every_try_recorded_and_no_thread() -> None:
    with SlackServer(TOKEN) as slack:
        slack.down = True
        firing = await bot(slack, max_retries=1).deliver(make_alert(AlertKind.FIRING, "a1"))
    assert firing.delivery_status == DeliveryStatus.FAILED and "503" in firing.delivery_error
    assert firing.thread == {} and slack.posts == [] and slack.refused == 2
    # one retry (max_retries=1), then given up
    assert [(a.ok, a.http_status) for a in firing.attempts] == [(False, 503), (False, 503)]
    assert firing.delivery_attempts == 2


async def test_a_rate_limited_post_waits_for_retry_after() -> None:
    with SlackServer(TOKEN) as slack:
        slack.rate_limited, slack.retry_after_s = 1, 1
        firing = await bot(slack).deliver(make_alert(AlertKind.FIRING, "a1"))
    assert firing.delivery_status == DeliveryStatus.DELIVERED and len(slack.posts) == 1
    limited, delivered = firing.attempts
    assert (limited.ok, limited.http_status, limited.retry_after_s) == (False, 429, 1.0)
    assert delivered.ok and slack.arrivals[1] - slack.arrivals[0] >= 0.9


async def test_an_unknown_token_fails_clearly() -> None:
    with SlackServer(TOKEN) as slack:
        firing = await bot(slack, token="xoxb-wrong").deliver(make_alert(AlertKind.FIRING, "a1"))
    assert firing.delivery_status == DeliveryStatus.FAILED
    assert "invalid_auth" in firing.delivery_error and "chat.postMessage" in firing.delivery_error
    assert slack.posts == [] and len(firing.attempts) == 1  # not retried: a wrong token stays wrong


async def test_fan_out_merges_threads_and_attempts_and_a_redelivered_firing_is_not_posted_twice() -> None:
    seen: list[str] = []
    with SlackServer(TOKEN) as slack:
        both = FanOutChannel([bot(slack), HookChannel(lambda alert: seen.append(alert.alert_id))])
        first = await both.deliver(make_alert(AlertKind.FIRING, "a1", delivery_attempts=1))
        again = await both.deliver(first)  # e.g. redelivered because another channel had failed
    assert first.delivery_status == DeliveryStatus.DELIVERED and first.channel == "slack-bot+hook"
    assert first.thread["slack-bot"] == slack.posts[0]["ts"] and first.thread["slack-bot:channel"] == CHANNEL_ID
    assert sorted(a.channel for a in first.attempts) == ["hook", "slack-bot"] and first.delivery_attempts == 3
    assert len(slack.posts) == 1 and seen == ["a1"]  # both accepted it: a redelivery sends it nowhere again
    assert again.attempts == [] and again.thread == first.thread
    assert first.delivered_to == ["slack-bot", "hook"] and again.delivery_status == DeliveryStatus.DELIVERED
