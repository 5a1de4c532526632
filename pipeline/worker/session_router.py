"""Session router agent: a Session (closed version or open snapshot) -> its decisions and one job batch."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import topics
from pipeline.contracts import DecisionBatch, Session, SessionJobBatch, decode, encode
from pipeline.routing import route_session
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for

log = logging.getLogger(__name__)


class SessionRouter:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    async def handle(self, event: Any) -> None:
        message = event.message
        session_id = None
        try:
            session = decode(message.value, Session, max_bytes=self.ctx.settings.max_message_bytes)
            session_id = session.session_id
            rules = self.ctx.rules  # one version for the whole event
            routed = route_session(session, rules.ruleset, rules_version=rules.version)
            if routed.jobs:
                await self.ctx.send(topics.SESSION_JOBS, session_id,
                                    encode(SessionJobBatch(session=session, jobs=routed.jobs)))
            if routed.decisions:
                await self.ctx.send(topics.DECISIONS, session_id, encode(DecisionBatch(sessions=routed.decisions)))
            self.ctx.counters.inc("session_jobs_queued", len(routed.jobs))
        except Exception as exc:
            log.exception("session-router: failed on session %s (%s[%d]@%d)", session_id, message.topic,
                          message.partition, message.offset)
            await self.ctx.dead_letter(dead_letter_for("session-router", message, exc))
