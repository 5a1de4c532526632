"""`EvalstreamSpanExporter`: an OpenTelemetry SDK SpanExporter that sends spans to evalstream.

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from pipeline.otel.exporter import EvalstreamSpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(EvalstreamSpanExporter(project="support-bot")))

Each span is mapped to our wire format (`pipeline.otel.mapping`) and handed to the SDK's background
publisher, which batches spans per trace and publishes them to Kafka. `export` never blocks on the
network and never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

try:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "pipeline.otel.exporter needs the OpenTelemetry SDK: pip install evalstream[otel]") from exc

from pipeline.otel.mapping import DEFAULT_MAX_VALUE_BYTES, OtelSpan, check_span, to_wire_span
from pipeline.otel.values import plain
from pipeline.sdk.config import SDKConfig

log = logging.getLogger("evalstream.otel")

DEFAULT_BOOTSTRAP = "localhost:9092"


class WirePublisher(Protocol):
    """The part of `pipeline.sdk.exporter.KafkaSpanExporter` this exporter relies on."""

    sent: int
    dropped: int
    failed: int

    def emit_wire(self, span: dict[str, Any], ends_trace: bool) -> None: ...
    def flush(self, timeout_s: float = 10.0) -> bool: ...
    def shutdown(self, timeout_s: float = 10.0) -> None: ...


def to_otel_span(span: ReadableSpan) -> OtelSpan:
    context = span.context
    parent = span.parent
    return OtelSpan(
        trace_id=f"{context.trace_id:032x}" if context else "",
        span_id=f"{context.span_id:016x}" if context else "",
        parent_span_id=f"{parent.span_id:016x}" if parent is not None else None,
        name=span.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
        status_code=span.status.status_code.value,
        status_message=span.status.description or "",
        # plain(): tuples become lists, as they do when the same span arrives over OTLP
        attributes=plain(dict(span.attributes or {})),
        events=[(event.name, plain(dict(event.attributes or {}))) for event in span.events],
        resource=plain(dict(span.resource.attributes)) if span.resource is not None else {},
        scope=span.instrumentation_scope.name if span.instrumentation_scope is not None else None,
        kind=span.kind.value + 1 if span.kind is not None else 0,  # the API's SpanKind counts from INTERNAL = 0
    )


class EvalstreamSpanExporter(SpanExporter):
    """Configuration is resolved as the SDK's (`sdk/config.py`): argument > `EVALSTREAM_KAFKA_BOOTSTRAP` /
    `EVALSTREAM_PROJECT` (and the SDK's queue and Kafka TLS / SASL variables) > default (`localhost:9092`,
    project `default`). A span's `evalstream.project` attribute (or its resource's) overrides the project."""

    def __init__(self, bootstrap_servers: str | None = None, project: str | None = None, *,
                 max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
                 publisher: WirePublisher | None = None) -> None:
        config = SDKConfig.resolve(project=project or None, bootstrap_servers=bootstrap_servers or None)
        self.bootstrap_servers = config.bootstrap_servers or DEFAULT_BOOTSTRAP
        self.project = config.project
        self.max_value_bytes = max_value_bytes
        if publisher is None:
            from pipeline.sdk.exporter import KafkaSpanExporter

            publisher = KafkaSpanExporter(self.bootstrap_servers, max_queue_size=config.max_queue_size,
                                          flush_interval_s=config.flush_interval_s,
                                          kafka_options=config.kafka_options)
        self._publisher = publisher
        self.invalid = 0  # spans that could not be mapped (e.g. an empty name) and were not sent
        self._warned: set[str] = set()
        self._shut_down = False

    @property
    def sent(self) -> int:
        return self._publisher.sent

    @property
    def dropped(self) -> int:
        """Spans dropped because the publisher's queue was full."""
        return self._publisher.dropped

    @property
    def failed(self) -> int:
        return self._publisher.failed

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut_down:
            return SpanExportResult.FAILURE
        try:
            return self._export(spans)
        except Exception:  # export must never raise into the OpenTelemetry SDK
            log.exception("evalstream: exporting %d spans failed", len(spans))
            return SpanExportResult.FAILURE

    def _export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        roots: list[dict[str, Any]] = []
        dropped_before = self._publisher.dropped
        ok = True
        for readable in spans:
            try:
                span = to_otel_span(readable)
                problem = check_span(span)
                wire = None if problem else to_wire_span(span, self.project,
                                                         max_value_bytes=self.max_value_bytes)
            except Exception as exc:  # noqa: BLE001 - one odd span must not cost the others
                problem, wire = ("span", repr(exc)), None
            if wire is None:
                self.invalid += 1
                ok = False
                field, reason = problem or ("span", "unknown")
                # Once per kind of problem: a misconfigured instrumentation would otherwise flood the log.
                level = logging.DEBUG if field in self._warned else logging.WARNING
                self._warned.add(field)
                log.log(level, "evalstream: span %r of trace %s was not sent (%d so far): %s",
                        getattr(readable, "name", "?"), _trace_id(readable), self.invalid, reason)
                continue
            if span.is_root:
                roots.append(wire)
            else:
                self._publisher.emit_wire(wire, False)
        # Roots last: the root's batch is `final`, and the pipeline closes the trace when it arrives.
        for wire in roots:
            self._publisher.emit_wire(wire, True)
        if self._publisher.dropped != dropped_before:
            ok = False
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until everything exported so far is published. (`TracerProvider.force_flush` does not
        call this: it only hands queued spans to `export`; `TracerProvider.shutdown` does publish.)"""
        return self._publisher.flush(timeout_millis / 1000)

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        # BatchSpanProcessor passes what is left of its own timeout when the signature takes one.
        if not self._shut_down:
            self._shut_down = True
            self._publisher.shutdown(max(0.0, timeout_millis / 1000))


def _trace_id(span: Any) -> str:
    context = getattr(span, "context", None)
    return f"{context.trace_id:032x}" if context is not None else "?"
