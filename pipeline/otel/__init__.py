"""OpenTelemetry in: keep your OpenTelemetry instrumentation and send its spans to evalstream.

    mapping    an OpenTelemetry span -> our wire span (pure: stdlib and orjson)
    exporter   EvalstreamSpanExporter, a SpanExporter for the OpenTelemetry SDK (extra `otel`)
    otlp       OTLP/HTTP trace requests (protobuf, JSON) -> spans, and the response bodies
    batches    wire spans -> SpanBatch messages per trace, under the message size limit
    publisher  publishing those messages and waiting for the broker's acks
    receiver   the `evalstream otlp` HTTP app

`pipeline.otel.EvalstreamSpanExporter` is imported on first use, so importing this package needs
neither the OpenTelemetry SDK nor the receiver's dependencies.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EvalstreamSpanExporter"]


def __getattr__(name: str) -> Any:
    if name == "EvalstreamSpanExporter":
        from pipeline.otel.exporter import EvalstreamSpanExporter

        return EvalstreamSpanExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
