"""pipeline/storage/sink.py without a broker or a store: a fake consumer and a fake database. A batch with rows
ClickHouse refuses for their values is split until they stand alone, they become dead letters and the rest is
stored; an outage keeps the batch and backs off, and stop() ends that back-off at once, committing nothing.
(With a real chDB and broker: tests/integration/test_storable_contracts.py, test_sink_outage.py,
test_ledger_faults.py.)"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError, ProgrammingError

from pipeline import topics
from pipeline.contracts import DeadLetter, Span, Trace, TraceBatch, encode
from pipeline.errors import StorageDataError, StorageError
from pipeline.metrics import Counters
from pipeline.storage import rows
from pipeline.storage.database import is_data_error
from pipeline.storage.sink import ClickHouseSink

SPAN_ID = rows.SPAN_COLUMNS.index("span_id")


class TP(NamedTuple):
    topic: str
    partition: int


class FakeConsumer:
    """Hands out the queued messages once, then waits like an idle consumer; records commits."""

    def __init__(self, messages: list[tuple[str, int, Any]]) -> None:
        self.queue = list(messages)
        self.commits = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        if not self.queue:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        out: dict[Any, list[Any]] = {}
        for topic, partition, message in self.queue[:max_records]:
            out.setdefault(TP(topic, partition), []).append(message)
        del self.queue[:max_records]
        return out

    async def commit(self) -> None:
        self.commits += 1


class FakeStore:
    """Refuses, as ClickHouse would for its values, any span row whose id starts with "bad"; refuses
    everything while `down` (an outage)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[list[Any]]] = {}
        self.inserts = 0
        self.down = False
        self.refused = 0

    async def insert_many(self, batch: dict[str, list[list[Any]]], columns: dict[str, list[str]]) -> None:
        self.inserts += 1
        if self.down:
            self.refused += 1
            raise StorageError("Connection refused (ClickHouse is down)")
        for table, table_rows in batch.items():
            if table == "spans" and any(str(r[SPAN_ID]).startswith("bad") for r in table_rows):
                cause = DataError("Unable to create native array for column `input_tokens`: error")
                cause.__cause__ = struct.error("argument out of range")
                raise StorageDataError(table, cause)
            self.rows.setdefault(table, []).extend(table_rows)

    def span_ids(self) -> list[str]:
        return [r[SPAN_ID] for r in self.rows.get("spans", [])]


def trace_message(offset: int, trace_id: str, span_ids: list[str]) -> SimpleNamespace:
    spans = [Span(trace_id=trace_id, span_id=s, name="step", start_ns=1, end_ns=2) for s in span_ids]
    value = encode(TraceBatch(traces=[Trace(trace_id=trace_id, version=1, status="complete",
                                            close_reason="final_marker", spans=spans)]))
    return SimpleNamespace(value=value, key=trace_id.encode(), offset=offset, timestamp=None)


def make_sink(consumer: FakeConsumer, store: FakeStore, letters: list[DeadLetter],
              counters: Counters | None = None) -> ClickHouseSink:
    async def dead_letter(letter: DeadLetter) -> None:
        letters.append(letter)

    return ClickHouseSink(consumer, store, dead_letter, counters or Counters(),  # type: ignore[arg-type]
                          batch_rows=10_000, flush_interval_s=0.05, max_message_bytes=8 << 20)


async def run_until(sink: ClickHouseSink, done: Any, timeout_s: float = 10) -> asyncio.Task:
    task = asyncio.create_task(sink.run())
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline and not task.done(), "the sink did not get there"
        await asyncio.sleep(0.01)
    return task


async def test_bad_rows_are_split_off_as_dead_letters_and_every_other_row_is_stored() -> None:
    # 400 spans in 40 messages; two of them (in different messages) cannot be stored.
    messages = []
    for m in range(40):
        ids = [f"ok-{m}-{k}" for k in range(10)]
        if m in (7, 31):
            ids[3] = f"bad-{m}"
        messages.append((topics.TRACES, m % 2, trace_message(m, f"t{m}", ids)))
    consumer, store, letters, counters = FakeConsumer(messages), FakeStore(), [], Counters()
    sink = make_sink(consumer, store, letters, counters)
    task = await run_until(sink, lambda: consumer.commits >= 1)
    sink.stop()
    await asyncio.wait_for(task, 5)

    assert sorted(store.span_ids()) == sorted(f"ok-{m}-{k}" for m in range(40) for k in range(10)
                                              if not (m in (7, 31) and k == 3))
    assert len(store.rows["traces"]) == 40  # the traces' own rows were never in question
    assert [(d.stage, d.source_topic, d.partition, d.offset, d.key, d.trace_id, d.item) for d in letters] == [
        ("sink", topics.TRACES, 1, 7, "t7", "t7", "spans[3]"), ("sink", topics.TRACES, 1, 31, "t31", "t31", "spans[3]")]
    letter = letters[0]
    assert letter.error_type == "DataError"
    assert "spans" in letter.reason and "`input_tokens`" in letter.reason and "argument out of range" in letter.reason
    assert '"span_id":"bad-7"' in letter.payload_excerpt and letter.payload_size == len(letter.payload_excerpt)
    # bisection: each bad row costs about log2(400) inserts, not one insert per row
    assert store.inserts <= 1 + 2 * 2 * math.ceil(math.log2(400)) + 2
    snapshot = counters.snapshot()
    assert snapshot.get("sink_insert_errors", 0) == 0  # a data error is not an outage
    assert snapshot["sink_rows"] == 400 + 40 - 2


async def test_a_dead_letter_row_that_cannot_be_stored_is_logged_not_dead_lettered_again() -> None:
    class RefusesDeadLetters(FakeStore):
        async def insert_many(self, batch: dict[str, list[list[Any]]], columns: dict[str, list[str]]) -> None:
            if "dead_letters" in batch:
                raise StorageDataError("dead_letters", DataError("bad"))
            await super().insert_many(batch, columns)

    letter = DeadLetter(stage="router", source_topic=topics.TRACES, error_type="X", reason="r", at_ns=1)
    message = SimpleNamespace(value=encode(letter), key=b"k", offset=0, timestamp=None)
    consumer, store, letters = FakeConsumer([(topics.DEAD_LETTERS, 0, message)]), RefusesDeadLetters(), []
    sink = make_sink(consumer, store, letters)
    task = await run_until(sink, lambda: consumer.commits >= 1)
    sink.stop()
    await asyncio.wait_for(task, 5)
    assert letters == [] and "dead_letters" not in store.rows


async def test_an_outage_keeps_the_batch_and_a_retry_resumes_after_the_rows_already_stored() -> None:
    consumer = FakeConsumer([(topics.TRACES, 0, trace_message(0, "t0", ["ok-a", "bad-b", "ok-c", "ok-d"]))])
    store, letters, counters = FakeStore(), [], Counters()
    original = store.insert_many
    calls = 0

    async def outage_mid_split(batch: dict[str, list[list[Any]]], columns: dict[str, list[str]]) -> None:
        nonlocal calls
        calls += 1
        store.down = calls == 4  # the store fails once while the spans are being split
        await original(batch, columns)

    store.insert_many = outage_mid_split  # type: ignore[method-assign]
    sink = make_sink(consumer, store, letters, counters)
    task = await run_until(sink, lambda: consumer.commits >= 1)
    sink.stop()
    await asyncio.wait_for(task, 5)
    assert sorted(store.span_ids()) == ["ok-a", "ok-c", "ok-d"]  # each stored once, none twice
    assert [d.item for d in letters] == ["spans[1]"]
    assert counters.snapshot()["sink_insert_errors"] == store.refused == 1


async def test_stop_during_the_back_off_returns_at_once_and_commits_nothing() -> None:
    consumer = FakeConsumer([(topics.TRACES, 0, trace_message(i, f"t{i}", ["ok"])) for i in range(5)])
    store, letters = FakeStore(), []
    store.down = True
    sink = make_sink(consumer, store, letters)
    task = await run_until(sink, lambda: store.refused >= 3)  # backing off: 0.5 s, 1 s, then 2 s
    started = time.monotonic()
    sink.stop()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 0.5
    assert consumer.commits == 0 and store.rows == {} and letters == []
    assert store.refused == 3  # no last attempt on the way out


async def test_stop_during_a_fetch_ends_it_at_once_then_stores_and_commits_what_was_read() -> None:
    consumer = FakeConsumer([(topics.TRACES, 0, trace_message(0, "t0", ["ok"]))])
    store = FakeStore()
    sink = ClickHouseSink(consumer, store, lambda _: asyncio.sleep(0), Counters(),  # type: ignore[arg-type]
                          batch_rows=10_000, flush_interval_s=30, max_message_bytes=8 << 20)
    task = asyncio.create_task(sink.run())
    while consumer.queue:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # fetching again: an idle consumer waits up to the flush interval (30 s)
    started = time.monotonic()
    sink.stop()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 0.5
    assert store.span_ids() == ["ok"] and consumer.commits == 1


def test_a_message_the_row_mapping_cannot_take_is_a_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(traces: Any) -> tuple[list[list[Any]], list[list[Any]]]:
        raise OverflowError("a value the mapping cannot take")

    monkeypatch.setattr(rows, "trusted_trace_rows", broken)
    consumer, store, letters = FakeConsumer([(topics.TRACES, 2, trace_message(9, "t9", ["ok"]))]), FakeStore(), []

    async def run() -> None:
        sink = make_sink(consumer, store, letters)
        task = await run_until(sink, lambda: consumer.commits >= 1)
        sink.stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(run())
    assert [(d.stage, d.offset, d.error_type) for d in letters] == [("sink", 9, "OverflowError")]


@pytest.mark.parametrize("exc, data", [
    (DataError("Unable to create native array for column `input_tokens`: error"), True),
    (DatabaseError("Code: 321. VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE", code=321), True),
    (DatabaseError("Code: 41. DB::Exception: Cannot read DateTime", name="CANNOT_PARSE_DATETIME"), True),
    (ValueError("invalid literal for int() with base 10: 'abc'"), True),
    (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), True),
    (TypeError("'list' object cannot be interpreted"), True),
    (struct.error("argument out of range"), True),
    (OperationalError("Error HTTPConnectionPool: Max retries exceeded"), False),
    (DatabaseError("Code: 241. MEMORY_LIMIT_EXCEEDED", code=241, name="MEMORY_LIMIT_EXCEEDED"), False),
    (DatabaseError("Code: 60. Table evalstream.x does not exist. (UNKNOWN_TABLE)", code=60), False),
    (DatabaseError("Code: 252. TOO_MANY_PARTS", code=252, name="TOO_MANY_PARTS"), False),
    (ProgrammingError("Insert data column count does not match column names"), False),
    (ConnectionRefusedError(111, "Connection refused"), False),
    (TimeoutError(), False),
    (StorageError("down"), False),
])
def test_data_errors_are_told_from_the_stores(exc: BaseException, data: bool) -> None:
    assert is_data_error(exc) is data
