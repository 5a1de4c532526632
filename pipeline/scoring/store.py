"""The scorer store: uploaded scorer versions on `evalstream.scorers.v1`, keyed by scorer name.

On Kafka the topic is compacted, so it keeps at least the latest version of every name; Tansu
does not compact and keeps every version. Readers replay it from the beginning, with no
consumer group, and keep the last record per name. A record with no value (a tombstone) removes
the name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline import topics
from pipeline.contracts import decode, encode
from pipeline.contracts.uploads import UploadedScorer
from pipeline.errors import BrokerError, DecodeError, PublishError

log = logging.getLogger(__name__)


class ScorerCatalog:
    """The latest version of every uploaded scorer, fed in topic order. `ready` is set once the
    records that were on the topic when reading started have all been applied."""

    def __init__(self) -> None:
        self._latest: dict[str, UploadedScorer] = {}
        self.ready = asyncio.Event()

    def apply(self, key: bytes | None, value: bytes | None, *, max_bytes: int = 16 * 1024 * 1024
              ) -> UploadedScorer | None:
        """Apply one record; returns it when it changed the name's current version."""
        if value is None:
            name = (key or b"").decode(errors="replace")
            if self._latest.pop(name, None) is not None:
                log.info("scorer store: %s removed", name)
            return None
        try:
            record = decode(value, UploadedScorer, max_bytes=max_bytes)
        except DecodeError as exc:
            log.error("scorer store: skipping a bad record (key %r): %s", key, exc)
            return None
        return self.put(record)

    def put(self, record: UploadedScorer) -> UploadedScorer | None:
        current = self._latest.get(record.name)
        self._latest[record.name] = record
        return None if current is not None and current.version == record.version else record

    def get(self, name: str) -> UploadedScorer | None:
        return self._latest.get(name)

    def replace_with(self, other: ScorerCatalog) -> None:
        self._latest = dict(other._latest)

    def records(self) -> list[UploadedScorer]:
        return sorted(self._latest.values(), key=lambda r: r.name)

    def __contains__(self, name: object) -> bool:
        return name in self._latest


def tail_consumer(bootstrap: str, max_bytes: int, client_options: Mapping[str, Any] | None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                            auto_offset_reset="earliest", fetch_max_wait_ms=100,
                            max_partition_fetch_bytes=max(2 * max_bytes, 1024 * 1024),
                            request_timeout_ms=15000, **(client_options or {}))


async def assign_all(consumer: AIOKafkaConsumer, topic: str = topics.SCORERS) -> list[TopicPartition]:
    """Every partition of the topic, from the beginning ([] when the topic does not exist yet). Also used by
    the shared budget ledger (`worker/budget_ledger.py`), which reads its topic the same way."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer.topics()  # refresh metadata once
        partitions = consumer.partitions_for_topic(topic) or set()
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    if assigned:
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
    return assigned


async def _caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def read_store(bootstrap: str, *, max_bytes: int = 16 * 1024 * 1024, timeout_s: float = 30.0,
                     client_options: Mapping[str, Any] | None = None) -> list[UploadedScorer]:
    """Every version on the topic now, oldest upload first (for `scorers list` and `rules check`).
    `client_options`: TLS / SASL (`kafka_security.aiokafka_options`), as for every client here."""
    consumer = tail_consumer(bootstrap, max_bytes, client_options)
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    try:
        assigned = await assign_all(consumer)
        if not assigned:
            return []
        ends = await consumer.end_offsets(assigned)
        found: list[UploadedScorer] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not await _caught_up(consumer, ends):
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerError(f"reading {topics.SCORERS} from {bootstrap} took over {timeout_s:g} s")
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                for message in messages:
                    try:
                        found.append(decode(message.value, UploadedScorer, max_bytes=max_bytes))
                    except DecodeError as exc:
                        log.warning("scorer store: skipping a bad record at offset %d: %s", message.offset, exc)
        return sorted(found, key=lambda r: r.uploaded_at_ns)
    finally:
        await consumer.stop()


def latest_per_name(records: list[UploadedScorer]) -> list[UploadedScorer]:
    latest: dict[str, UploadedScorer] = {}
    for record in records:
        latest[record.name] = record
    return sorted(latest.values(), key=lambda r: r.name)


async def publish(bootstrap: str, record: UploadedScorer, *, max_bytes: int,
                  client_options: Mapping[str, Any] | None = None) -> None:
    """Store a version: acknowledged by the broker before this returns."""
    value = encode(record)
    if len(value) > max_bytes:
        raise PublishError(f"{record.filename} makes a {len(value)}-byte record, over EVALSTREAM_MAX_MESSAGE_BYTES "
                           f"({max_bytes})")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=max(2 * max_bytes, 1 << 20),
                                **(client_options or {}))
    try:
        await producer.start()
        await producer.send_and_wait(topics.SCORERS, value, key=record.name.encode())
    except KafkaError as exc:
        raise PublishError(f"storing {record.label} on {topics.SCORERS} at {bootstrap} failed: {exc}") from None
    finally:
        await producer.stop()


class StoreFollower:
    """Keeps a catalog current inside a worker: replays the topic, then follows it. After the
    replay it calls `on_change` for every current version, then for each new one as it arrives."""

    def __init__(self, bootstrap: str, catalog: ScorerCatalog, on_change: Callable[[UploadedScorer], None], *,
                 max_bytes: int, retry_s: float = 2.0, client_options: Mapping[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.client_options = client_options
        self.catalog = catalog
        self.on_change = on_change
        self.max_bytes = max_bytes
        self.retry_s = retry_s
        self._announced: dict[str, str] = {}

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker went away: keep the catalog, read again
                log.error("scorer store: following %s failed (%s: %s); retrying in %g s", topics.SCORERS,
                          type(exc).__name__, exc, self.retry_s)
            await asyncio.sleep(self.retry_s)

    async def _follow(self) -> None:
        consumer = tail_consumer(self.bootstrap, self.max_bytes, self.client_options)
        await consumer.start()
        try:
            assigned = await assign_all(consumer)
            if not assigned:
                log.warning("scorer store: topic %s does not exist yet; waiting for it", topics.SCORERS)
                return
            ends = await consumer.end_offsets(assigned)
            # Replay into a staging catalog, so jobs never see an old version while history streams by.
            staging: ScorerCatalog | None = ScorerCatalog()
            while True:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    for message in messages:
                        target = staging if staging is not None else self.catalog
                        changed = target.apply(message.key, message.value, max_bytes=self.max_bytes)
                        if changed is not None and staging is None:
                            self._announce(changed)
                if staging is not None and await _caught_up(consumer, ends):
                    self.catalog.replace_with(staging)
                    staging = None
                    self.catalog.ready.set()
                    records = self.catalog.records()
                    log.info("scorer store: %d uploaded scorer(s): %s", len(records),
                             ", ".join(r.label for r in records) or "none")
                    for record in records:
                        if self._announced.get(record.name) != record.version:
                            self._announce(record)
        finally:
            await consumer.stop()

    def _announce(self, record: UploadedScorer) -> None:
        log.info("scorer store: %s is now version %s (%s)", record.name, record.version,
                 ", ".join(record.requirements) or "no requirements")
        self._announced[record.name] = record.version
        self.on_change(record)
