"""ClickHouseSink: topics -> batched inserts; offsets committed only after every row is stored or dead-lettered.

A plain aiokafka consumer rather than a Faust agent: Faust acks an event when the agent moves
on, which cannot express "commit after the batch is in ClickHouse". Redelivery after a crash
is harmless because every table replaces rows with the same ids.

Two ways an insert fails. ClickHouse refused the rows' values (StorageDataError): the same rows would fail
forever, so the table's batch is split in halves until the rows at fault are found; each becomes a dead
letter (stage `sink`, naming the table, the column and the message it came from) and the rest is stored.
Anything else is the store's (down, overloaded): the batch is kept and retried with back-off, nothing more
is consumed or committed meanwhile, and `stop()` ends the wait at once, leaving the batch uncommitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import orjson

from pipeline import topics
from pipeline.contracts import (
    Alert,
    DeadLetter,
    DecisionBatch,
    ScoreResultBatch,
    Session,
    TraceBatch,
    WorkerMetrics,
    decode,
    load_object,
    validate,
)
from pipeline.contracts.uploads import UploadedScorer
from pipeline.errors import DecodeError, StorageDataError
from pipeline.lag import LagTracker
from pipeline.metrics import Counters
from pipeline.storage import rows
from pipeline.storage.database import Database

log = logging.getLogger(__name__)

_TABLES = {
    "traces": rows.TRACE_COLUMNS,
    "spans": rows.SPAN_COLUMNS,
    "decisions": rows.DECISION_COLUMNS,
    "scores": rows.SCORE_COLUMNS,
    "alerts": rows.ALERT_COLUMNS,
    "alert_deliveries": rows.ALERT_DELIVERY_COLUMNS,
    "dead_letters": rows.DEAD_LETTER_COLUMNS,
    "scorer_versions": rows.SCORER_VERSION_COLUMNS,
    "consumer_lag": rows.CONSUMER_LAG_COLUMNS,
    "sessions": rows.SESSION_COLUMNS,
    "session_turns": rows.SESSION_TURN_COLUMNS,
    "session_scores": rows.SESSION_SCORE_COLUMNS,
    "session_decisions": rows.SESSION_DECISION_COLUMNS,
}


def rows_for(topic: str, raw: bytes | None, max_bytes: int) -> dict[str, list[list[Any]]]:
    """Decode one message into rows per table; raises DecodeError for bad input."""
    if topic == topics.TRACES:  # the closed versions and the decisions routing them made
        # Only the assembler writes this topic, from spans it validated: the traces are mapped to rows as
        # written, with a structural check (`rows.trusted_trace_rows` says why that is safe); the envelope and
        # the decisions are validated as before.
        data = load_object(raw, max_bytes=max_bytes)
        batch = validate({**data, "traces": []}, TraceBatch)
        trace_rows, span_rows = rows.trusted_trace_rows(data.get("traces"))
        return {"traces": trace_rows, "spans": span_rows,
                "decisions": [rows.decision_row(d) for d in batch.decisions]}
    if topic == topics.SESSIONS:  # closed versions and open snapshots alike; the tables keep the latest
        session = decode(raw, Session, max_bytes=max_bytes)
        return {"sessions": [rows.session_row(session)], "session_turns": rows.session_turn_rows(session)}
    if topic == topics.DECISIONS:  # backfill, session routing, budget; live routing's and results' come above/below
        decisions = decode(raw, DecisionBatch, max_bytes=max_bytes)
        return {"decisions": [rows.decision_row(d) for d in decisions.decisions],
                "session_decisions": [rows.session_decision_row(d) for d in decisions.sessions]}
    if topic == topics.SCORES:  # scores (a session rule's in session_scores) and the scored/failed decisions
        return rows.result_rows(decode(raw, ScoreResultBatch, max_bytes=max_bytes).results)
    if topic == topics.ALERTS:
        alert = decode(raw, Alert, max_bytes=max_bytes)
        return {"alerts": [rows.alert_row(alert)], "alert_deliveries": rows.alert_delivery_rows(alert)}
    if topic == topics.DEAD_LETTERS:
        return {"dead_letters": [rows.dead_letter_row(decode(raw, DeadLetter, max_bytes=max_bytes))]}
    if topic == topics.SCORERS:  # a tombstone (no value) removes a name from the store: no row
        return {"scorer_versions": [] if raw is None else [
            rows.scorer_version_row(decode(raw, UploadedScorer, max_bytes=max_bytes))]}
    if topic == topics.METRICS:
        return {"consumer_lag": rows.consumer_lag_rows(decode(raw, WorkerMetrics, max_bytes=max_bytes))}
    raise DecodeError(f"the sink does not read topic {topic}")


class Origin(NamedTuple):
    """Where a pending row came from: its message, and its place among that message's rows for the table."""

    topic: str
    partition: int
    offset: int
    key: str | None
    index: int


class ClickHouseSink:
    def __init__(
        self,
        consumer: Any,
        database: Database,
        dead_letter: Callable[[DeadLetter], Awaitable[None]],
        counters: Counters,
        *,
        batch_rows: int,
        flush_interval_s: float,
        max_message_bytes: int,
        lag: LagTracker | None = None,
        lag_group: str = "",
    ) -> None:
        self._consumer = consumer
        self._db = database
        self._dead_letter = dead_letter
        self._counters = counters
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._max_bytes = max_message_bytes
        self._pending: dict[str, list[list[Any]]] = defaultdict(list)
        self._origins: dict[str, list[Origin]] = defaultdict(list)  # beside each pending row
        self._pending_rows = 0
        self._uncommitted = False
        self._refused = False  # the last insert failed for the store, not the data: no final flush on stop
        self._stopping = asyncio.Event()
        self._lag = lag  # told what was fetched, and what is stored once committed (consumer lag)
        self._lag_group = lag_group
        self._newest: dict[tuple[str, int], tuple[int, float | None]] = {}

    def stop(self) -> None:
        """End the loop: a fetch or a back-off in progress ends at once. What was stored is committed; a batch
        that ClickHouse was refusing stays uncommitted, read again on restart."""
        self._stopping.set()

    async def run(self) -> None:
        first_pending_at: float | None = None
        while not self._stopping.is_set():
            wait_s = self._flush_interval_s
            if first_pending_at is not None:
                wait_s = max(0.0, first_pending_at + self._flush_interval_s - time.monotonic())
            batches = await self._fetch(wait_s)
            for tp, messages in batches.items():
                for message in messages:
                    await self._add(tp.topic, tp.partition, message)
                    self._uncommitted = True
                if messages and self._lag is not None:
                    newest = messages[-1]
                    self._lag.fetched(self._lag_group, tp.topic, tp.partition, newest.offset)
                    ts = newest.timestamp / 1000 if newest.timestamp is not None else None
                    self._newest[(tp.topic, tp.partition)] = (newest.offset, ts)
            if self._pending_rows and first_pending_at is None:
                first_pending_at = time.monotonic()
            due = first_pending_at is not None and time.monotonic() - first_pending_at >= self._flush_interval_s
            if self._pending_rows >= self._batch_rows or due or (self._uncommitted and not self._pending_rows):
                await self.flush()
                first_pending_at = None
        if not self._refused:
            await self.flush()

    async def _fetch(self, wait_s: float) -> dict[Any, list[Any]]:
        """The next records, waiting up to `wait_s` for them; nothing if stop() comes first (a fetch cut short
        returns no records, so none is skipped)."""
        fetch = asyncio.ensure_future(
            self._consumer.getmany(timeout_ms=int(wait_s * 1000), max_records=self._batch_rows))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not fetch.done():
                fetch.cancel()
                await asyncio.wait({fetch})
        return fetch.result() if not fetch.cancelled() else {}

    async def _add(self, topic: str, partition: int, message: Any) -> None:
        try:
            table_rows = rows_for(topic, message.value, self._max_bytes)
        except Exception as exc:  # noqa: BLE001 - a DecodeError, or a value the row mapping cannot take
            await self._reject(topic, partition, message, exc)
            return
        key = message.key.decode(errors="replace") if isinstance(message.key, bytes | bytearray) else None
        for table, new in table_rows.items():
            self._pending[table].extend(new)
            self._origins[table].extend(Origin(topic, partition, message.offset, key, i) for i in range(len(new)))
            self._pending_rows += len(new)

    async def _reject(self, topic: str, partition: int, message: Any, exc: Exception) -> None:
        self._counters.inc("dead_letters", stage="sink")
        log.error("sink: bad message %s[%d]@%d: %s", topic, partition, message.offset, exc)
        if topic == topics.DEAD_LETTERS:
            return  # a bad dead letter cannot be dead-lettered again; the log line is its record
        raw = message.value or b""
        await self._dead_letter(DeadLetter(
            stage="sink", source_topic=topic, partition=partition, offset=message.offset,
            key=(message.key or b"").decode(errors="replace"), error_type=type(exc).__name__,
            reason=str(exc)[:2000], payload_size=len(raw),
            payload_excerpt=raw[:4096].decode(errors="replace"), at_ns=time.time_ns(),
        ))

    async def flush(self) -> bool:
        """Store or dead-letter every pending row, then commit; never drops a row. While the store refuses
        inserts, retry with back-off until it answers, or until stop(): then return False, committing nothing."""
        delay = 0.5
        while self._pending_rows:
            try:
                await self._store_pending()
            except Exception as exc:  # noqa: BLE001 - ClickHouse down: keep the batch, stop consuming, retry
                self._refused = True
                self._counters.inc("sink_insert_errors")
                log.error("sink: insert of %d rows failed (%s: %s); retrying in %.1fs",
                          self._pending_rows, type(exc).__name__, exc, delay)
                if await self._stopped_within(delay):
                    log.warning("sink: stopped while ClickHouse refused inserts; %d rows not stored and their "
                                "offsets not committed: they are read again on restart", self._pending_rows)
                    return False
                delay = min(delay * 2, 30.0)
        self._refused = False
        if self._uncommitted:
            await self._consumer.commit()
            self._uncommitted = False
            if self._lag is not None:
                for (topic, partition), (offset, ts) in self._newest.items():
                    self._lag.processed(self._lag_group, topic, partition, offset, ts)
                self._newest.clear()
        return True

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def _store_pending(self) -> None:
        """Every pending table in one insert call, as a query sees a flush: all of it or none. If a table's rows
        are refused for their data, the tables before it are stored; that table is split alone, then the rest go
        on together. Raises what an outage raised, the pending rows kept (a table stored twice replaces rows)."""
        while self._pending:
            batch = {table: table_rows for table, table_rows in self._pending.items() if table_rows}
            started = time.perf_counter()
            try:
                await self._db.insert_many(batch, _TABLES)
            except StorageDataError as exc:
                for table, table_rows in batch.items():
                    if table == exc.table:
                        break
                    self._stored(table, len(table_rows), started)
                    self._drop(table)
                await self._split(exc.table, exc)
                self._drop(exc.table)
                continue
            for table, table_rows in batch.items():
                self._stored(table, len(table_rows), started)
            self._pending.clear()
            self._origins.clear()
            self._pending_rows = 0

    def _drop(self, table: str) -> None:
        self._pending_rows -= len(self._pending.pop(table, []))
        self._origins.pop(table, None)

    def _stored(self, table: str, count: int, started: float) -> None:
        self._counters.inc("sink_rows", count)
        self._counters.observe("sink_batch_rows", count)
        self._counters.observe("sink_insert_seconds", time.perf_counter() - started)

    async def _split(self, table: str, refused: StorageDataError) -> None:
        """The table's rows, which failed together for their data, in halves tried in turn until the bad rows
        stand alone: k bad rows among n cost about 2 k log2(n) inserts. Each part is removed as it lands or is
        dead-lettered, so a retry after an outage in between resumes where this stopped."""
        pending, origins = self._pending[table], self._origins[table]
        parts = [len(pending)]  # sizes of the next consecutive parts, the first last
        failed: StorageDataError | None = refused  # the first part, all of them, was just refused
        while parts:
            part = parts.pop()
            if failed is None:
                failed = await self._insert_part(table, part)
            if failed is not None and part > 1:  # the bad rows are in one half, or in both
                half = (part + 1) // 2
                parts += [part - half, half]
                failed = None
                continue
            if failed is not None:  # a bad row, alone
                await self._reject_row(table, pending[0], origins[0], failed)
                failed = None
            del pending[:part], origins[:part]
            self._pending_rows -= part

    async def _insert_part(self, table: str, part: int) -> StorageDataError | None:
        """The first `part` pending rows of the table inserted (None), or the data error that refused them."""
        started = time.perf_counter()
        try:
            await self._db.insert_many({table: self._pending[table][:part]}, _TABLES)
        except StorageDataError as exc:
            return exc
        self._stored(table, part, started)
        return None

    async def _reject_row(self, table: str, row: list[Any], origin: Origin, exc: StorageDataError) -> None:
        """A row ClickHouse cannot store: a dead letter naming the table, the error and the row itself."""
        cause = exc.cause
        detail = f"{cause} ({cause.__cause__})" if cause.__cause__ is not None else str(cause)
        reason = f"cannot store row {origin.index} of the message in {table}: {type(cause).__name__}: {detail}"
        record = dict(zip(_TABLES[table], row, strict=False))
        excerpt = _excerpt(record)
        self._counters.inc("sink_rows_rejected", table=table)
        log.error("sink: dead-lettering a row of %s[%d]@%d: %s", origin.topic, origin.partition, origin.offset,
                  reason)
        if origin.topic == topics.DEAD_LETTERS:
            return  # a dead letter that cannot be stored cannot be dead-lettered again; the log line is its record
        trace_id, job_id = record.get("trace_id"), record.get("job_id")
        await self._dead_letter(DeadLetter(
            stage="sink", source_topic=origin.topic, partition=origin.partition, offset=origin.offset,
            key=origin.key, trace_id=trace_id if isinstance(trace_id, str) and trace_id else None,
            job_id=job_id if isinstance(job_id, str) and job_id else None, item=f"{table}[{origin.index}]",
            error_type=type(cause).__name__, reason=reason[:2000], payload_size=len(excerpt),
            payload_excerpt=excerpt[:4096].decode(errors="ignore"), at_ns=time.time_ns(),
        ))


def _excerpt(record: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(record, default=str)
    except (TypeError, orjson.JSONEncodeError):  # an integer past 64 bits, a string that is not UTF-8
        return repr(record).encode(errors="replace")
