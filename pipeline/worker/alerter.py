"""Alerter: score results are turned into observations per alert rule (`alert-matcher`), repartitioned
by the rule's name so one worker owns each rule's groups, and fed to the incident state machine
(`alerter`), whose state is a Faust table restored after a restart. Ticks on the same topic close
windows by the clock, so a group that went quiet still resolves and a held digest still goes out."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from pipeline import topics
from pipeline.alerts import incidents
from pipeline.alerts.channel import Channel
from pipeline.alerts.evaluator import applies, group_key, matches, observation
from pipeline.alerts.message import render
from pipeline.contracts import AlertObservationBatch, DeliveryStatus, ScoreResultBatch, decode, encode
from pipeline.rules.model import AlertRule
from pipeline.worker.alert_redelivery import retry_later
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for

log = logging.getLogger(__name__)

TICK_KEY = b"__tick__"
TICK = orjson.dumps({"v": 1, "kind": "tick"})


class Alerter:
    def __init__(self, ctx: WorkerContext, incidents_table: Any, channel: Channel) -> None:
        self.ctx = ctx
        self.table = incidents_table
        self.channel = channel
        self._alerts_of: object = None
        self._alerts: dict[str, AlertRule] = {}

    @property
    def alert_rules(self) -> dict[str, AlertRule]:
        """The alerts of the rules in use: they follow `evalstream rules apply` as routing does."""
        rules = self.ctx.rules
        if self._alerts_of is not rules:
            self._alerts_of, self._alerts = rules, {a.name: a for a in rules.ruleset.alerts}
        return self._alerts

    async def handle_scores(self, event: Any) -> None:
        """scores -> one observation batch per alert rule that watches any of them."""
        message = event.message
        alert_rules = self.alert_rules  # one version for the whole message
        if not alert_rules:
            return
        try:
            batch = decode(message.value, ScoreResultBatch, max_bytes=self.ctx.settings.max_message_bytes)
            for alert in alert_rules.values():
                observed = []
                for result in batch.results:
                    if not applies(alert, result):
                        continue
                    hit = matches(alert, result)
                    if hit or alert.needs_all_results:
                        observed.append(observation(alert, result, hit))
                if observed:
                    await self.ctx.send(topics.ALERT_OBSERVATIONS, alert.name,
                                        encode(AlertObservationBatch(alert_rule=alert.name, observations=observed)))
        except Exception as exc:
            log.exception("alert-matcher: failed on %s[%d]@%d", message.topic, message.partition, message.offset)
            await self.ctx.dead_letter(dead_letter_for("alert-matcher", message, exc))

    async def send_ticks(self) -> None:
        """A tick to each owned partition that holds an alert group's state: a tick advances only those.
        A tick is a record the broker keeps (Tansu keeps every one), so an idle partition gets none."""
        busy = {state.get("p") for state in self.table.values()}
        for tp in self.ctx.app.assignor.assigned_actives():
            if tp.topic == topics.ALERT_OBSERVATIONS and tp.partition in busy:
                await self.ctx.send(topics.ALERT_OBSERVATIONS, TICK_KEY, TICK, partition=tp.partition)

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            if message.key == TICK_KEY:
                # The tick's own time, not now: behind a backlog, results queued after it are still to come.
                await self._tick(message.partition, float(getattr(message, "timestamp", 0) or time.time()))
                return
            batch = decode(message.value, AlertObservationBatch, max_bytes=self.ctx.settings.max_message_bytes)
            alert = self.alert_rules.get(batch.alert_rule)
            if alert is None:
                log.warning("alerter: alert rule %r is no longer configured; %d observation(s) skipped",
                            batch.alert_rule, len(batch.observations))
                return
            if batch.thread is not None:
                self._learn_thread(batch)
            now = time.time()
            touched: dict[str, dict[str, Any]] = {}
            for obs in batch.observations:
                key = group_key(alert.name, obs.group)
                state = (touched.get(key) or self.table.get(key)
                         or incidents.new_state(obs.group, message.partition) | {"alert": alert.name})
                state["p"] = message.partition
                notices = incidents.observe(state, alert, obs, now)
                state["meta"] = {"rule": obs.rule, "scorer": obs.scorer, "project": obs.project}
                touched[key] = state
                await self._send(alert, state, notices)
            # Saved after its messages went out: a crash in between re-sends them (same alert ids, one
            # row each) instead of losing them. One changelog write per group per batch.
            for key, state in touched.items():
                self.table[key] = state
        except Exception as exc:
            log.exception("alerter: failed on %s[%d]@%d", message.topic, message.partition, message.offset)
            await self.ctx.dead_letter(dead_letter_for("alerter", message, exc))

    async def _tick(self, partition: int, tick_time: float) -> None:
        now = time.time()
        watermark = min(now, tick_time) - self.ctx.settings.alert_grace_s
        for key, state in list(self.table.items()):
            if state.get("p") != partition:
                continue
            alert = self.alert_rules.get(state.get("alert", ""))
            if alert is None:
                log.warning("alerter: dropping the state of %r: its alert rule is no longer configured", key)
                del self.table[key]
                continue
            before = orjson.dumps(state)
            notices = incidents.advance(state, alert, watermark=watermark, wall_now=now)
            await self._send(alert, state, notices)
            if incidents.is_idle(state):
                del self.table[key]
            elif orjson.dumps(state) != before:  # the changelog gets a write only when something changed
                self.table[key] = state

    def _learn_thread(self, batch: AlertObservationBatch) -> None:
        thread = batch.thread
        assert thread is not None
        state = self.table.get(thread.group_key)
        if state and state.get("inc") and state["inc"]["id"] == thread.incident_id:
            state["inc"]["thread"].update(thread.thread)
            self.table[thread.group_key] = state

    async def _send(self, alert: AlertRule, state: dict[str, Any], notices: list[incidents.Notice]) -> None:
        """Deliver and record each message; the caller saves `state` afterwards (thread ids included)."""
        settings = self.ctx.settings
        for notice in notices:
            message = render(alert, notice, {"group": state["group"], **state.get("meta", {})},
                             channel=self.channel.name, trace_url_template=settings.trace_url_template,
                             dashboard_url_template=settings.alert_dashboard_url_template)
            delivered = await self.channel.deliver(message)
            new_thread = {k: v for k, v in delivered.thread.items() if k not in message.thread}
            inc = state.get("inc")
            if new_thread and inc and inc["id"] == notice.incident_id:
                inc["thread"].update(new_thread)
            self.ctx.counters.inc("alerts", kind=notice.kind.value, status=delivered.delivery_status.value)
            await self.ctx.send(topics.ALERTS, delivered.alert_id, encode(delivered))
            if delivered.delivery_status == DeliveryStatus.FAILED:
                await retry_later(self.ctx, delivered, 0)
