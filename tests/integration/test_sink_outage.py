"""ClickHouse unavailable: the sink keeps its batch, backs off, stops consuming and commits nothing until
the store answers again; then every row lands exactly once. A real broker and a real chDB behind a stand-in
that refuses inserts for the outage (a few seconds here; a minute with `EVALSTREAM_LONG=1` or `--long`)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline import topics
from pipeline.contracts import Span, Trace, TraceBatch, encode
from pipeline.errors import StorageError
from pipeline.metrics import Counters
from pipeline.storage.client import embedded_dsn
from pipeline.storage.database import Database
from pipeline.storage.sink import ClickHouseSink

pytestmark = pytest.mark.integration

OUTAGE_S = 60.0 if os.environ.get("EVALSTREAM_LONG", "") not in ("", "0") else 4.0
TRACES = 200


class Unavailable:
    """A Database whose inserts fail, as a ClickHouse server that is down does, until `back_at`."""

    def __init__(self, db: Database, back_at: float) -> None:
        self.db, self.back_at = db, back_at
        self.refused = 0

    async def insert_many(self, batch: dict[str, list[list[Any]]], columns: dict[str, list[str]]) -> None:
        if time.monotonic() < self.back_at:
            self.refused += 1
            raise StorageError("Connection refused (ClickHouse is down)")
        await self.db.insert_many(batch, columns)


def trace(i: int) -> bytes:
    trace_id = f"o{i:04d}"
    root = Span(trace_id=trace_id, span_id=f"{trace_id}-r", name="handle", start_ns=1, end_ns=2, project="itest")
    return encode(TraceBatch(traces=[Trace(trace_id=trace_id, version=1, project="itest", status="complete",
                                           close_reason="final_marker", root_span_id=root.span_id, name="handle",
                                           start_ns=1, end_ns=2, spans=[root])]))


def test_the_sink_waits_out_a_storage_outage_without_consuming_committing_or_dropping(
        broker: str, tmp_path: Path) -> None:
    async def run() -> None:
        db = Database(embedded_dsn(tmp_path / "clickhouse"), "evalstream")
        await db.open(30)
        store = Unavailable(db, back_at=float("inf"))
        consumer = AIOKafkaConsumer(topics.TRACES, bootstrap_servers=broker, group_id="outage-sink",
                                    enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=10,
                                    session_timeout_ms=10_000, heartbeat_interval_ms=3_000)
        await consumer.start()
        counters = Counters()
        letters: list[Any] = []

        async def dead_letter(letter: Any) -> None:
            letters.append(letter)

        sink = ClickHouseSink(consumer, store, dead_letter, counters, batch_rows=50, flush_interval_s=0.2,  # type: ignore[arg-type]
                              max_message_bytes=8 * 1024 * 1024)
        task = asyncio.create_task(sink.run())
        producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
        await producer.start()
        try:
            for i in range(TRACES):
                await producer.send(topics.TRACES, trace(i), key=f"o{i:04d}".encode(), partition=0)
            await producer.flush()

            # Down: the first batch is refused again and again; nothing is stored, committed or read past it.
            store.back_at = time.monotonic() + OUTAGE_S
            deadline = time.monotonic() + 30
            while store.refused < 2:
                assert time.monotonic() < deadline, "the sink never tried to insert"
                await asyncio.sleep(0.05)
            position_while_down = await consumer.position(TopicPartition(topics.TRACES, 0))
            await asyncio.sleep(min(OUTAGE_S / 2, 10))
            assert await consumer.position(TopicPartition(topics.TRACES, 0)) == position_while_down  # paused
            assert position_while_down < TRACES
            assert await consumer.committed(TopicPartition(topics.TRACES, 0)) is None  # nothing committed
            assert (await db.query("SELECT count() FROM evalstream.traces"))[2][0][0] == 0

            # Back: every trace is stored once, and the offsets are committed past them.
            deadline = time.monotonic() + OUTAGE_S + 60
            while (await db.query("SELECT count() FROM evalstream.traces"))[2][0][0] < TRACES:
                assert time.monotonic() < deadline, "the sink did not catch up after the outage"
                await asyncio.sleep(0.2)
            while await consumer.committed(TopicPartition(topics.TRACES, 0)) != TRACES:
                assert time.monotonic() < deadline, "the sink did not commit after the outage"
                await asyncio.sleep(0.2)
            stored = (await db.query("SELECT count(), uniqExact(trace_id) FROM evalstream.traces"))[2][0]
            assert stored == (TRACES, TRACES) and letters == []
            assert counters.snapshot()["sink_insert_errors"] == store.refused >= 2
        finally:
            sink.stop()
            await asyncio.wait_for(task, timeout=60)
            await producer.stop()
            await consumer.stop()
            await db.close()

    asyncio.run(run())
