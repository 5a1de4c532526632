"""A row ClickHouse refuses for its value holds up nothing: the sink splits the batch, the row becomes a dead
letter naming the table, the column and the error, every other row is stored, and the offsets are committed.
A real broker and a real chDB; the bad value is one the contracts let through only because the row mapping is
patched here (a span's input_tokens becomes -1 for a UInt32 column), as a schema that drifted from them would."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline import topics
from pipeline.contracts import DeadLetter, Span, Trace, TraceBatch, encode
from pipeline.metrics import Counters
from pipeline.storage import rows
from pipeline.storage.client import embedded_dsn
from pipeline.storage.database import Database
from pipeline.storage.sink import ClickHouseSink

pytestmark = pytest.mark.integration

TRACES = 300
BAD = {"b0042-s1", "b0217-s0"}  # two spans of two traces


def trace(i: int) -> bytes:
    trace_id = f"b{i:04d}"
    spans = [Span(trace_id=trace_id, span_id=f"{trace_id}-s{k}", parent_span_id=None if k == 0 else f"{trace_id}-s0",
                  name="step", start_ns=1_700_000_000_000_000_000, end_ns=1_700_000_000_001_000_000, project="itest",
                  model="m", input_tokens=3, output_tokens=4) for k in range(3)]
    return encode(TraceBatch(traces=[Trace(trace_id=trace_id, version=1, project="itest", status="complete",
                                           close_reason="final_marker", root_span_id=spans[0].span_id, spans=spans)]))


def test_a_row_clickhouse_refuses_is_dead_lettered_and_every_other_row_is_stored(
        broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trace_rows = rows.trusted_trace_rows  # how the sink maps traces.v2 (the assembler's) to rows

    def drifted(traces: Any) -> tuple[list[list[Any]], list[list[Any]]]:
        traces_out, spans_out = trace_rows(traces)
        for row in spans_out:
            if row[rows.SPAN_COLUMNS.index("span_id")] in BAD:
                row[rows.SPAN_COLUMNS.index("input_tokens")] = -1
        return traces_out, spans_out

    monkeypatch.setattr(rows, "trusted_trace_rows", drifted)

    async def run() -> None:
        db = Database(embedded_dsn(tmp_path / "clickhouse"), "evalstream")
        await db.open(30)
        consumer = AIOKafkaConsumer(topics.TRACES, bootstrap_servers=broker, group_id="bad-rows-sink",
                                    enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=10)
        await consumer.start()
        letters: list[DeadLetter] = []

        async def dead_letter(letter: DeadLetter) -> None:
            letters.append(letter)

        counters = Counters()
        sink = ClickHouseSink(consumer, db, dead_letter, counters, batch_rows=1000, flush_interval_s=0.2,
                              max_message_bytes=8 * 1024 * 1024)
        task = asyncio.create_task(sink.run())
        producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
        await producer.start()
        try:
            for i in range(TRACES):
                await producer.send(topics.TRACES, trace(i), key=f"b{i:04d}".encode(), partition=i % 2)
            await producer.flush()

            deadline = time.monotonic() + 30
            committed: dict[int, int | None] = {}
            while committed != {0: TRACES // 2, 1: TRACES // 2}:
                assert time.monotonic() < deadline, f"the sink did not store and commit everything: {committed}"
                await asyncio.sleep(0.1)
                committed = {p: await consumer.committed(TopicPartition(topics.TRACES, p)) for p in (0, 1)}

            async def scalar(sql: str) -> Any:
                return (await db.query(sql))[2][0][0]

            assert await scalar("SELECT count() FROM evalstream.traces") == TRACES
            assert await scalar("SELECT count() FROM evalstream.spans") == 3 * TRACES - len(BAD)
            assert await scalar(f"SELECT count() FROM evalstream.spans WHERE span_id IN {tuple(BAD)}") == 0
            assert sorted((d.trace_id, d.item, d.offset) for d in letters) == [
                ("b0042", "spans[1]", 21), ("b0217", "spans[0]", 108)]
            for letter in letters:
                assert letter.stage == "sink" and letter.source_topic == topics.TRACES
                assert letter.error_type == "DataError" and "spans" in letter.reason
                assert "`input_tokens`" in letter.reason, letter.reason
                assert '"input_tokens":-1' in letter.payload_excerpt
            assert counters.snapshot().get("sink_insert_errors", 0) == 0  # no back-off: nothing was retried
        finally:
            sink.stop()
            await asyncio.wait_for(task, timeout=10)
            await producer.stop()
            await consumer.stop()
            await db.close()

    asyncio.run(run())
