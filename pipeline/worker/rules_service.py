"""The rules service inside every worker process: follow `evalstream.rules.v1` and switch the worker's rules
to each new version that validates, without a restart (`evalstream rules apply`).

The switch replaces `ctx.rules` whole, between events: routing reads that reference once per event, so
every decision and job of an event is made under one version, and records it."""

from __future__ import annotations

import logging
from typing import Any

from mode import Service

from pipeline.kafka_security import aiokafka_options
from pipeline.rules.store import RulesFollower
from pipeline.rules.versions import ActiveRules
from pipeline.worker.context import WorkerContext

log = logging.getLogger(__name__)


def switch_rules(ctx: WorkerContext, active: ActiveRules) -> None:
    ctx.rules = active
    ctx.counters.inc("rules_switches")
    log.warning("rules: now version %s: %d active rule(s), %d alert(s)", active.label, len(active.ruleset.active),
                len(active.ruleset.alerts))


def rules_service_class(ctx: WorkerContext, bootstrap: str) -> type[Service]:
    class RulesService(Service):
        """Started and stopped with the Faust app (`app.service`)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.follower = RulesFollower(
                bootstrap, lambda: ctx.rules.version, lambda active: switch_rules(ctx, active), scorers=ctx.scorers,
                on_reject=lambda reason: ctx.counters.inc("rules_rejected", reason=reason),
                client_options=aiokafka_options(ctx.settings))

        async def on_start(self) -> None:
            self.add_future(self.follower.run())

    return RulesService
