"""Session assembler agent: SessionTurns (keyed by session id) -> session state (Faust table) -> Session.

Turns come from the router, one message per closed trace version that carries a session id; rules
that reached a verdict while the session runs come back from the session scorer on the same topic.
Ticks (sent by a timer to every partition this worker owns) close idle sessions, like the trace
assembler's. After a new turn, when some rule judges each turn, an open snapshot goes out too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from pipeline import topics
from pipeline.assembly import DeadlineIndex
from pipeline.assembly.history import StoredSessionVersions
from pipeline.contracts import DeadLetter, Session, SessionTurns, decode, encode
from pipeline.errors import DecodeError, StorageError
from pipeline.sessions.state import add_turns, close_due, deadline_ns, mark_finished, new_state, snapshot
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for

log = logging.getLogger(__name__)

HISTORY_TIMEOUT_S = 5.0  # a new conversation waits at most this long to learn whether it was stored before
CLOSE_RETRY_S = 30.0  # a session whose close could not be sent stays due, and is tried again this much later
TICK_KEY = b"__tick__"
TICK = orjson.dumps({"v": 1, "kind": "session_turns", "tick": True})


class SessionAssembler:
    def __init__(self, ctx: WorkerContext, table: Any, history: StoredSessionVersions | None = None) -> None:
        self.ctx = ctx
        self.table = table
        self.history = history  # None: a conversation without state starts at version 1 (tests without a store)
        self.index = DeadlineIndex()
        self.cfg = ctx.sessions

    def on_rebalance(self) -> None:
        self.index.clear()

    def _ensure_index(self, partition: int) -> None:
        if self.index.has_partition(partition):
            return
        self.index.init_partition(partition)
        parts = self.ctx.settings.topic_partitions
        for session_id, state in list(self.table.items()):
            if state and topics.partition_for(session_id, parts) == partition:
                self._schedule(partition, session_id, state)

    def _schedule(self, partition: int, session_id: str, state: dict[str, Any] | None,
                  retry_s: float | None = None) -> None:
        due = deadline_ns(state, self.cfg) if state is not None else None
        if due is None:
            self.index.remove(partition, session_id)
        elif retry_s is not None:  # it failed to close: try again a little later
            self.index.set(partition, session_id, time.time() + retry_s)
        else:
            self.index.set(partition, session_id, due / 1e9)

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            self._ensure_index(message.partition)
            if message.key == TICK_KEY:
                await self._close_due(message.partition)
            else:
                await self._add(message)
        except Exception as exc:  # Faust would ack and forget: record it instead
            log.exception("session-assembler: failed on %s[%d]@%d", message.topic, message.partition, message.offset)
            await self.ctx.dead_letter(dead_letter_for("session-assembler", message, exc))

    async def _add(self, message: Any) -> None:
        try:
            batch = decode(message.value, SessionTurns, max_bytes=self.ctx.settings.max_message_bytes)
            if batch.tick:
                raise DecodeError("a tick must be keyed by the tick key")
        except DecodeError as exc:
            log.warning("session-assembler: dead-lettering %s[%d]@%d: %s", message.topic, message.partition,
                        message.offset, exc)
            await self.ctx.dead_letter(dead_letter_for("session-assembler", message, exc))
            return
        session_id = batch.session_id
        home = topics.partition_for(session_id, self.ctx.settings.topic_partitions)
        if home != message.partition:  # sent with another key: its state lives on its own partition
            await self.ctx.send(topics.SESSION_TURNS, session_id, message.value, partition=home)
            return
        now = time.time_ns()
        state = self.table.get(session_id)
        if state is None and batch.turns:
            state = await self._continued(session_id, now)
        last_turn_at = state["last_turn_at_ns"] if state else None
        state, closed = add_turns(state, batch.turns, now, self.cfg) if batch.turns else (state, [])
        finished = mark_finished(state, batch.finished)
        for session in closed:  # sent before the state is saved: if a send fails, nothing was recorded closed
            await self._emit(session)
        if state is None:
            if session_id in self.table:
                del self.table[session_id]
        elif batch.turns or finished or closed:
            self.table[session_id] = state
        self._schedule(message.partition, session_id, state)
        took_turns = state is not None and state["last_turn_at_ns"] != last_turn_at
        if took_turns and state is not None and state["open"] and self.ctx.ruleset.judges_each_turn:
            await self._emit(snapshot(state, now))
        if took_turns:
            self.ctx.counters.inc("session_turns", len(batch.turns))

    async def _continued(self, session_id: str, now_ns: int) -> dict[str, Any] | None:
        """A conversation with no state: a new one, or one whose state is gone. The latter goes on from its
        highest stored version + 1, so a stored version is never rewritten."""
        if self.history is None:
            return None
        try:
            stored = await asyncio.wait_for(self.history.highest(session_id), HISTORY_TIMEOUT_S)
        except (StorageError, TimeoutError) as exc:
            self.ctx.counters.inc("assembly_history_errors")
            log.warning("session-assembler: cannot ask storage whether session %s was stored before (%s); it starts "
                        "at version 1", session_id, exc or f"no answer within {HISTORY_TIMEOUT_S:g} s")
            return None
        if stored is None:
            return None
        log.info("session-assembler: session %s continues from stored version %d", session_id, stored)
        return new_state(session_id, now_ns, version=stored + 1)

    async def _close_due(self, partition: int) -> None:
        now = time.time_ns()
        for session_id in self.index.pop_due(partition, now / 1e9):
            state = self.table.get(session_id)
            if state is None:
                continue
            before = orjson.dumps(state)
            try:
                state, closed = close_due(state, now, self.cfg)
                for session in closed:  # sent before the state says closed: a failed send closes again
                    await self._emit(session)
            except Exception as exc:
                log.exception("session-assembler: closing session %s failed; trying again in %g s", session_id,
                              CLOSE_RETRY_S)
                self.table[session_id] = orjson.loads(before)  # close_due changed it in place: undo that
                self._schedule(partition, session_id, self.table[session_id], retry_s=CLOSE_RETRY_S)
                await self.ctx.dead_letter(_close_failure(session_id, exc))
                continue
            if state is None:
                del self.table[session_id]
            else:
                self.table[session_id] = state
            self._schedule(partition, session_id, state)

    async def _emit(self, session: Session) -> None:
        await self.ctx.send(topics.SESSIONS, session.session_id, encode(session))
        if not session.is_open:
            self.ctx.counters.inc("sessions_closed", status=session.status.value)
            log.info("session %s v%d closed (%s) after %d turn(s)", session.session_id, session.version,
                     session.close_reason, len(session.turns))

    async def send_ticks(self) -> None:
        """A tick to each owned partition with a session due before the next tick (ticks are records the
        broker keeps: an idle partition gets none)."""
        horizon = time.time() + self.ctx.settings.tick_interval_s
        for tp in self.ctx.app.assignor.assigned_actives():
            if tp.topic == topics.SESSION_TURNS and self.index.due_within(tp.partition, horizon):
                await self.ctx.send(topics.SESSION_TURNS, TICK_KEY, TICK, partition=tp.partition)


def _close_failure(session_id: str, exc: Exception) -> DeadLetter:
    return DeadLetter(stage="session-assembler", source_topic=topics.SESSION_TURNS, partition=-1, offset=-1,
                      key=session_id, job_id=session_id, error_type=type(exc).__name__,
                      reason=f"closing failed: {exc}"[:2000], at_ns=time.time_ns())
