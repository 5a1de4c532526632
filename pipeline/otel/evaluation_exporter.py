"""The `otel-export` role's work: `evalstream.scores.v1` -> `gen_ai.evaluation.result` log records over OTLP.

    OtlpLogEmitter       the stock OpenTelemetry pipeline: LoggerProvider + BatchLogRecordProcessor +
                         OTLPLogExporter (OTLP/HTTP, configured by the standard OTEL_EXPORTER_OTLP_* variables),
                         with the exporter's answers counted, so a flush knows whether its records were taken
    EvaluationExporter   the loop: a plain aiokafka consumer of its own group; offsets are committed only after
                         the records of their messages were accepted by the endpoint

At least once: a flush the endpoint refused (or that failed part-way) is retried from the first message not
committed, with capped doubling back-off, and nothing after it is consumed meanwhile; records of that flush
that did get through are sent again (`evalstream.job_id` is the same, so a backend can deduplicate). The
exporter only reads the scores topic, so an outage of the endpoint holds back this consumer group alone.
Needs the `otel` extra (opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.contracts import ScoreResultBatch, decode
from pipeline.metrics import Counters
from pipeline.otel.evaluations import EvaluationEvent, evaluation_event

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "evalstream"  # unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) names one
SCOPE = "evalstream.evaluations"
FLUSH_RECORDS = 512  # a flush after this many records (the processor's export batch size)
QUEUE_RECORDS = 65536  # the processor's queue: a message of many results fits whole


@dataclass(frozen=True)
class FlushOutcome:
    exported: int  # records the endpoint accepted since the last flush
    failed: int  # records in exports that failed (refused, unreachable, too large) or that never ran
    error: str | None = None


class _AnsweredExporter:
    """Wraps a LogRecordExporter and counts what its exports answered (the processor itself forgets)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self.exported = 0
        self.failed = 0
        self.last_error: str | None = None

    def export(self, batch: Sequence[Any]) -> Any:
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        try:
            result = self.inner.export(batch)
        except Exception as exc:  # noqa: BLE001 - an exporter bug is a failed export, counted below
            result, error = LogRecordExportResult.FAILURE, f"{type(exc).__name__}: {exc}"
        else:
            error = None if result == LogRecordExportResult.SUCCESS else "the OTLP endpoint refused or was unreachable"
        with self._lock:
            if error is None:
                self.exported += len(batch)
            else:
                self.failed += len(batch)
                self.last_error = error
        return result

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def totals(self) -> tuple[int, int, str | None]:
        with self._lock:
            return self.exported, self.failed, self.last_error


def service_resource() -> Any:
    """The SDK's resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), named `evalstream` unless they name it."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


class OtlpLogEmitter:
    """One LoggerProvider of its own (never the global one). `exporter` defaults to OTLPLogExporter(), which
    reads OTEL_EXPORTER_OTLP_LOGS_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, *_HEADERS, *_TIMEOUT, *_COMPRESSION,
    *_CERTIFICATE itself. Built at start-up: a missing extra fails there, not on the first score."""

    def __init__(self, exporter: Any = None, *, resource: Any = None) -> None:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        self._exporter = _AnsweredExporter(exporter if exporter is not None else OTLPLogExporter())
        self._provider = LoggerProvider(resource=resource if resource is not None else service_resource(),
                                        shutdown_on_exit=False)
        self._provider.add_log_record_processor(BatchLogRecordProcessor(
            self._exporter, max_queue_size=QUEUE_RECORDS, max_export_batch_size=FLUSH_RECORDS))
        self._logger = self._provider.get_logger(SCOPE)
        self._emitted = 0
        self._seen = (0, 0)

    def emit(self, event: EvaluationEvent) -> None:
        from opentelemetry._logs import SeverityNumber
        from opentelemetry.context import Context
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

        context = Context()  # never the caller's current span: the record belongs to the scored trace
        if event.trace_id:
            span = NonRecordingSpan(SpanContext(event.trace_id, event.span_id, is_remote=True,
                                                trace_flags=TraceFlags(TraceFlags.SAMPLED)))
            context = set_span_in_context(span, context)
        severity = SeverityNumber(event.severity_number)
        self._logger.emit(timestamp=event.timestamp_ns, observed_timestamp=time.time_ns(), context=context,
                          severity_number=severity, severity_text=severity.name, attributes=event.attributes,
                          event_name=event.event_name)
        self._emitted += 1

    def flush(self, timeout_ms: int = 30000) -> FlushOutcome:
        """Blocking: export every record emitted so far, and say what the endpoint answered for them."""
        self._provider.force_flush(timeout_ms)
        exported, failed, error = self._exporter.totals()
        new_exported, new_failed = exported - self._seen[0], failed - self._seen[1]
        self._seen = (exported, failed)
        missing = max(0, self._emitted - new_exported - new_failed)  # dropped by the processor, or not yet sent
        self._emitted = 0
        failed_now = new_failed + missing
        return FlushOutcome(new_exported, failed_now, error if failed_now else None)

    def shutdown(self) -> None:
        self._provider.shutdown()


class EvaluationExporter:
    def __init__(self, consumer: Any, emitter: Any, counters: Counters, *, sampling_rates: Mapping[str, float],
                 max_message_bytes: int, fetch_wait_s: float = 0.5, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, flush_records: int = FLUSH_RECORDS, flush_timeout_ms: int = 30000,
                 lag: Any = None, lag_group: str = "") -> None:
        self._consumer = consumer
        self._emitter = emitter
        self._counters = counters
        self._rates = sampling_rates
        self._max_bytes = max_message_bytes
        self._fetch_wait_s = fetch_wait_s
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._flush_records = flush_records
        self._flush_timeout_ms = flush_timeout_ms
        self._lag = lag
        self._lag_group = lag_group
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """End the loop: a fetch or back-off in progress ends at once; what was not accepted stays uncommitted."""
        self._stopping.set()

    async def run(self) -> None:
        delay = self._backoff_s
        while not self._stopping.is_set():
            batches = await self._fetch()
            if not batches:
                continue
            if await self._export(batches):
                delay = self._backoff_s
                continue
            await self._wait(delay)  # the endpoint refused: the same messages again after a back-off
            delay = min(self._max_backoff_s, delay * 2)

    async def _fetch(self) -> dict[Any, list[Any]]:
        fetch = asyncio.ensure_future(self._consumer.getmany(timeout_ms=int(self._fetch_wait_s * 1000),
                                                             max_records=self._flush_records))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not fetch.done():
                fetch.cancel()
                await asyncio.wait({fetch})
        return fetch.result() if not fetch.cancelled() else {}

    async def _wait(self, delay_s: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay_s)
        except TimeoutError:
            pass

    async def _export(self, batches: dict[Any, list[Any]]) -> bool:
        """Emit every result of these messages, flushing every `flush_records` records (at message ends) and
        committing what each flush carried. False when a flush failed: each partition is then sought back to
        its first message not committed."""
        done: dict[Any, Any] = {}  # tp -> last message flushed and committed
        pending: dict[Any, Any] = {}  # tp -> last message emitted since the last flush
        uncorrelated: list[str] = []
        emitted = 0
        for tp, messages in batches.items():
            if messages and self._lag is not None:
                self._lag.fetched(self._lag_group, tp.topic, tp.partition, messages[-1].offset)
            for message in messages:
                emitted += self._emit_message(tp, message, uncorrelated)
                pending[tp] = message
                if emitted >= self._flush_records:
                    if not await self._flush(emitted, uncorrelated, pending, done):
                        return self._rewind(batches, done)
                    emitted = 0
        if pending and not await self._flush(emitted, uncorrelated, pending, done):
            return self._rewind(batches, done)
        return True

    def _emit_message(self, tp: Any, message: Any, uncorrelated: list[str]) -> int:
        try:
            results = decode(message.value, ScoreResultBatch, max_bytes=self._max_bytes).results
        except Exception as exc:  # noqa: BLE001 - the sink dead-letters this message; here it is skipped, counted
            self._counters.inc("otel_evaluations", outcome="skipped", reason="undecodable")
            log.error("otel-export: skipped undecodable message %s[%d]@%d: %s", tp.topic, tp.partition,
                      message.offset, exc)
            return 0
        now = time.time_ns()
        for result in results:
            event = evaluation_event(result, sampling_rate=self._rates.get(result.rule), now_ns=now)
            if event.uncorrelated:
                uncorrelated.append(event.uncorrelated)
            self._emitter.emit(event)
        return len(results)

    async def _flush(self, emitted: int, uncorrelated: list[str], pending: dict[Any, Any],
                     done: dict[Any, Any]) -> bool:
        outcome = await asyncio.to_thread(self._emitter.flush, self._flush_timeout_ms)
        if outcome.failed:
            self._counters.inc("otel_evaluations", outcome.failed, outcome="failed", reason="export")
            first = {f"{tp.topic}[{tp.partition}]@{m.offset}" for tp, m in pending.items()}
            log.error("otel-export: the OTLP logs endpoint did not take %d of %d evaluation records (%s); messages "
                      "up to %s are not committed and are sent again", outcome.failed, emitted, outcome.error,
                      ", ".join(sorted(first)))
            uncorrelated.clear()
            return False
        if outcome.exported:
            self._counters.inc("otel_evaluations", outcome.exported, outcome="exported", reason="")
        for reason in uncorrelated:
            self._counters.inc("otel_evaluations_uncorrelated", reason=reason)
        uncorrelated.clear()
        await self._commit(pending)
        done.update(pending)
        pending.clear()
        return True

    async def _commit(self, pending: dict[Any, Any]) -> None:
        offsets = {tp: message.offset + 1 for tp, message in pending.items()}
        try:
            await self._consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - a rebalance took the partition: its new owner sends these again
            log.warning("otel-export: commit of %s failed (%r); those records may be exported twice",
                        {f"{tp.topic}[{tp.partition}]": o for tp, o in offsets.items()}, exc)
            return
        if self._lag is not None:
            for tp, message in pending.items():
                ts = message.timestamp / 1000 if message.timestamp is not None else None
                self._lag.processed(self._lag_group, tp.topic, tp.partition, message.offset, ts)

    def _rewind(self, batches: dict[Any, list[Any]], done: dict[Any, Any]) -> bool:
        for tp, messages in batches.items():
            if not messages:
                continue
            committed = done.get(tp)
            offset = committed.offset + 1 if committed is not None else messages[0].offset
            if committed is not None and committed is messages[-1]:
                continue
            try:
                self._consumer.seek(tp, offset)
            except Exception as exc:  # noqa: BLE001 - no longer assigned: the new owner reads from the commit
                log.warning("otel-export: could not seek %s[%d] back to %d (%r)", tp.topic, tp.partition, offset, exc)
        return False
