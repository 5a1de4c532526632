"""A test kit for users' own tests: record spans in memory with predictable ids and time.

    from pipeline.sdk.testing import recording_tracer

    def test_my_agent():
        tracer, spans = recording_tracer()
        run_agent(tracer)
        assert spans.by_name()["search"]["agent_name"] == "researcher"

Spans are converted exactly as the Kafka exporter converts them (redaction and caps included),
but synchronously, so they are visible as soon as they end.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import orjson

from pipeline.sdk.exporter import Exportable
from pipeline.sdk.tracer import Tracer


class InMemoryExporter:
    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.final_traces: list[str] = []

    def emit(self, item: Exportable) -> None:
        span, ends_trace = item.to_wire()
        span = orjson.loads(orjson.dumps(span, default=str))  # exactly what would go over the wire
        self.spans.append(span)
        if ends_trace:
            self.final_traces.append(span["trace_id"])

    def flush(self, timeout_s: float = 10.0) -> bool:
        return True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        return None

    def stats(self) -> dict[str, int]:
        return {"queued": 0, "sent": len(self.spans), "dropped": 0, "failed": 0}

    def clear(self) -> None:
        self.spans.clear()
        self.final_traces.clear()

    def names(self) -> list[str]:
        """Span names in the order the spans ended."""
        return [s["name"] for s in self.spans]

    def by_name(self) -> dict[str, dict[str, Any]]:
        """The last ended span of each name."""
        return {s["name"]: s for s in self.spans}

    def traces(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for span in self.spans:
            grouped[span["trace_id"]].append(span)
        return dict(grouped)


class SequentialIds:
    """Trace ids 1, 2, 3…; span ids 1, 2, 3… (as hex: 000…001)."""

    def __init__(self) -> None:
        self._traces = itertools.count(1)
        self._spans = itertools.count(1)

    def trace_id(self) -> int:
        return next(self._traces)

    def span_id(self) -> int:
        return next(self._spans)


class FakeClock:
    """Starts at `start_ns`; every reading advances it by `step_ns` (so durations are predictable)."""

    def __init__(self, start_ns: int = 1_700_000_000_000_000_000, step_ns: int = 1_000_000) -> None:
        self.now_ns = start_ns
        self.step_ns = step_ns

    def __call__(self) -> int:
        now = self.now_ns
        self.now_ns += self.step_ns
        return now

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * 1e9)


def recording_tracer(project: str = "test", **options: Any) -> tuple[Tracer, InMemoryExporter]:
    """A Tracer that records into memory, with sequential ids and a fake clock (override via options)."""
    exporter = InMemoryExporter()
    options.setdefault("id_generator", SequentialIds())
    options.setdefault("clock", FakeClock())
    options.setdefault("enabled", True)
    return Tracer(project, exporter=exporter, **options), exporter
