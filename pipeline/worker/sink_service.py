"""The sink role inside a worker process: owns the ClickHouse client, the sink loop and the query endpoint."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaConsumer
from mode import Service

from pipeline import topics
from pipeline.alerts.channels import channel_from_settings
from pipeline.kafka_security import aiokafka_options
from pipeline.runfile import clear_run_file, update_run_file
from pipeline.settings import Settings
from pipeline.storage.client import dsn_of
from pipeline.storage.database import Database
from pipeline.storage.query_server import QueryServer
from pipeline.storage.reader import Reader
from pipeline.storage.sink import ClickHouseSink
from pipeline.worker.context import WorkerContext
from pipeline.worker.rule_health_alerts import RuleHealthAlerts

log = logging.getLogger(__name__)


def sink_fetch_wait_ms(settings: Settings) -> int:
    """How long the sink's fetches wait for data. It writes every `sink_flush_interval_s` anyway, so waiting
    up to a fifth of that (at most 100 ms) adds little to when a row lands, and spares the broker most
    of the empty polls: on Tansu, polling eight topics every 10 ms cost more CPU than the sink itself."""
    return max(settings.fetch_max_wait_ms, 1, min(100, int(settings.sink_flush_interval_s * 1000 / 5)))


def sink_stop_wait_s(settings: Settings) -> float:
    """How long a stopping sink may take to store and commit its last batch: 40% of the stop's budget
    (`stop_timeout_s`), which leaves the rest of the worker and `up`'s broker the time they need. A batch
    not stored by then stays uncommitted, and is read again at the next start."""
    return max(1.0, settings.stop_timeout_s * 0.4)


def sink_service_class(ctx: WorkerContext, bootstrap: str) -> type[Service]:
    class SinkService(Service):
        """Started and stopped with the Faust app (`app.service`)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            settings = ctx.settings
            self.db = Database(dsn_of(settings), settings.clickhouse_database)
            self.consumer: AIOKafkaConsumer | None = None
            self.sink: ClickHouseSink | None = None
            self.task: asyncio.Future | None = None
            self.health_task: asyncio.Future | None = None
            self.health_reader: Reader | None = None
            self.server = QueryServer(self.db, self._health, port=settings.query_port)
            self.started_at = time.time()

        def _health(self) -> dict[str, Any]:
            return {"status": "ok", "pid": os.getpid(), "uptime_s": round(time.time() - self.started_at, 1),
                    "counters": ctx.counters.snapshot()}

        async def on_start(self) -> None:
            settings = ctx.settings
            applied = await self.db.open(settings.retention_days)
            if applied:
                log.info("clickhouse: applied migrations %s", ", ".join(applied))
            url = await self.server.start()
            update_run_file(settings.run_file, query_url=url, worker_pid=os.getpid())
            self.consumer = AIOKafkaConsumer(
                *topics.SINK_TOPICS,
                bootstrap_servers=bootstrap,
                group_id=f"{settings.app_id}-sink",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=int(settings.session_timeout_s * 1000),
                heartbeat_interval_ms=int(settings.session_timeout_s * 1000 / 3),
                fetch_max_wait_ms=sink_fetch_wait_ms(settings),
                max_partition_fetch_bytes=settings.fetch_max_bytes,
                fetch_max_bytes=max(settings.fetch_max_bytes, 52428800),
                **aiokafka_options(settings),
            )
            await self.consumer.start()
            if self.should_stop:  # stopped while starting (a signal during start-up): on_stop has run already
                await self.consumer.stop()
                return
            consumer = self.consumer
            ctx.lag.watch(f"{settings.app_id}-sink", lambda: [(tp.topic, tp.partition) for tp in consumer.assignment()])
            self.sink = ClickHouseSink(
                self.consumer, self.db, ctx.dead_letter, ctx.counters,
                batch_rows=settings.sink_batch_rows, flush_interval_s=settings.sink_flush_interval_s,
                max_message_bytes=settings.max_message_bytes, lag=ctx.lag, lag_group=f"{settings.app_id}-sink",
            )
            self.task = self.add_future(self._run())
            if settings.rule_health_alerts:  # the built-in rule-health alert (docs/rule-health.md)
                self.health_reader = Reader.for_workers(settings, owner=self.db)
                health = RuleHealthAlerts(ctx, self.health_reader, channel_from_settings(settings),
                                          leads=lambda: (topics.ALERTS, 0) in {(tp.topic, tp.partition)
                                                                               for tp in consumer.assignment()})
                self.health_task = self.add_future(health.run())

        async def _run(self) -> None:
            assert self.sink is not None
            try:
                await self.sink.run()
            except Exception:
                if self.should_stop:  # e.g. its consumer closed under it: what it did not commit is read again
                    log.warning("sink: ended with an error while stopping", exc_info=True)
                    return
                log.exception("sink: stopped by an unexpected error; the worker is shutting down")
                await self.crash_worker()

        async def crash_worker(self) -> None:
            await ctx.app.crash(RuntimeError("sink failed"))  # type: ignore[attr-defined]

        async def on_stop(self) -> None:
            """Bounded, whatever ClickHouse does: the sink stores and commits its last batch, or (ClickHouse
            refusing, or slower than `sink_stop_wait_s`) commits nothing, and that batch is read again."""
            if self.health_task is not None:
                self.health_task.cancel()
            if self.sink is not None and self.task is not None:
                wait_s = sink_stop_wait_s(ctx.settings)
                log.info("sink: stopping; its last batch is committed only once stored (waiting up to %g s)", wait_s)
                self.sink.stop()  # ends its fetch or back-off; stores and commits what it holds, or commits nothing
                done, _ = await asyncio.wait([self.task], timeout=wait_s)
                if not done:  # an insert that hangs: abandon it before its commit
                    self.task.cancel()
                    await asyncio.wait([self.task], timeout=1.0)
                    log.warning("sink: its last batch was not stored within %g s; stopped without committing it "
                                "(it is read again at the next start)", wait_s)
            ctx.lag.unwatch(f"{ctx.settings.app_id}-sink")
            await self._bounded(self.consumer.stop() if self.consumer is not None else None, "its Kafka consumer")
            await self._bounded(self.server.stop(), "the query endpoint")
            clear_run_file(ctx.settings.run_file, "query_url", "worker_pid")
            if self.health_reader is not None:
                self.health_reader.close()
            await self._bounded(self.db.close(), "ClickHouse")

        async def _bounded(self, closing: Awaitable[None] | None, what: str, timeout_s: float = 2.0) -> None:
            if closing is None:
                return
            try:
                await asyncio.wait_for(closing, timeout_s)
            except Exception as exc:  # noqa: BLE001 - stopping: say so and go on
                log.warning("sink: closing %s failed or took over %g s (%r); going on", what, timeout_s, exc)

    return SinkService
