"""The otel-export role inside a worker process: scores -> `gen_ai.evaluation.result` log records over OTLP.

A plain aiokafka consumer of its own group (`<app id>-otel-export`), so it takes no partitions from the
alerter's `alert-matcher` and commits only what the OTLP endpoint accepted (`otel/evaluation_exporter.py`).
An endpoint that is down holds back this group alone; the rest of the worker goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from mode import Service

from pipeline import topics
from pipeline.kafka_security import aiokafka_options
from pipeline.otel.evaluation_exporter import EvaluationExporter, OtlpLogEmitter
from pipeline.worker.context import WorkerContext

log = logging.getLogger(__name__)


class LiveSamplingRates(Mapping[str, float]):
    """Each rule's sampling rate in the rules in use now: they follow `rules apply` (`worker/rules_service.py`)."""

    def __init__(self, ctx: WorkerContext) -> None:
        self._ctx = ctx

    def __getitem__(self, rule: str) -> float:
        found = self._ctx.ruleset.rule(rule)
        if found is None:
            raise KeyError(rule)
        return found.sampling_rate

    def __iter__(self) -> Iterator[str]:
        return iter([r.name for r in self._ctx.ruleset.rules])

    def __len__(self) -> int:
        return len(self._ctx.ruleset.rules)


def otel_export_service_class(ctx: WorkerContext, bootstrap: str) -> type[Service]:
    emitter = OtlpLogEmitter()  # here, at start-up: without the `otel` extra the worker does not start
    group = f"{ctx.settings.app_id}-otel-export"

    class OtelExportService(Service):
        """Started and stopped with the Faust app (`app.service`)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.consumer: AIOKafkaConsumer | None = None
            self.exporter: EvaluationExporter | None = None
            self.task: asyncio.Future | None = None

        async def on_start(self) -> None:
            settings = ctx.settings
            self.consumer = AIOKafkaConsumer(
                topics.SCORES,
                bootstrap_servers=bootstrap,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # a new group exports what the topic still holds
                session_timeout_ms=int(settings.session_timeout_s * 1000),
                heartbeat_interval_ms=int(settings.session_timeout_s * 1000 / 3),
                fetch_max_wait_ms=max(settings.fetch_max_wait_ms, 100),
                max_partition_fetch_bytes=settings.fetch_max_bytes,
                fetch_max_bytes=max(settings.fetch_max_bytes, 52428800),
                **aiokafka_options(settings),
            )
            await self.consumer.start()
            if self.should_stop:
                await self.consumer.stop()
                return
            consumer = self.consumer
            ctx.lag.watch(group, lambda: [(tp.topic, tp.partition) for tp in consumer.assignment()])
            self.exporter = EvaluationExporter(
                consumer, emitter, ctx.counters,
                sampling_rates=LiveSamplingRates(ctx),
                max_message_bytes=settings.max_message_bytes, lag=ctx.lag, lag_group=group)
            self.task = self.add_future(self._run())
            log.info("otel-export: sending scores as gen_ai.evaluation.result log records (consumer group %s)", group)

        async def _run(self) -> None:
            assert self.exporter is not None
            try:
                await self.exporter.run()
            except Exception:
                if not self.should_stop:  # the exporter's own bug: said loudly; the rest of the worker goes on
                    log.exception("otel-export: stopped by an unexpected error; scores are no longer exported "
                                  "until the worker restarts (they stay uncommitted in group %s)", group)

        async def on_stop(self) -> None:
            if self.exporter is not None and self.task is not None:
                self.exporter.stop()
                done, _ = await asyncio.wait([self.task], timeout=max(1.0, ctx.settings.stop_timeout_s * 0.3))
                if not done:
                    self.task.cancel()
            ctx.lag.unwatch(group)
            for closing, what in ((self.consumer.stop() if self.consumer else None, "its Kafka consumer"),
                                  (asyncio.to_thread(emitter.shutdown), "the OTLP log exporter")):
                if closing is None:
                    continue
                try:
                    await asyncio.wait_for(closing, 2.0)
                except Exception as exc:  # noqa: BLE001 - stopping: say so and go on
                    log.warning("otel-export: closing %s failed or took over 2 s (%r); going on", what, exc)

    return OtelExportService
