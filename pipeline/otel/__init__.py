"""OpenTelemetry in: keep your OpenTelemetry instrumentation and send its spans to evalstream.

    mapping    an OpenTelemetry span -> our wire span (pure: stdlib and orjson)
    exporter   EvalstreamSpanExporter, a SpanExporter for the OpenTelemetry SDK (extra `otel`)

`pipeline.otel.EvalstreamSpanExporter` is imported on first use, so importing this package does not
need the OpenTelemetry SDK.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EvalstreamSpanExporter"]


def __getattr__(name: str) -> Any:
    if name == "EvalstreamSpanExporter":
        from pipeline.otel.exporter import EvalstreamSpanExporter

        return EvalstreamSpanExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
