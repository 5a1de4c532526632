"""Redelivery of alerts whose delivery failed (Slack down, webhook rejecting): a Kafka delay queue.

Each AlertRetry waits until its time (at most `defer_max_sleep_s` per pass, then it goes round
again), is delivered again, and the new state is written to the alerts topic, where the same
alert_id replaces the `failed` row. Failing again schedules the next, longer wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pipeline import topics
from pipeline.alerts.channel import Channel
from pipeline.alerts.evaluator import group_key
from pipeline.alerts.redelivery import schedule_retry
from pipeline.alerts.rule_health import RULE_HEALTH_ALERT
from pipeline.contracts import (
    Alert,
    AlertObservationBatch,
    AlertRetry,
    AlertThread,
    DeliveryStatus,
    decode,
    encode,
)
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for

log = logging.getLogger(__name__)


async def retry_later(ctx: WorkerContext, alert: Alert, retries: int) -> None:
    retry = schedule_retry(alert, retries, time.time_ns(), ctx.settings.alert_retry_backoff_s,
                           ctx.settings.alert_retry_max_backoff_s)
    await ctx.send(topics.ALERT_RETRIES, alert.alert_id, encode(retry))
    log.warning("alert %s: delivery failed (%s); retry %d in %.0f s", alert.alert_id, alert.delivery_error,
                retries + 1, (retry.not_before_ns - time.time_ns()) / 1e9)


class AlertRedelivery:
    def __init__(self, ctx: WorkerContext, channel: Channel) -> None:
        self.ctx = ctx
        self.channel = channel

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            retry = decode(message.value, AlertRetry, max_bytes=self.ctx.settings.max_message_bytes)
        except Exception as exc:  # noqa: BLE001 - an undecodable retry becomes a dead letter
            log.error("alert-redelivery: dead-lettering %s[%d]@%d: %s", message.topic, message.partition,
                      message.offset, exc)
            await self.ctx.dead_letter(dead_letter_for("alert-redelivery", message, exc))
            return
        wait_s = retry.not_before_ns / 1e9 - time.time()
        if wait_s > 0:
            await asyncio.sleep(min(wait_s, self.ctx.settings.defer_max_sleep_s))
        if time.time_ns() < retry.not_before_ns:
            await self.ctx.send(topics.ALERT_RETRIES, retry.alert.alert_id, message.value)
            return
        delivered = await self.channel.deliver(retry.alert)
        self.ctx.counters.inc("alerts_redelivered", kind=delivered.kind.value, status=delivered.delivery_status.value)
        await self.ctx.send(topics.ALERTS, delivered.alert_id, encode(delivered))
        if delivered.delivery_status == DeliveryStatus.FAILED:
            await retry_later(self.ctx, delivered, retry.retries + 1)
        else:
            await self._share_thread(retry.alert, delivered)
            log.info("alert %s: delivered on redelivery %d (%d attempts in all)", delivered.alert_id,
                     retry.retries + 1, delivered.delivery_attempts)

    async def _share_thread(self, before: Alert, delivered: Alert) -> None:
        """An incident's first message delivered late: tell the alerter where its thread is."""
        learnt = {k: v for k, v in delivered.thread.items() if k not in before.thread}
        if learnt and delivered.incident_id and delivered.alert_rule != RULE_HEALTH_ALERT:  # no alerter state
            thread = AlertThread(group_key=group_key(delivered.alert_rule, delivered.group),
                                 incident_id=delivered.incident_id, thread=learnt)
            await self.ctx.send(topics.ALERT_OBSERVATIONS, delivered.alert_rule,
                                encode(AlertObservationBatch(alert_rule=delivered.alert_rule, thread=thread)))
