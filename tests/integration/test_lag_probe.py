"""worker/lag_probe.py on the real Tansu broker: partitions end where their last record is read, whatever
ListOffsets says, and consumer lag follows a backlog up and back down to 0."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from pipeline import topics
from pipeline.lag import LagTracker
from pipeline.worker.lag_probe import LagProbe
from pipeline.worker.metrics_service import measure_lag

pytestmark = pytest.mark.integration


async def _produce_batched(bootstrap: str, n: int) -> dict[int, list[tuple[int, float]]]:
    """n records to partition 0, sent together so they travel as multi-record batches."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topics.JOBS, b"x" * 50, key=b"k", partition=0) for _ in range(n)]
        await producer.flush()
        return {0: [(f.result().offset, f.result().timestamp / 1000) for f in futures]}
    finally:
        await producer.stop()


def test_ends_come_from_records_read_and_lag_follows_the_backlog(broker: str) -> None:
    async def run() -> None:
        written = (await _produce_batched(broker, 120))[0]
        true_end = written[-1][0] + 1
        probe = LagProbe(broker, fetch_max_bytes=16 * 1024 * 1024)
        await probe.start()
        try:
            tp = (topics.JOBS, 0)
            listed = (await probe._consumer.end_offsets([TopicPartition(*tp)]))  # type: ignore[union-attr]
            assert listed[TopicPartition(*tp)] <= true_end  # Tansu: the last batch's base offset + 1, short of it
            assert await probe.ends({tp: 0, (topics.JOBS, 1): 0}) == {tp: true_end, (topics.JOBS, 1): 0}

            tracker = LagTracker()
            tracker.watch("itest", lambda: {tp})
            [lag] = await measure_lag(tracker, probe)  # nothing processed, nothing committed: the whole log
            assert lag.records == true_end
            assert lag.seconds == pytest.approx(time.time() - written[0][1], abs=1.0)

            tracker.processed("itest", *tp, 99, written[99][1])
            [lag] = await measure_lag(tracker, probe)
            assert lag.records == true_end - 100

            tracker.processed("itest", *tp, true_end - 1, written[-1][1])
            [lag] = await measure_lag(tracker, probe)
            assert (lag.records, lag.seconds) == (0, 0.0)

            more = (await _produce_batched(broker, 30))[0]  # a new backlog after being caught up
            [lag] = await measure_lag(tracker, probe)
            assert lag.records == 30 and lag.seconds >= 0
            assert lag.seconds == pytest.approx(time.time() - more[0][1], abs=1.0)
        finally:
            await probe.stop()

    asyncio.run(run())


def test_changelog_highwaters_are_read_to_the_end_of_the_last_batch(broker: str) -> None:
    """Faust's table recovery reads a changelog up to its highwater: with ListOffsets' answer (the last
    batch's base offset + 1 on Tansu) a restarted worker stopped before the last batch's records, and a
    running one crashed its recovery (persisted offset above highwater). `read_highwaters` reads to the end."""
    from faust.types import TP as FaustTP

    from pipeline.worker.transport import read_highwaters

    async def run() -> None:
        first = (await _produce_batched(broker, 5))[0]
        last = (await _produce_batched(broker, 40))[0]
        assert first[-1][0] + 1 == last[0][0]
        tp, empty = FaustTP(topics.JOBS, 0), FaustTP(topics.JOBS, 1)
        probe = LagProbe(broker, fetch_max_bytes=16 * 1024 * 1024)
        await probe.start()
        try:
            listed = await probe._consumer.end_offsets([TopicPartition(*tp), TopicPartition(*empty)])  # type: ignore[union-attr]
        finally:
            await probe.stop()
        hints = {tp: listed[TopicPartition(*tp)], empty: listed[TopicPartition(*empty)]}
        ends = await read_highwaters({"bootstrap_servers": broker}, hints)
        assert ends == {tp: last[-1][0] + 1, empty: 0}
        assert hints[tp] < ends[tp]  # Tansu: ListOffsets falls short; reading is what finds the end

    asyncio.run(run())
