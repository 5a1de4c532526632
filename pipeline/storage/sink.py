"""ClickHouseSink: topics -> batched inserts; offsets committed only after the insert succeeded.

A plain aiokafka consumer rather than a Faust agent: Faust acks an event when the agent moves
on, which cannot express "commit after the batch is in ClickHouse". Redelivery after a crash
is harmless because every table replaces rows with the same ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

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
)
from pipeline.contracts.uploads import UploadedScorer
from pipeline.errors import DecodeError
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
    if topic == topics.TRACES:
        traces = decode(raw, TraceBatch, max_bytes=max_bytes).traces
        return {"traces": [rows.trace_row(t) for t in traces],
                "spans": [rows.span_row(s, t.version) for t in traces for s in t.spans]}
    if topic == topics.SESSIONS:  # closed versions and open snapshots alike; the tables keep the latest
        session = decode(raw, Session, max_bytes=max_bytes)
        return {"sessions": [rows.session_row(session)], "session_turns": rows.session_turn_rows(session)}
    if topic == topics.DECISIONS:
        decisions = decode(raw, DecisionBatch, max_bytes=max_bytes)
        return {"decisions": [rows.decision_row(d) for d in decisions.decisions],
                "session_decisions": [rows.session_decision_row(d) for d in decisions.sessions]}
    if topic == topics.SCORES:  # a session rule's results go to session_scores, the rest to scores
        results = decode(raw, ScoreResultBatch, max_bytes=max_bytes).results
        return {"scores": [rows.score_row(r) for r in results if not r.is_session],
                "session_scores": [rows.session_score_row(r) for r in results if r.is_session]}
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
        self._pending_rows = 0
        self._uncommitted = False
        self._stopping = asyncio.Event()
        self._lag = lag  # told what was fetched, and what is stored once committed (consumer lag)
        self._lag_group = lag_group
        self._newest: dict[tuple[str, int], tuple[int, float | None]] = {}

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        first_pending_at: float | None = None
        while not self._stopping.is_set():
            wait_s = self._flush_interval_s
            if first_pending_at is not None:
                wait_s = max(0.0, first_pending_at + self._flush_interval_s - time.monotonic())
            batches = await self._consumer.getmany(timeout_ms=int(wait_s * 1000), max_records=self._batch_rows)
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
        await self.flush()

    async def _add(self, topic: str, partition: int, message: Any) -> None:
        try:
            table_rows = rows_for(topic, message.value, self._max_bytes)
        except DecodeError as exc:
            await self._reject(topic, partition, message, exc)
            return
        for table, new in table_rows.items():
            self._pending[table].extend(new)
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

    async def flush(self) -> None:
        """Insert everything pending, retrying until it lands, then commit. Never drops a row."""
        if self._pending_rows:
            batch = {t: r for t, r in self._pending.items() if r}
            delay = 0.5
            while True:
                started = time.perf_counter()
                try:
                    await self._db.insert_many(batch, _TABLES)
                    break
                except Exception as exc:  # noqa: BLE001 - ClickHouse down: keep the batch, stop consuming, retry
                    self._counters.inc("sink_insert_errors")
                    log.error("sink: insert of %d rows failed (%s: %s); retrying in %.1fs",
                              self._pending_rows, type(exc).__name__, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
            self._counters.inc("sink_rows", self._pending_rows)
            self._counters.observe("sink_batch_rows", self._pending_rows)
            self._counters.observe("sink_insert_seconds", time.perf_counter() - started)
            self._pending.clear()
            self._pending_rows = 0
        if self._uncommitted:
            await self._consumer.commit()
            self._uncommitted = False
            if self._lag is not None:
                for (topic, partition), (offset, ts) in self._newest.items():
                    self._lag.processed(self._lag_group, topic, partition, offset, ts)
                self._newest.clear()
