"""Reads partitions to learn where they verifiably end, for consumer lag (docs/metrics.md).

A group-less aiokafka consumer seeks each partition to the last offset known to hold a record and
reads to the end: the last offset it reads + 1 is the end. ListOffsets(latest) is used only to pick
where to start reading (on Tansu it names the base offset of the last record batch; on Kafka the
end), never as the answer. The same consumer reads the first waiting record of a lagging partition
for its timestamp, and an admin client reads the groups' committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from pipeline.lag import TP

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Seen:
    first_offset: int
    first_ts: float | None  # epoch seconds
    last_offset: int


class LagProbe:
    def __init__(self, bootstrap: str, *, fetch_max_bytes: int, client_options: dict[str, Any] | None = None,
                 read_timeout_s: float = 2.0) -> None:
        self._bootstrap = bootstrap
        self._fetch_max_bytes = fetch_max_bytes
        self._options = client_options or {}
        self._read_timeout_s = read_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="none", fetch_max_wait_ms=10, max_partition_fetch_bytes=self._fetch_max_bytes,
            fetch_max_bytes=max(self._fetch_max_bytes, 52428800), **self._options)
        await self._consumer.start()
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, **self._options)
        await self._admin.start()

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        admin, self._admin = self._admin, None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()

    async def ends(self, seen: dict[TP, int]) -> dict[TP, int]:
        """Per partition, one past the last record read on it: never below `seen` (what this process's
        consumers already saw), 0 for a partition with no record."""
        assert self._consumer is not None
        tps = [TopicPartition(*tp) for tp in seen]
        hints = await self._consumer.end_offsets(tps) if tps else {}
        starts = {tp: max(hints.get(TopicPartition(*tp), 0), known) - 1 for tp, known in seen.items()}
        read = await self._read({tp: start for tp, start in starts.items() if start >= 0}, to_end=True)
        return {tp: max(known, read[tp].last_offset + 1 if tp in read else 0) for tp, known in seen.items()}

    async def verified_ends(self, hints: dict[TP, int]) -> dict[TP, int]:
        """Per partition, its end: the broker's ListOffsets(latest) `hints` checked by reading from just before
        them. On Kafka the hint is the end and this changes nothing; on Tansu it is the base offset of the last
        record batch, and the end is one past that batch's last record. Never below the hint."""
        read = await self._read({tp: max(hint - 1, 0) for tp, hint in hints.items()}, to_end=True)
        return {tp: max(hint, read[tp].last_offset + 1 if tp in read else 0) for tp, hint in hints.items()}

    async def first_timestamps(self, offsets: dict[TP, int]) -> dict[TP, float]:
        """The timestamp of the first record at or after each offset (partitions with none are left out)."""
        read = await self._read(offsets, to_end=False)
        return {tp: s.first_ts for tp, s in read.items() if s.first_ts is not None}

    async def committed(self, group: str, tps: set[TP]) -> dict[TP, int]:
        """The group's committed offsets (partitions without one are left out)."""
        assert self._admin is not None
        if not tps:
            return {}
        found = await self._admin.list_consumer_group_offsets(group, partitions=[TopicPartition(*tp) for tp in tps])
        return {(tp.topic, tp.partition): meta.offset for tp, meta in found.items() if meta.offset >= 0}

    async def log_starts(self, tps: set[TP]) -> dict[TP, int]:
        assert self._consumer is not None
        if not tps:
            return {}
        found = await self._consumer.beginning_offsets([TopicPartition(*tp) for tp in tps])
        return {(tp.topic, tp.partition): offset for tp, offset in found.items()}

    async def _read(self, starts: dict[TP, int], *, to_end: bool) -> dict[TP, Seen]:
        """Read each partition from its start offset: only the first records, or on to the end. A partition
        is at its end when a fetch answered at its position after the last records came back brought none
        (aiokafka's per-partition poll time tells a fetch answered from one not yet made)."""
        consumer = self._consumer
        assert consumer is not None
        if not starts:
            return {}
        tps = {tp: TopicPartition(*tp) for tp in starts}
        consumer.assign(list(tps.values()))
        now_ms = time.time() * 1000
        mark: dict[TP, float] = {}
        for tp, start in starts.items():
            consumer.seek(tps[tp], start)
            mark[tp] = now_ms
        pending = set(starts)
        seen: dict[TP, Seen] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._read_timeout_s
        while pending and loop.time() < deadline:
            try:
                got = await consumer.getmany(*(tps[tp] for tp in pending), timeout_ms=100)
            except OffsetOutOfRangeError as exc:  # deleted by retention since: nothing to read there
                gone = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
                pending -= {(t.topic, t.partition) for t in gone} or set(pending)
                continue
            except KafkaError as exc:
                log.warning("lag probe: reading %d partition(s) failed: %s", len(pending), exc)
                break
            for key, records in got.items():
                tp = (key.topic, key.partition)
                records = [r for r in records if r.offset >= starts[tp]]
                if not records:
                    continue
                before = seen.get(tp)
                first = before or Seen(records[0].offset, _seconds(records[0].timestamp), records[0].offset)
                seen[tp] = Seen(first.first_offset, first.first_ts, records[-1].offset)
                mark[tp] = consumer.last_poll_timestamp(key) or mark[tp]
                if not to_end:
                    pending.discard(tp)
            if to_end:
                for tp in [tp for tp in pending if TopicPartition(*tp) not in got]:
                    polled = consumer.last_poll_timestamp(tps[tp])
                    if polled is not None and polled > mark[tp]:
                        pending.discard(tp)
            for tp in set(tps) - pending:
                consumer.pause(tps[tp])
        if pending:
            log.debug("lag probe: %d partition(s) not read to the end in %.1fs", len(pending), self._read_timeout_s)
        return seen


def _seconds(timestamp_ms: int | None) -> float | None:
    return timestamp_ms / 1000 if timestamp_ms is not None and timestamp_ms >= 0 else None
