"""The scorer-store role inside every worker process: follow `evalstream.scorers.v1` so uploaded
scorers resolve to their latest version without a restart, and stop their sandboxes on shutdown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mode import Service

from pipeline.kafka_security import aiokafka_options
from pipeline.scoring.store import StoreFollower
from pipeline.scoring.uploaded import UploadedScorers
from pipeline.worker.context import WorkerContext

log = logging.getLogger(__name__)


def scorer_store_service_class(ctx: WorkerContext, bootstrap: str, uploads: UploadedScorers) -> type[Service]:
    class ScorerStoreService(Service):
        """Started and stopped with the Faust app (`app.service`)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.follower = StoreFollower(bootstrap, uploads.catalog, uploads.on_change,
                                          max_bytes=ctx.settings.max_message_bytes,
                                          client_options=aiokafka_options(ctx.settings))

        async def on_start(self) -> None:
            self.add_future(self.follower.run())
            self.add_future(self._report_missing())
            self.add_future(uploads.check_isolation())  # says at start-up what the sandbox does not enforce

        async def _report_missing(self) -> None:
            """Once the store is read: say which rules name a scorer that nothing provides yet."""
            await uploads.catalog.ready.wait()
            known = ctx.scorers.reserved_names()
            for rule in ctx.ruleset.active:
                if ":" not in rule.scorer and rule.scorer not in known and rule.scorer not in uploads.catalog:
                    log.warning("rule %s: scorer %r has no uploaded version yet; its jobs are error rows until "
                                "`evalstream scorers upload` stores one", rule.name, rule.scorer)

        async def on_stop(self) -> None:
            try:  # within the stop's budget (`stop_timeout_s`): a sandbox that does not exit is killed
                await asyncio.wait_for(uploads.close(), timeout=max(1.0, ctx.settings.stop_timeout_s * 0.3))
            except Exception:
                log.exception("scorer store: stopping the sandboxes failed")

    return ScorerStoreService
