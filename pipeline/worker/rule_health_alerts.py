"""The built-in rule-health alert, run by the sink (the process that owns storage): every
`rule_health_interval_s` it reads rule health (`storage/rule_health.py`, `rules/health.py`) for the rules this
worker loaded, advances each rule's incident (`alerts/rule_health.py`, pure) and sends what that decides through
the configured channels, like the alerter: each message stored on `evalstream.alerts.v1`, a failed delivery
retried by the alert-redelivery agent, never dropped.

One evaluator per deployment: only the sink that owns partition 0 of `evalstream.alerts.v1` in the sink group
evaluates (`leads`); a sink that loses it forgets its incidents, and one that gains it reads them from the
`alerts` table. Duplicates are so bounded by rebalances: while one moves that partition, two sinks may both
evaluate for an interval and both send the same firing or resolution (two posts, two rows of one incident).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pipeline import topics
from pipeline.alerts.channel import Channel
from pipeline.alerts.rule_health import (
    HealthNotice,
    RuleIncident,
    incidents_from_rows,
    incidents_sql,
    render_health,
    step,
)
from pipeline.contracts import AlertKind, DeliveryStatus, encode
from pipeline.rules.health import HealthState, RuleHealth, assess, scorer_problems
from pipeline.rules.loader import ScorerCheck
from pipeline.scoring.uploaded import UploadedScorers
from pipeline.storage.reader import Reader
from pipeline.storage.rule_health import aread_figures
from pipeline.worker.alert_redelivery import retry_later
from pipeline.worker.context import WorkerContext
from scorers.registry import ScorerResolver

log = logging.getLogger(__name__)

__all__ = ["RuleHealthAlerts"]


class RuleHealthAlerts:
    def __init__(self, ctx: WorkerContext, reader: Reader, channel: Channel, *,
                 leads: Callable[[], bool] = lambda: True) -> None:
        self.ctx = ctx
        self.reader = reader
        self.channel = channel
        self.leads = leads
        self.incidents: dict[str, RuleIncident] | None = None  # loaded from the alerts table at the first check
        self._strict: ScorerResolver | None = None

    async def run(self) -> None:
        """Until cancelled. The first check waits one interval, so the sink has stored the alerts it had."""
        while True:
            await asyncio.sleep(self.ctx.settings.rule_health_interval_s)
            try:
                await self.check(time.time())
            except asyncio.CancelledError:
                raise
            except Exception:  # storage away, a channel bug: said, and tried again next interval
                log.exception("rule-health alert: check failed; trying again in %g s",
                              self.ctx.settings.rule_health_interval_s)

    def scorer_check(self) -> ScorerCheck:
        """The worker's resolver, but an uploaded name counts as missing until a version of it has arrived
        (once this process has read the scorer store: else an uploaded scorer is not judged here)."""
        uploaded = self.ctx.scorers.uploaded
        if not isinstance(uploaded, UploadedScorers) or not uploaded.catalog.ready.is_set():
            return self.ctx.scorers
        if self._strict is None:
            self._strict = ScorerResolver(judge_client=self.ctx.scorers.judge_client, uploaded=UploadedScorers(
                uploaded.catalog, self.ctx.settings, accept_unknown=False))
        return self._strict

    async def health(self, now: float) -> list[RuleHealth]:
        settings = self.ctx.settings
        rules = self.ctx.ruleset.rules
        problems = scorer_problems([r for r in rules if r.enabled], self.scorer_check())
        figures = await aread_figures(self.reader, now - settings.rule_health_window_s, now)
        return [h for h in assess(figures, now=now, window_s=settings.rule_health_window_s, rules=rules,
                                  problems=problems) if h.in_rules_file]

    async def check(self, now: float) -> None:
        if not self.leads():
            self.incidents = None  # another sink evaluates; read the table again if this one takes over
            return
        if self.incidents is None:
            self.incidents = incidents_from_rows(await self.reader.arows(incidents_sql(self.reader.database)))
            opened = sorted(r for r, inc in self.incidents.items() if inc.open)
            log.info("rule-health alert: evaluating every %g s; open incidents: %s",
                     self.ctx.settings.rule_health_interval_s, ", ".join(opened) or "none")
        cooldown = self.ctx.settings.rule_health_cooldown_s
        seen = set()
        for h in await self.health(now):
            seen.add(h.rule)
            for state in HealthState:
                self.ctx.counters.set("rule_health", 1.0 if state == h.state else 0.0, rule=h.rule, state=state.value)
            inc = self.incidents.setdefault(h.rule, RuleIncident(h.rule))
            failures = max(1, h.figures.recent_errors or h.figures.errored) if h.state == HealthState.ERRORING else 1
            for notice in step(inc, h.state, h.reason, now, cooldown, scorer=h.scorer, failures=failures):
                await self._send(inc, notice)
        for rule, inc in self.incidents.items():  # a rule no longer loaded: its open incident resolves
            if rule not in seen and inc.open:
                for notice in step(inc, HealthState.IDLE, "no longer in the rules file", now, cooldown):
                    await self._send(inc, notice)

    async def _send(self, inc: RuleIncident, notice: HealthNotice) -> None:
        fired_reason = inc.reason if notice.kind == AlertKind.RESOLVED else ""
        message = render_health(notice, channel=self.channel.name, fired_reason=fired_reason)
        delivered = await self.channel.deliver(message)
        if notice.kind == AlertKind.FIRING:
            inc.thread.update(delivered.thread)  # the resolved message replies in the firing's thread
        log.warning("rule-health alert: %s (%s)", delivered.title, delivered.delivery_status.value)
        self.ctx.counters.inc("alerts", kind=notice.kind.value, status=delivered.delivery_status.value)
        await self.ctx.send(topics.ALERTS, delivered.alert_id, encode(delivered))
        if delivered.delivery_status == DeliveryStatus.FAILED:
            await retry_later(self.ctx, delivered, 0)
