"""Faust's aiokafka driver with a configurable consumer fetch wait, changelog highwaters read rather than
taken from ListOffsets, an assignor that survives members of different roles, table recovery that seeks the
stream partitions before it resumes them, fetches that take only the partitions Faust reads, and the app's
TLS / SASL credentials.

The driver hard-codes `fetch_max_wait_ms=1500`. Brokers whose long poll does not wake on new
data (Tansu) then add ~370 ms per hop at the median; ~10 ms brings a hop to ~5 ms.
aiokafka reads the value when the consumer starts, so setting it right after construction
is enough.

Table recovery reads each changelog partition up to its highwater. Tansu answers ListOffsets(latest)
with the base offset of the last record batch, not the end, so recovery stopped before the last
batch's records (a restarted worker forgot the newest state of a table), and a rebalance in a running
worker failed Faust's consistency check (persisted offset above highwater) and crashed it.

Two Faust (0.15.3) races after a rebalance moved the consumer past records no agent had handled, and Faust
then committed past them as a "gap": table recovery resumed the stream partitions before seeking them to their
committed offsets (`SeekBeforeResumeRecovery`), and a fetch waiting in the consumer thread read Faust's
momentarily empty set of active partitions as "every partition" (`ActivePartitions`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import faust
from faust.assignor import PartitionAssignor
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_aiokafka

from pipeline.kafka_security import aiokafka_options
from pipeline.lag import TP
from pipeline.worker.lag_probe import LagProbe

if TYPE_CHECKING:
    from pipeline.settings import Settings


class ActivePartitions:
    """The partitions Faust is reading (its own set, which the app's thread changes as it pauses and resumes
    them), as aiokafka's `fetched_records` tests them: membership only, and never empty.

    Faust hands aiokafka that very set, and aiokafka reads an empty one as "every assigned partition". A fetch
    waiting in the consumer thread while the app paused the last active partitions (the changelogs, when table
    recovery ends) then took the records of the paused stream partitions, during or after their seek to the
    committed offsets, and Faust dropped them unread: the consumer's position had moved past them, the next
    record read looked like a jump over missing offsets (a gap, which Faust commits past), and the assembler
    lost every record in between (dozens to hundreds per partition)."""

    __slots__ = ("_tps",)

    def __init__(self, tps: set[Any]) -> None:
        self._tps = tps

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self._tps


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_max_wait_ms: int = 10

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer

    async def _fetch_records(self, consumer: Any, active_partitions: set[Any] | None, timeout: float | None = None,
                             max_records: int | None = None) -> Any:
        """Faust's, with its active partitions handed to aiokafka as a view that is never empty: see
        `ActivePartitions`."""
        partitions = None if active_partitions is None else ActivePartitions(active_partitions)
        return await super()._fetch_records(consumer, partitions, timeout=timeout, max_records=max_records)

    async def _highwaters(self, partitions: list[Any]) -> Mapping[Any, int]:
        hints = await super()._highwaters(partitions)
        options = getattr(self.app, "kafka_client_options", None)
        if not hints or options is None:
            return hints
        return await read_highwaters(options, {tp: hint for tp, hint in hints.items() if hint is not None}) | {
            tp: hint for tp, hint in hints.items() if hint is None}


async def read_highwaters(options: dict[str, Any], hints: Mapping[Any, int]) -> dict[Any, int]:
    """`hints` (ListOffsets' answers, keyed by Faust TPs) checked by reading each partition to its end with a
    group-less consumer of its own (`LagProbe.verified_ends`)."""
    by_key: dict[TP, Any] = {(tp.topic, tp.partition): tp for tp in hints}
    probe = LagProbe(options["bootstrap_servers"], fetch_max_bytes=options.get("fetch_max_bytes", 1048576),
                     client_options=options.get("client_options"), read_timeout_s=10.0)
    await probe.start()
    try:
        ends = await probe.verified_ends({key: hints[tp] for key, tp in by_key.items()})
    finally:
        await probe.stop()
    raised = {key: end for key, end in ends.items() if end != hints[by_key[key]]}
    if raised:
        log.info("changelog highwaters read past ListOffsets' answer on %d partition(s): %s", len(raised),
                 ", ".join(f"{t}[{p}] {hints[by_key[(t, p)]]}->{end}" for (t, p), end in sorted(raised.items())[:10]))
    return {by_key[key]: end for key, end in ends.items()}


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class LowLatencyTransport(faust_aiokafka.Transport):
    Consumer = _Consumer


log = logging.getLogger(__name__)


class RoleTolerantAssignor(PartitionAssignor):
    """Faust asserts that the partitions Kafka assigned this member equal those the leader's metadata implies
    for the member's own tables. Workers of one group that run different roles (so different tables) can
    disagree on that after a member was killed, and the assertion escapes into aiokafka's coordinator, which
    then stops for good: the worker consumes nothing more and says nothing. Kafka's assignment is what the
    consumer reads, so the disagreement is logged and the worker goes on."""

    def on_assignment(self, assignment: Any) -> None:
        try:
            super().on_assignment(assignment)
        except AssertionError as exc:
            log.warning("faust: the group's assignment metadata disagrees with the partitions Kafka assigned this "
                        "member (%s); going on with Kafka's assignment", str(exc)[:500])


class SeekBeforeResumeRecovery(Recovery):
    """Faust's `Recovery.on_recovery_completed` with its first steps in the safe order: seek the stream
    partitions to their committed offsets while they are still paused, then resume them.

    Faust resumes them first. The flow is already on (recovery turned it on to read the changelogs), so the
    agents take records from wherever the consumer stood while the seek's round trip is under way. The seek
    then sets Faust's read offsets back to the committed ones under those records, and `flow_control.resume()`
    empties the agents' queues: a record delivered but not yet handled is dropped, the next one read is taken
    for a jump over missing offsets (a "gap", which Faust counts as acked and commits past), and the records
    the seek reads again are dropped as already read. The assembler lost the record in each queue that way
    after a restart (the `final` span of a trace in tests/integration/test_ledger_faults.py, SIGKILL of each
    role). Upstream Faust seeks first, as here; the no-tables path (`_resume_streams`) keeps the flow off until
    after its seek, so it is safe as it is."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [asyncio.ensure_future(table.on_recovery_completed(self.actives_for_table[table],
                                                                       self.standbys_for_table[table]))
                     for table in self.tables.values()]
        if callbacks:
            await asyncio.wait(callbacks)
        assignment = consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again app id %s param %s", self.app.consumer_generation_id,
                             generation_id)
            return
        if assignment:  # while the stream partitions are still paused
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        self.completed.set()
        # From here to the fetcher's start nothing awaits, so no record is read between the resume and
        # `flow_control.resume()` emptying the agents' queues.
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        self.app.flow_control.resume()
        consumer.resume_flow()
        await self.app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")


class SeekBeforeResumeTableManager(TableManager):
    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekBeforeResumeRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class EvalstreamApp(faust.App):
    def __init__(self, *args: Any, fetch_max_wait_ms: int = 10, kafka_client_options: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        """`kafka_client_options`: `bootstrap_servers`, `fetch_max_bytes` and `client_options` (TLS / SASL) for
        the consumer that reads changelog highwaters; without it they are ListOffsets' answers."""
        kwargs.setdefault("PartitionAssignor", RoleTolerantAssignor)
        kwargs.setdefault("TableManager", SeekBeforeResumeTableManager)
        super().__init__(*args, **kwargs)
        self.kafka_client_options = kafka_client_options
        _ConsumerThread.fetch_max_wait_ms = fetch_max_wait_ms

    def _new_transport(self) -> Any:
        return LowLatencyTransport(self.conf.broker_consumer, self, loop=self.loop)


def faust_credentials(settings: Settings) -> Any:
    """`broker_credentials` for the Faust app (None for PLAINTEXT), from the same options as every aiokafka client."""
    options = aiokafka_options(settings)
    protocol = options.get("security_protocol", "PLAINTEXT")
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return faust.SASLCredentials(username=options["sasl_plain_username"], password=options["sasl_plain_password"],
                                 ssl_context=options.get("ssl_context"), mechanism=options["sasl_mechanism"])
