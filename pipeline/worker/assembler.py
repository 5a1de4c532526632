"""Assembler agent: SpanBatch and SpanBundle messages -> trace state (Faust table) -> TraceBatch of a tick's closes.

Closing is driven by tick messages that a timer sends to each partition this worker owns:
Faust lets a table be written only while handling an event of that partition, and ticks
keep closes ordered after every span that reached the partition before them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from pipeline import topics
from pipeline.assembly import DeadlineIndex, close_trace, due_action, merge_spans
from pipeline.assembly.enrich import Prices, enrich_trace
from pipeline.assembly.history import StoredVersions
from pipeline.assembly.remote import RemotePeers
from pipeline.assembly.state import DueAction, continue_stored, deadline, needs_history, pending_calls
from pipeline.contracts import DeadLetter, SpanBatch, encode, load_object, pack_items, validate, validate_each
from pipeline.errors import DecodeError, StorageError
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for

log = logging.getLogger(__name__)

TICK_KEY = b"__tick__"
TICK = orjson.dumps({"v": 1, "kind": "tick"})
TRACE_BATCH_OVERHEAD = len(b'{"v":1,"traces":[]}')
HISTORY_RETRY_S = 5.0  # storage could not say whether a trace was stored before: ask again this much later
HISTORY_TIMEOUT_S = 5.0  # a sink that hangs must not hold the partition's closes for its HTTP timeout
HISTORY_TRIES = 6  # then close it as it is, with a warning: a trace must not stay open for want of storage


class Assembler:
    def __init__(self, ctx: WorkerContext, table: Any, prices: Prices | None = None,
                 history: StoredVersions | None = None) -> None:
        self.ctx = ctx
        self.table = table
        self.prices = prices
        self.history = history  # None: versions are not continued from storage (tests without a store)
        self.peers = RemotePeers()
        self.index = DeadlineIndex()
        self.cfg = ctx.assembly

    def on_rebalance(self) -> None:
        self.index.clear()

    def _ensure_index(self, partition: int) -> None:
        if self.index.has_partition(partition):
            return
        self.index.init_partition(partition)
        restored = 0
        for trace_id, state in list(self.table.items()):
            if state and state.get("partition") == partition:
                self.index.set(partition, trace_id, deadline(state, self.cfg))
                restored += 1
        if restored:
            log.info("assembler: restored %d trace states for partition %d", restored, partition)

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            self._ensure_index(message.partition)
            if message.key == TICK_KEY:
                await self._close_due(message)
            else:
                await self._add(message)
        except Exception as exc:  # Faust would ack and forget: record it instead
            log.exception("assembler: failed on %s[%d]@%d", message.topic, message.partition, message.offset)
            await self.ctx.dead_letter(dead_letter_for("assembler", message, exc))

    async def _add(self, message: Any) -> None:
        """A SpanBatch, or a SpanBundle of several traces' batches, each merged (or refused) alone."""
        try:
            batches = self._decode(message.value)
        except DecodeError as exc:
            log.warning("assembler: dead-lettering %s[%d]@%d: %s", message.topic, message.partition,
                        message.offset, exc)
            await self.ctx.dead_letter(dead_letter_for("assembler", message, exc))
            return
        alone = len(batches) == 1
        for index, batch in enumerate(batches):
            try:
                if isinstance(batch, DecodeError):
                    raise batch
                stray = [s.span_id for s in batch.spans if s.trace_id != batch.trace_id]
                if stray:
                    raise DecodeError(f"spans {stray[:5]} belong to another trace than {batch.trace_id!r}")
            except DecodeError as exc:
                trace_id = None if isinstance(batch, DecodeError) else batch.trace_id
                log.warning("assembler: dead-lettering %s[%d]@%d: %s", message.topic, message.partition,
                            message.offset, exc)
                await self.ctx.dead_letter(dead_letter_for("assembler", message, exc, trace_id=trace_id,
                                                           item=None if alone else f"batches[{index}]"))
                continue
            if alone:
                await self._merge(message, batch, message.value)  # a failure is the message's (handle)
                continue
            try:
                await self._merge(message, batch, None)
            except Exception as exc:  # the bundle's other traces go on
                log.exception("assembler: failed on trace %s of %s[%d]@%d", batch.trace_id, message.topic,
                              message.partition, message.offset)
                await self.ctx.dead_letter(dead_letter_for("assembler", message, exc, trace_id=batch.trace_id,
                                                           item=f"batches[{index}]"))

    def _decode(self, raw: bytes | None) -> list[SpanBatch | DecodeError]:
        data = load_object(raw, max_bytes=self.ctx.settings.max_message_bytes)
        if data.get("kind") == "span_bundle":
            return validate_each(data, SpanBatch, "batches", raw)
        return [validate(data, SpanBatch, raw)]

    async def _merge(self, message: Any, batch: SpanBatch, raw: bytes | None) -> None:
        home = topics.partition_for(batch.trace_id, self.ctx.settings.topic_partitions)
        if home != message.partition:
            # Sent with another key: forward to the trace's partition so its state lives in one place.
            self.ctx.counters.inc("spans_forwarded", len(batch.spans))
            await self.ctx.send(topics.SPANS, batch.trace_id, raw if raw is not None else encode(batch),
                                partition=home)
            return
        spans = [s.model_dump(mode="json", exclude_none=True) for s in batch.spans]
        now = time.time()
        state, outcome = merge_spans(self.table.get(batch.trace_id), batch.trace_id, message.partition, spans,
                                     batch.final, now, self.peers.expects_answer)
        for call in outcome.answered:
            self.peers.answered(call)
        self.table[batch.trace_id] = state
        self.index.set(message.partition, batch.trace_id, deadline(state, self.cfg))
        counters = self.ctx.counters
        counters.inc("spans_in", outcome.added)
        if outcome.duplicates:
            counters.inc("spans_duplicate", outcome.duplicates)
        if outcome.reopened:
            counters.inc("traces_reopened")
            log.info("assembler: trace %s re-opened as version %d by a late span", batch.trace_id, state["version"])

    async def _close_due(self, tick: Any) -> None:
        """Close what is due and send the closed versions as TraceBatch messages on this partition. The
        closed states are saved after the sends, so a crash in between re-sends a version (same ids
        downstream) rather than marking it closed unsent."""
        partition = tick.partition
        now = time.time()
        closed: list[tuple[str, bytes, dict[str, Any], dict[str, Any]]] = []
        due = self.index.pop_due(partition, now)
        waiting = await self._continue_stored(partition, due, now)
        for trace_id in due:
            state = self.table.get(trace_id)
            if state is None or trace_id in waiting:
                continue
            action = due_action(state, now, self.cfg)
            if action is None:
                self.index.set(partition, trace_id, deadline(state, self.cfg))
            elif action == DueAction.FORGET:
                del self.table[trace_id]
            else:
                before = dict(state)
                unanswered = pending_calls(state)
                try:
                    payload = enrich_trace(close_trace(state, action, now), self.prices)
                    raw = orjson.dumps(payload)
                except Exception as exc:  # this trace cannot be closed; the others of the tick go on
                    state.clear()
                    state.update(before)
                    self.index.set(partition, trace_id, deadline(state, self.cfg))
                    log.exception("assembler: could not close trace %s", trace_id)
                    await self.ctx.dead_letter(dead_letter_for("assembler", tick, exc, trace_id=trace_id,
                                                               item=trace_id))
                    continue
                self.index.set(partition, trace_id, deadline(state, self.cfg))
                closed.append((trace_id, raw, state, before))
                for call in unanswered:
                    self.peers.unanswered(call)
                # a version after a late span counts as reopened; a first version by its status
                status = "reopened" if payload.get("version", 1) > 1 else payload["status"]
                self.ctx.counters.inc("traces_closed", status=status)
        limit = self.ctx.settings.max_message_bytes
        sendable = [c for c in closed if len(c[1]) + TRACE_BATCH_OVERHEAD <= limit]
        for trace_id, raw, state, _ in closed:
            if len(raw) + TRACE_BATCH_OVERHEAD > limit:
                await self._refuse_oversized(tick, trace_id, raw, state)
        packed = list(pack_items("traces", [raw for _, raw, _, _ in sendable], limit))
        sent = 0  # how many of `sendable` went out
        try:
            for k, (value, first) in enumerate(packed):
                await self.ctx.send(topics.TRACES, sendable[first][0], value, partition=partition)
                sent = packed[k + 1][1] if k + 1 < len(packed) else len(sendable)
        except BaseException:
            # Unsent closes go back to open and due, so the next tick sends them (the caller dead-letters
            # this tick, so the failure is seen); the message that may have gone is sent again: same ids.
            for trace_id, _, state, before in sendable[sent:]:
                state.clear()
                state.update(before)
                self.index.set(partition, trace_id, now)
            raise
        for trace_id, _, state, _ in closed:
            self.table[trace_id] = state

    async def _continue_stored(self, partition: int, due: list[str], now: float) -> set[str]:
        """The due traces that may continue a stored trace go on from its highest stored version (one query for
        all of them). When storage cannot answer, they stay open and are asked about again later: their ids
        are returned."""
        asking = {}
        for trace_id in due:
            state = self.table.get(trace_id)
            if state is not None and needs_history(state, due_action(state, now, self.cfg)):
                asking[trace_id] = state
        if not asking:
            return set()
        if self.history is None:
            for state in asking.values():
                continue_stored(state, None, now)
            return set()
        try:
            stored = await asyncio.wait_for(self.history.latest(list(asking)), HISTORY_TIMEOUT_S)
        except (StorageError, TimeoutError) as exc:
            self.ctx.counters.inc("assembly_history_errors")
            waiting = set()
            for trace_id, state in asking.items():
                tries = state["history_tries"] = state.get("history_tries", 0) + 1
                if tries < HISTORY_TRIES:
                    state["needs_history"] = True
                    self.index.set(partition, trace_id, now + HISTORY_RETRY_S)
                    waiting.add(trace_id)
                else:  # storage never answered: close it as a first version rather than hold it for ever
                    continue_stored(state, None, now)
                self.table[trace_id] = state
            log.warning("assembler: cannot ask storage for the stored versions of %d rootless trace(s) (%s); %d "
                        "asked again in %.0f s, %d closed as they are (a stored version may be rewritten)",
                        len(asking), exc or f"no answer within {HISTORY_TIMEOUT_S:g} s", len(waiting),
                        HISTORY_RETRY_S, len(asking) - len(waiting))
            return waiting
        for trace_id, state in asking.items():
            continue_stored(state, stored.get(trace_id), now)
            if trace_id in stored:
                log.info("assembler: trace %s continues from stored version %d as version %d", trace_id,
                         stored[trace_id]["version"], state["version"])
            self.table[trace_id] = state
        return set()

    async def _refuse_oversized(self, tick: Any, trace_id: str, raw: bytes, state: dict[str, Any]) -> None:
        """Every part arrived under the limit, but the assembled trace is over it: the router and the sink
        would each refuse it. One dead letter here says which trace and what to change instead."""
        limit = self.ctx.settings.max_message_bytes
        reason = (f"trace {trace_id} version {state['version']} assembled to {len(raw)} bytes "
                  f"({len(state['spans'])} spans), over the {limit}-byte message limit "
                  "(EVALSTREAM_MAX_MESSAGE_BYTES): it is not stored or scored; raise the limit to keep traces this big")
        log.error("assembler: %s", reason)
        self.ctx.counters.inc("traces_oversized")
        await self.ctx.dead_letter(DeadLetter(
            stage="assembler", source_topic=tick.topic, partition=tick.partition, offset=tick.offset, key=trace_id,
            error_type="OversizedError", reason=reason, payload_size=len(raw),
            payload_excerpt=raw[:4096].decode(errors="replace"), trace_id=trace_id, item=trace_id,
            at_ns=time.time_ns()))

    async def send_ticks(self) -> None:
        assigned = self.ctx.app.assignor.assigned_actives()
        for tp in assigned:
            if tp.topic == topics.SPANS:
                await self.ctx.send(topics.SPANS, TICK_KEY, TICK, partition=tp.partition)
