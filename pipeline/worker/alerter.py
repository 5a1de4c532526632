"""Alerter: results that match an alert rule are repartitioned by the rule's name, so one worker
holds each rule's window (a Faust table, restored after a restart), then fire and deliver."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import topics
from pipeline.alerts.channels import Channel
from pipeline.alerts.evaluator import group_of, matches, record, window_key
from pipeline.alerts.message import build_alert
from pipeline.contracts import AlertEvent, DeliveryStatus, ScoreResultBatch, decode, encode
from pipeline.worker.alert_redelivery import retry_later
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for

log = logging.getLogger(__name__)


class Alerter:
    def __init__(self, ctx: WorkerContext, windows: Any, channel: Channel) -> None:
        self.ctx = ctx
        self.windows = windows
        self.channel = channel
        self.alert_rules = {a.name: a for a in ctx.ruleset.alerts}

    async def handle_scores(self, event: Any) -> None:
        message = event.message
        if not self.alert_rules:
            return
        try:
            batch = decode(message.value, ScoreResultBatch, max_bytes=self.ctx.settings.max_message_bytes)
            for result in batch.results:
                for alert in self.alert_rules.values():
                    if matches(alert, result):
                        await self.ctx.send(topics.ALERT_EVENTS, alert.name,
                                            encode(AlertEvent(alert_rule=alert.name, result=result)))
        except Exception as exc:
            log.exception("alerter: failed on %s[%d]@%d", message.topic, message.partition, message.offset)
            await self.ctx.dead_letter(dead_letter_for("alerter", message, exc))

    async def handle_event(self, event: Any) -> None:
        message = event.message
        try:
            alert_event = decode(message.value, AlertEvent, max_bytes=self.ctx.settings.max_message_bytes)
            rule = self.alert_rules.get(alert_event.alert_rule)
            if rule is None:
                log.warning("alerter: alert rule %r is no longer configured; event skipped", alert_event.alert_rule)
                return
            group = group_of(rule, alert_event.result)
            key = window_key(rule, group)
            state, firing = record(self.windows.get(key), rule, alert_event.result)
            self.windows[key] = state
            if firing is None:
                return
            alert = build_alert(rule, alert_event.result, firing, self.channel.name,
                                self.ctx.settings.trace_url_template, group)
            delivered = await self.channel.deliver(alert)
            self.ctx.counters.inc("alerts", status=delivered.delivery_status.value)
            await self.ctx.send(topics.ALERTS, delivered.alert_id, encode(delivered))
            if delivered.delivery_status == DeliveryStatus.FAILED:
                await retry_later(self.ctx, delivered, 0)
        except Exception as exc:
            log.exception("alerter: failed on %s[%d]@%d", message.topic, message.partition, message.offset)
            await self.ctx.dead_letter(dead_letter_for("alerter", message, exc))
