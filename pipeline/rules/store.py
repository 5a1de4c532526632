"""The rules topic `evalstream.rules.v1`: one partition, compacted, keyed by version.

Every version applied (`rules apply`, or `up` / `worker --rules` with a file whose version is not the
current one) is a record keyed by its version. The current version is the valid record at the highest
offset: compaction keeps the latest record of every key and never reorders what it keeps, so the last
record published is never removed and history keeps every version (re-applying a version keeps only its
latest application). Readers replay the topic from the start with no consumer group.

The topic may be written by producers we do not fully trust, so every record is checked here
(`versions.accept`) before it is used; one that fails is logged, counted and skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline import topics
from pipeline.contracts.rules import RulesRecord
from pipeline.errors import BrokerError, PublishError
from pipeline.rules.loader import ScorerCheck
from pipeline.rules.model import RuleSet
from pipeline.rules.versions import (
    RULES_MAX_BYTES,
    ActiveRules,
    RejectedRulesError,
    accept,
    encode_record,
    make_record,
    rules_version,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Raw:
    offset: int
    key: bytes | None
    value: bytes | None


def _consumer(client_options: Mapping[str, Any] | None, bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                            auto_offset_reset="earliest", fetch_max_wait_ms=100,
                            max_partition_fetch_bytes=2 * RULES_MAX_BYTES, request_timeout_ms=15000,
                            **(client_options or {}))


async def _assign(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    partitions = consumer.partitions_for_topic(topics.RULES)
    if not partitions:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topics.RULES) or set()
    assigned = [TopicPartition(topics.RULES, p) for p in sorted(partitions)]
    if assigned:
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
    return assigned


async def _caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def read_raw(bootstrap: str, *, timeout_s: float = 30.0, client_options: Mapping[str, Any] | None = None
                   ) -> list[Raw]:
    """Every record on the topic now, in topic order ([] when the topic does not exist)."""
    consumer = _consumer(client_options, bootstrap)
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    try:
        assigned = await _assign(consumer)
        if not assigned:
            return []
        ends = await consumer.end_offsets(assigned)
        found: list[Raw] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not await _caught_up(consumer, ends):
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerError(f"reading {topics.RULES} from {bootstrap} took over {timeout_s:g} s")
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                found += [Raw(m.offset, m.key, m.value) for m in messages]
        return sorted(found, key=lambda r: r.offset)
    finally:
        await consumer.stop()


def latest_valid(records: list[Raw], scorers: ScorerCheck | None = None,
                 on_reject: Callable[[Raw, RejectedRulesError], None] | None = None) -> ActiveRules | None:
    """The current version: the last record that validates (newest first, so older ones are not built)."""
    for raw in reversed(records):
        try:
            return accept(raw.key, raw.value, scorers=scorers)
        except RejectedRulesError as exc:
            if on_reject is not None:
                on_reject(raw, exc)
        except Exception as exc:  # noqa: BLE001 - a scorer that fails to build in a way the loader does not name
            if on_reject is not None:
                on_reject(raw, RejectedRulesError(f"{type(exc).__name__}: {exc}", "invalid"))
    return None


def history(records: list[Raw]) -> list[tuple[RulesRecord, bool]]:
    """Each version that validates in shape (scorers not built), oldest first, once (its latest application),
    with whether it is the current one."""
    good: list[RulesRecord] = []
    for raw in records:
        try:
            good.append(accept(raw.key, raw.value).record)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - history shows what workers would use
            log.warning("rules history: skipping the record at offset %d: %s", raw.offset, exc)
    latest: dict[str, RulesRecord] = {}
    for record in good:
        latest.pop(record.version, None)
        latest[record.version] = record
    current = good[-1].version if good else None
    return [(r, r.version == current) for r in latest.values()]


async def publish(bootstrap: str, record: RulesRecord, *, client_options: Mapping[str, Any] | None = None) -> None:
    """Store a version, keyed by it: acknowledged by the broker before this returns."""
    value = encode_record(record)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=2 * RULES_MAX_BYTES,
                                **(client_options or {}))
    try:
        await producer.start()
        await producer.send_and_wait(topics.RULES, value, key=record.version.encode(), partition=0)
    except KafkaError as exc:
        raise PublishError(f"publishing rules version {record.version} on {topics.RULES} at {bootstrap} "
                           f"failed: {exc}") from None
    finally:
        await producer.stop()


async def startup_rules(bootstrap: str, ruleset: RuleSet | None, source: str, *, scorers: ScorerCheck | None,
                        client_options: Mapping[str, Any] | None = None) -> ActiveRules:
    """The rules a worker starts with. With a file (`ruleset`): put it on the topic unless its version is
    already the current one (last publish wins: a different current version is replaced, and that is logged).
    Without one: the topic's current version, or no rules until `rules apply` publishes some."""
    current = latest_valid(await read_raw(bootstrap, client_options=client_options), scorers, _log_reject)
    if ruleset is None:
        if current is None:
            log.warning("rules: none given and none on %s: nothing is scored until `evalstream rules apply`",
                        topics.RULES)
            return ActiveRules(RuleSet())
        log.info("rules: using the current version %s", current.label)
        return current
    version = rules_version(ruleset)
    if current is not None and current.version == version:
        log.info("rules: %s is already the current version %s", source, version)
        return current
    if current is not None:
        log.warning("rules: %s (version %s) replaces the current version %s: the last publish wins, and every "
                    "worker follows it", source, version, current.label)
    record = make_record(ruleset, source)
    await publish(bootstrap, record, client_options=client_options)
    log.info("rules: published version %s from %s", version, source)
    return ActiveRules(ruleset, version, record)


def _log_reject(raw: Raw, exc: RejectedRulesError) -> None:
    log.error("rules: ignoring the record at %s[0]@%d (%s): %s", topics.RULES, raw.offset, exc.reason, exc)


class RulesFollower:
    """Follows the topic inside a worker: replays it, then switches (`on_change`) to each version that
    validates and differs from the one in use. A record that does not validate is logged and counted
    (`on_reject(reason)`), and the rules in use stay."""

    def __init__(self, bootstrap: str, current: Callable[[], str], on_change: Callable[[ActiveRules], None], *,
                 scorers: ScorerCheck | None, on_reject: Callable[[str], None] = lambda reason: None,
                 retry_s: float = 2.0, client_options: Mapping[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.current = current
        self.on_change = on_change
        self.scorers = scorers
        self.on_reject = on_reject
        self.retry_s = retry_s
        self.client_options = client_options
        self.ready = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker went away: keep the rules, read again
                log.error("rules: following %s failed (%s: %s); retrying in %g s", topics.RULES,
                          type(exc).__name__, exc, self.retry_s)
            await asyncio.sleep(self.retry_s)

    def reject(self, raw: Raw, exc: RejectedRulesError) -> None:
        _log_reject(raw, exc)
        self.on_reject(exc.reason)

    def switch(self, active: ActiveRules) -> None:
        if active.version == self.current():
            return
        log.info("rules: switching from version %s to %s", self.current() or "(none)", active.label)
        self.on_change(active)

    def take(self, raw: Raw) -> None:
        """One record read after the replay."""
        active = latest_valid([raw], self.scorers, self.reject)
        if active is not None:
            self.switch(active)

    async def _follow(self) -> None:
        consumer = _consumer(self.client_options, self.bootstrap)
        await consumer.start()
        try:
            assigned = await _assign(consumer)
            if not assigned:
                log.warning("rules: topic %s does not exist yet; waiting for it", topics.RULES)
                return
            ends = await consumer.end_offsets(assigned)
            replay: list[Raw] | None = []  # the records there at the start: only the last valid one is used
            while True:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    for m in messages:
                        raw = Raw(m.offset, m.key, m.value)
                        if replay is not None:
                            replay.append(raw)
                        else:
                            self.take(raw)
                if replay is not None and await _caught_up(consumer, ends):
                    active = latest_valid(replay, self.scorers, self.reject)
                    replay = None
                    if active is not None:
                        self.switch(active)
                    self.ready.set()
        finally:
            await consumer.stop()
