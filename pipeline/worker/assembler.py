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
from pipeline.assembly.open_view import open_view
from pipeline.assembly.remote import RemotePeers
from pipeline.assembly.state import (
    DueAction,
    State,
    compact,
    continue_stored,
    deadline,
    needs_history,
    pending_calls,
    stored_in_time,
)
from pipeline.contracts import DeadLetter, Span, SpanBatch, encode, load_object, validate, validate_each
from pipeline.errors import DecodeError, StorageError
from pipeline.worker.close_router import Closed, CloseRouter, Progress
from pipeline.worker.context import WorkerContext
from pipeline.worker.deadletter import dead_letter_for

log = logging.getLogger(__name__)

TICK_KEY = b"__tick__"
TICK = orjson.dumps({"v": 1, "kind": "tick"})
TRACE_BATCH_OVERHEAD = len(b'{"v":1,"traces":[],"decisions":[]}')
HISTORY_RETRY_S = 5.0  # storage could not say whether a trace was stored before: ask again this much later
HISTORY_TIMEOUT_S = 5.0  # a sink that hangs must not hold the partition's closes for its HTTP timeout
HISTORY_TRIES = 6  # then close it as it is, with a warning: a trace must not stay open for want of storage
# A late span re-opened a compact closed state before the sink stored the version it closed as: ask again.
STORED_SPANS_RETRY_S = 1.0
STORED_SPANS_TRIES = 30


class Assembler:
    def __init__(self, ctx: WorkerContext, table: Any, prices: Prices | None = None,
                 history: StoredVersions | None = None) -> None:
        self.ctx = ctx
        self.table = table
        self.prices = prices
        self.history = history  # None: versions are not continued from storage (tests without a store)
        # Closed states are kept compact (span ids only) while storage answers reads: a late span's version then
        # reads the earlier spans back. Until a read succeeds, and after one fails, they are kept whole.
        self.storage_readable = False
        self.peers = RemotePeers()
        self.index = DeadlineIndex()
        self.cfg = ctx.assembly
        self.routing = CloseRouter(ctx)
        # While a spans message is handled: each span dict merged from it (by id) with the Span object it is the
        # dump of, so a trace closed in that event is routed with those objects rather than validated again.
        # The dict is held beside its object, so its id cannot be reused by another dict meanwhile.
        self._validated: dict[int, tuple[dict[str, Any], Span]] = {}

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
        try:
            await self._add_spans(message)
        finally:
            self._validated.clear()

    async def _add_spans(self, message: Any) -> None:
        """A SpanBatch, or a SpanBundle of several traces' batches, each merged (or refused) alone. Traces
        that arrived whole (root ended, the root's process said `final`, no remote call waiting) close in
        this event, so their open state is never written; the others wait for a tick."""
        try:
            batches = self._decode(message.value)
        except DecodeError as exc:
            log.warning("assembler: dead-lettering %s[%d]@%d: %s", message.topic, message.partition,
                        message.offset, exc)
            await self.ctx.dead_letter(dead_letter_for("assembler", message, exc))
            return
        alone = len(batches) == 1
        merged: dict[str, State] = {}  # this event's traces, written (or closed) after every batch is merged
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
                await self._merge(message, batch, message.value, merged)  # a failure is the message's (handle)
                continue
            try:
                await self._merge(message, batch, None, merged)
            except Exception as exc:  # the bundle's other traces go on
                log.exception("assembler: failed on trace %s of %s[%d]@%d", batch.trace_id, message.topic,
                              message.partition, message.offset)
                await self.ctx.dead_letter(dead_letter_for("assembler", message, exc, trace_id=batch.trace_id,
                                                           item=f"batches[{index}]"))
        now = time.time()
        closing = []
        for trace_id, state in merged.items():
            action = due_action(state, now, self.cfg)
            if action == DueAction.CLOSE_FINAL and not needs_history(state, action):
                closing.append((trace_id, state, action))
            else:
                self.table[trace_id] = state
                self.index.set(message.partition, trace_id, deadline(state, self.cfg))
        if closing:
            await self._close(message, message.partition, closing, now)

    def _decode(self, raw: bytes | None) -> list[SpanBatch | DecodeError]:
        data = load_object(raw, max_bytes=self.ctx.settings.max_message_bytes)
        if data.get("kind") == "span_bundle":
            return validate_each(data, SpanBatch, "batches", raw)
        return [validate(data, SpanBatch, raw)]

    async def _merge(self, message: Any, batch: SpanBatch, raw: bytes | None, merged: dict[str, State]) -> None:
        home = topics.partition_for(batch.trace_id, self.ctx.settings.topic_partitions)
        if home != message.partition:
            # Sent with another key: forward to the trace's partition so its state lives in one place.
            self.ctx.counters.inc("spans_forwarded", len(batch.spans))
            await self.ctx.send(topics.SPANS, batch.trace_id, raw if raw is not None else encode(batch),
                                partition=home)
            return
        spans = [s.model_dump(mode="json", exclude_none=True) for s in batch.spans]
        validated = self._validated
        for d, obj in zip(spans, batch.spans, strict=True):
            validated[id(d)] = (d, obj)
        now = time.time()
        current = merged.get(batch.trace_id)
        state, outcome = merge_spans(current if current is not None else self.table.get(batch.trace_id),
                                     batch.trace_id, message.partition, spans, batch.final, now,
                                     self.peers.expects_answer)
        for call in outcome.answered:
            self.peers.answered(call)
        merged[batch.trace_id] = state
        counters = self.ctx.counters
        counters.inc("spans_in", outcome.added)
        if outcome.duplicates:
            counters.inc("spans_duplicate", outcome.duplicates)
        if outcome.reopened:
            counters.inc("traces_reopened")
            log.info("assembler: trace %s re-opened as version %d by a late span", batch.trace_id, state["version"])

    async def _close_due(self, tick: Any) -> None:
        """Close what is due on this tick's partition."""
        partition = tick.partition
        now = time.time()
        due = self.index.pop_due(partition, now)
        waiting = await self._continue_stored(partition, due, now)
        closing = []
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
                closing.append((trace_id, state, action))
        if closing:
            await self._close(tick, partition, closing, now)

    async def _close(self, source: Any, partition: int, closing: list[tuple[str, State, DueAction]],
                     now: float) -> None:
        """Close these traces, route them and send what follows (`CloseRouter`). The closed states are saved
        after the sends, so a crash in between re-sends a version (same ids downstream) rather than marking it
        closed unsent."""
        closed: list[tuple[Closed, State, State]] = []
        limit = self.ctx.settings.max_message_bytes
        for trace_id, state, action in closing:
            before = _before_close(state)
            unanswered = pending_calls(state)
            try:
                payload = enrich_trace(close_trace(state, action, now), self.prices)
                raw = orjson.dumps(payload)
            except Exception as exc:  # this trace cannot be closed; the others go on
                self._reopen(partition, trace_id, state, before, deadline(before, self.cfg))
                log.exception("assembler: could not close trace %s", trace_id)
                await self.ctx.dead_letter(dead_letter_for("assembler", source, exc, trace_id=trace_id,
                                                           item=trace_id))
                continue
            self.index.set(partition, trace_id, deadline(state, self.cfg))
            for call in unanswered:
                self.peers.unanswered(call)
            # a version after a late span counts as reopened; a first version by its status
            status = "reopened" if payload.get("version", 1) > 1 else payload["status"]
            self.ctx.counters.inc("traces_closed", status=status)
            if len(raw) + TRACE_BATCH_OVERHEAD > limit:
                await self._refuse_oversized(source, trace_id, raw, state)
                self._save_closed(trace_id, state)
                continue
            closed.append((Closed(trace_id, raw, payload, self._span_objects(payload["spans"])), state, before))
        progress = Progress()
        try:
            await self.routing.publish(source, [c for c, _, _ in closed], partition, progress)
        except BaseException:
            # Unsent closes go back to open and due, so the next tick sends them (the caller dead-letters
            # this event, so the failure is seen); a message that may have gone is sent again: same ids.
            for c, state, before in closed[progress.sent:]:
                self._reopen(partition, c.trace_id, state, before, now)
            for c, state, _ in closed[:progress.sent]:
                self._save_closed(c.trace_id, state)
            raise
        for c, state, _ in closed:
            self._save_closed(c.trace_id, state)

    def _span_objects(self, spans: list[dict[str, Any]]) -> list[Span] | None:
        """The Span objects these span dicts are the dumps of, if every one was validated in this event and left
        as it was dumped (enrichment replaces a dict it changes); else None, and routing validates them."""
        validated = self._validated
        if not validated:
            return None
        out = []
        for d in spans:
            hit = validated.get(id(d))
            if hit is None or hit[0] is not d:
                return None
            out.append(hit[1])
        return out

    def _save_closed(self, trace_id: str, state: State) -> None:
        """With storage to read spans back from, a closed state is kept compact (span ids only)."""
        if self.storage_readable:
            compact(state)
        self.table[trace_id] = state

    async def probe_storage(self) -> None:
        """Whether closed states may be kept compact: storage must answer reads (a worker of the embedded stack
        without the sink's query endpoint cannot read it back, say)."""
        if self.history is None:
            return
        try:
            readable = await asyncio.wait_for(self.history.readable(), HISTORY_TIMEOUT_S)
        except (StorageError, TimeoutError) as exc:
            if self.storage_readable:
                log.warning("assembler: storage does not answer reads (%s): closed traces are kept whole until it "
                            "does", exc or "timed out")
            readable = False
        if readable and not self.storage_readable:
            log.info("assembler: storage answers reads: closed traces keep only their span ids")
        self.storage_readable = readable
        self.ctx.counters.set("assembly_storage_readable", int(readable))

    def _reopen(self, partition: int, trace_id: str, state: State, before: State, due_at: float) -> None:
        state.clear()
        state.update(before)
        self.table[trace_id] = state
        self.index.set(partition, trace_id, due_at)

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
            self.storage_readable = False
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
            log.warning("assembler: cannot ask storage for the stored versions of %d trace(s) (%s); %d "
                        "asked again in %.0f s, %d closed as they are (a stored version may be rewritten)",
                        len(asking), exc or f"no answer within {HISTORY_TIMEOUT_S:g} s", len(waiting),
                        HISTORY_RETRY_S, len(asking) - len(waiting))
            return waiting
        waiting = set()
        for trace_id, state in asking.items():
            found = stored.get(trace_id)
            if not stored_in_time(state, found):  # re-opened before the sink stored the version it closed as
                tries = state["stored_tries"] = state.get("stored_tries", 0) + 1
                if tries < STORED_SPANS_TRIES:
                    self.index.set(partition, trace_id, now + STORED_SPANS_RETRY_S)
                    self.table[trace_id] = state
                    waiting.add(trace_id)
                    continue
                self.ctx.counters.inc("assembly_stored_spans_missing")
                log.warning("assembler: trace %s re-opened as version %d, but storage still lacks version %d after "
                            "%.0f s: it closes with its new spans only", trace_id, state["version"],
                            state["stored_spans_of"], STORED_SPANS_TRIES * STORED_SPANS_RETRY_S)
                found = None
            continue_stored(state, found, now)
            if found is not None:
                log.info("assembler: trace %s continues from stored version %d as version %d", trace_id,
                         found["version"], state["version"])
            self.table[trace_id] = state
        return waiting

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

    def open_trace(self, trace_id: str) -> dict[str, Any] | None:
        """What this worker holds of a trace, for `why` (`assembly/open_view.py`), or None. Only for a partition
        this worker owns: a standby copy of another worker's partition may be behind."""
        state = self.table.get(trace_id)
        if not state:
            return None
        owned = {tp.partition for tp in self.ctx.app.assignor.assigned_actives() if tp.topic == topics.SPANS}
        if state.get("partition") not in owned:
            return None
        return open_view(state, time.time(), self.cfg)

    def report_held(self) -> None:
        """Gauges of what this worker holds on its own partitions: open traces (the assembler's memory, and what
        `idle_timeout_s` keeps when roots never end), closed ones kept for late spans, and the oldest open one's
        age. One pass over the table, run by a timer rather than per event."""
        owned = {tp.partition for tp in self.ctx.app.assignor.assigned_actives() if tp.topic == topics.SPANS}
        open_count = kept = 0
        oldest: float | None = None
        for state in list(self.table.values()):
            if not state or state.get("partition") not in owned:
                continue
            if state["open"]:
                open_count += 1
                first = state.get("first_seen_s")
                if first is not None and (oldest is None or first < oldest):
                    oldest = first
            else:
                kept += 1
        counters = self.ctx.counters
        counters.set("assembly_open_traces", open_count)
        counters.set("assembly_closed_kept", kept)
        counters.set("assembly_oldest_open_s", 0.0 if oldest is None else max(0.0, time.time() - oldest))

    async def send_ticks(self) -> None:
        """A tick to each owned partition that has something due before the next tick. A tick is a record the
        broker keeps (Tansu keeps every one), so an idle partition gets none."""
        horizon = time.time() + self.ctx.settings.tick_interval_s
        assigned = self.ctx.app.assignor.assigned_actives()
        for tp in assigned:
            if tp.topic == topics.SPANS and self.index.due_within(tp.partition, horizon):
                await self.ctx.send(topics.SPANS, TICK_KEY, TICK, partition=tp.partition)


def _before_close(state: State) -> State:
    """What to restore if a close is not sent: `close_trace` replaces the top-level fields and the call list,
    and appends to the `waited` list; it does not touch the spans."""
    return {**state, "calls": dict(state.get("calls", {})), "waited": list(state.get("waited", []))}
