"""Faust's aiokafka driver with a configurable consumer fetch wait, changelog highwaters read rather than
taken from ListOffsets, an assignor that survives members of different roles, and the app's TLS / SASL
credentials.

The driver hard-codes `fetch_max_wait_ms=1500`. Brokers whose long poll does not wake on new
data (Tansu) then add ~370 ms per hop at the median; ~10 ms brings a hop to ~5 ms.
aiokafka reads the value when the consumer starts, so setting it right after construction
is enough.

Table recovery reads each changelog partition up to its highwater. Tansu answers ListOffsets(latest)
with the base offset of the last record batch, not the end, so recovery stopped before the last
batch's records (a restarted worker forgot the newest state of a table), and a rebalance in a running
worker failed Faust's consistency check (persisted offset above highwater) and crashed it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import faust
from faust.assignor import PartitionAssignor
from faust.transport.drivers import aiokafka as faust_aiokafka

from pipeline.kafka_security import aiokafka_options
from pipeline.lag import TP
from pipeline.worker.lag_probe import LagProbe

if TYPE_CHECKING:
    from pipeline.settings import Settings


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_max_wait_ms: int = 10

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer

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


class EvalstreamApp(faust.App):
    def __init__(self, *args: Any, fetch_max_wait_ms: int = 10, kafka_client_options: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        """`kafka_client_options`: `bootstrap_servers`, `fetch_max_bytes` and `client_options` (TLS / SASL) for
        the consumer that reads changelog highwaters; without it they are ListOffsets' answers."""
        kwargs.setdefault("PartitionAssignor", RoleTolerantAssignor)
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
