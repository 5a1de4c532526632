"""EvalstreamSpanExporter inside the OpenTelemetry SDK, with a fake publisher in place of Kafka."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from pipeline.contracts import Span
from pipeline.otel import EvalstreamSpanExporter

ROOT_DIR = Path(__file__).resolve().parents[2]


class FakePublisher:
    def __init__(self, *, full: bool = False, broken: bool = False) -> None:
        self.emitted: list[tuple[dict[str, Any], bool]] = []
        self.full = full
        self.broken = broken
        self.sent = self.dropped = self.failed = 0
        self.flushed: list[float] = []
        self.shut_down: list[float] = []

    def emit_wire(self, span: dict[str, Any], ends_trace: bool) -> None:
        if self.broken:
            raise RuntimeError("publisher bug")
        if self.full:
            self.dropped += 1
            return
        self.emitted.append((span, ends_trace))

    def flush(self, timeout_s: float = 10.0) -> bool:
        self.flushed.append(timeout_s)
        return True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        self.shut_down.append(timeout_s)


def provider_with(exporter: EvalstreamSpanExporter) -> TracerProvider:
    provider = TracerProvider(resource=Resource({"service.name": "bot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def test_spans_are_mapped_and_the_root_ends_the_trace() -> None:
    publisher = FakePublisher()
    exporter = EvalstreamSpanExporter(project="support", publisher=publisher)
    tracer = provider_with(exporter).get_tracer("app")
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}
    chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    with (tracer.start_as_current_span("invoke_agent planner", attributes=agent),
          tracer.start_as_current_span("chat", attributes=chat) as llm):
        llm.set_status(Status(StatusCode.ERROR, "rate limited"))
    (child, child_ends), (root, root_ends) = publisher.emitted
    for span in (child, root):
        Span.model_validate(span)
    assert (child["name"], child["span_type"], child["model"]) == ("chat", "llm", "gpt-4o")
    assert child["status"] == "error"
    assert child["error"]["message"] == "rate limited" and not child_ends
    assert root["span_type"] == "agent" and root["agent_name"] == "planner" and root_ends
    assert child["parent_span_id"] == root["span_id"] and child["trace_id"] == root["trace_id"]
    assert root["project"] == "support" and root["service"] == "bot"


def test_roots_are_emitted_after_the_other_spans_of_one_export() -> None:
    publisher = FakePublisher()
    exporter = EvalstreamSpanExporter(publisher=publisher)
    memory_provider = TracerProvider()
    memory = InMemorySpanExporter()
    memory_provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = memory_provider.get_tracer("app")
    with tracer.start_as_current_span("root"), tracer.start_as_current_span("child"):
        pass
    spans = list(memory.get_finished_spans())
    assert exporter.export(list(reversed(spans))) is SpanExportResult.SUCCESS  # root first on purpose
    assert [(s["name"], ends) for s, ends in publisher.emitted] == [("child", False), ("root", True)]


def test_configuration_argument_then_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVALSTREAM_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("EVALSTREAM_PROJECT", raising=False)
    default = EvalstreamSpanExporter(publisher=FakePublisher())
    assert (default.bootstrap_servers, default.project) == ("localhost:9092", "default")
    monkeypatch.setenv("EVALSTREAM_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("EVALSTREAM_PROJECT", "from-env")
    from_env = EvalstreamSpanExporter(publisher=FakePublisher())
    assert (from_env.bootstrap_servers, from_env.project) == ("kafka:9092", "from-env")
    explicit = EvalstreamSpanExporter("broker:1", "mine", publisher=FakePublisher())
    assert (explicit.bootstrap_servers, explicit.project) == ("broker:1", "mine")


def test_export_never_raises_and_reports_failure() -> None:
    broken = EvalstreamSpanExporter(publisher=FakePublisher(broken=True))
    tracer = provider_with(broken).get_tracer("app")
    with tracer.start_as_current_span("work"):
        pass  # would raise out of the `with` if export raised

    full = FakePublisher(full=True)
    exporter = EvalstreamSpanExporter(publisher=full)
    provider = provider_with(exporter)
    with provider.get_tracer("app").start_as_current_span("work") as span:
        pass
    assert exporter.dropped == 1
    assert exporter.export([span]) is SpanExportResult.FAILURE  # type: ignore[list-item]


def test_a_span_that_cannot_be_mapped_is_counted_and_the_rest_are_sent() -> None:
    publisher = FakePublisher()
    exporter = EvalstreamSpanExporter(publisher=publisher)
    tracer = provider_with(exporter).get_tracer("app")
    with tracer.start_as_current_span("root"), tracer.start_as_current_span(""):  # the contract needs a name
        pass
    assert exporter.invalid == 1
    assert [s["name"] for s, _ in publisher.emitted] == ["root"]


def test_flush_and_shutdown_delegate_and_export_after_shutdown_fails() -> None:
    publisher = FakePublisher()
    exporter = EvalstreamSpanExporter(publisher=publisher)
    assert exporter.force_flush(2500) is True and publisher.flushed == [2.5]
    provider = provider_with(exporter)
    with provider.get_tracer("app").start_as_current_span("late") as span:
        pass
    provider.shutdown()  # SimpleSpanProcessor: no timeout passed, so the default 30 s
    assert publisher.shut_down == [30.0]
    assert exporter.export([span]) is SpanExportResult.FAILURE  # type: ignore[list-item]


SCRIPT = textwrap.dedent("""
    import json, sys

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    import pipeline.otel.mapping  # pure: works without OpenTelemetry
    try:
        from pipeline.otel import EvalstreamSpanExporter
    except ImportError as exc:
        print(json.dumps({"error": str(exc)}))
    else:
        print(json.dumps({"error": None}))
""")


def test_exporter_without_the_otel_sdk_says_what_to_install() -> None:
    env = {k: v for k, v in os.environ.items() if k != "EVALSTREAM_KAFKA_BOOTSTRAP"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT_DIR,
                          env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    error = json.loads(proc.stdout.strip().splitlines()[-1])["error"]
    assert error is not None and "pip install evalstream[otel]" in error
