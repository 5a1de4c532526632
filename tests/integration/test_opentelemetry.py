"""An app instrumented only with opentelemetry-sdk, exported through our exporter and, separately,
through opentelemetry-exporter-otlp-proto-http to `evalstream otlp`, produces the same pipeline trace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from pipeline.embedded import free_port
from pipeline.otel.exporter import EvalstreamSpanExporter
from tests.integration.harness import FAST_ENV, WorkerProcess

pytestmark = pytest.mark.integration

PROJECT = "otel-itest"
TOKEN = "itest-token"
RULES = f"""
rules:
  - name: otel-errors
    scorer: error_spans
    filter: {{project: {PROJECT}}}
"""
MESSAGES_IN = [{"role": "user", "parts": [{"type": "text", "content": "Find the refund policy"}]}]
MESSAGES_OUT = [{"role": "assistant", "parts": [{"type": "tool_call", "name": "search"}]}]


def run_agent_app(exporter: SpanExporter) -> str:
    """A small agent instrumented with the OpenTelemetry SDK only; returns its trace id."""
    provider = TracerProvider(resource=Resource({"service.name": "refund-agent"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("itest.agent")
    with tracer.start_as_current_span("invoke_agent support", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support",
        "gen_ai.agent.id": "agent-42", "gen_ai.conversation.id": "conv-7",
    }) as root:
        with tracer.start_as_current_span("chat gpt-4o", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 120,
            "gen_ai.usage.output_tokens": 18, "gen_ai.input.messages": json.dumps(MESSAGES_IN),
            "gen_ai.output.messages": json.dumps(MESSAGES_OUT), "gen_ai.request.temperature": 0.1,
        }):
            pass
        with tracer.start_as_current_span("execute_tool search", attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
            "gen_ai.tool.call.arguments": json.dumps({"query": "refund policy"}),
            "gen_ai.tool.call.result": "Refunds within 30 days",
        }):
            pass
        try:
            with tracer.start_as_current_span("execute_tool fetch_page", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "fetch_page",
                "gen_ai.tool.call.arguments": json.dumps({"url": "https://example.com/refunds"}),
            }):
                raise TimeoutError("page took longer than 5s")
        except TimeoutError:
            pass
        trace_id = f"{root.get_span_context().trace_id:032x}"
    provider.shutdown()  # exports what is queued and shuts the exporter down, which publishes
    return trace_id


class Receiver:
    """`evalstream otlp` as a subprocess."""

    def __init__(self, data_dir: Path, bootstrap: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "otlp.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **FAST_ENV, "EVALSTREAM_DATA_DIR": str(data_dir),
               "EVALSTREAM_KAFKA_BOOTSTRAP": bootstrap, "EVALSTREAM_OTLP_TOKEN": TOKEN}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "otlp", "--port", str(self.port),
                 "--project", PROJECT],
                env=env, stdout=log, stderr=subprocess.STDOUT)

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
            return json.loads(response.read())

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"evalstream otlp exited:\n{self.log_path.read_text()}"
            try:
                self.health()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"evalstream otlp not ready in {timeout_s}s:\n{self.log_path.read_text()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


SPAN_COLUMNS = ["span_id", "parent_span_id", "name", "span_type", "status", "error_type", "error_message",
                "agent_name", "agent_id", "session_id", "model", "input_tokens", "output_tokens",
                "total_tokens", "project", "service", "inputs", "outputs", "attributes"]


def span_shape(worker: WorkerProcess, trace_id: str) -> dict[str, dict[str, Any]]:
    """The trace's spans by name, with ids replaced by the parent's name and JSON columns parsed."""
    rows = [dict(zip(SPAN_COLUMNS, row, strict=True)) for row in worker.query(
        f"SELECT {', '.join(SPAN_COLUMNS)} FROM evalstream.spans FINAL WHERE trace_id = '{trace_id}'")]
    names = {row["span_id"]: row["name"] for row in rows}
    shape = {}
    for row in rows:
        row["parent"] = names.get(row.pop("parent_span_id"), None)
        del row["span_id"]
        for column in ("inputs", "outputs", "attributes"):
            row[column] = json.loads(row[column]) if row[column] and row[column][0] in "[{" else row[column]
        shape[row.pop("name")] = row
    return shape


def test_otel_sdk_app_gives_the_same_trace_through_the_exporter_and_through_otlp(broker: str,
                                                                                 tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    receiver = Receiver(tmp_path / "otlp", broker)
    worker = WorkerProcess(tmp_path / "data", broker, rules)
    try:
        # Both routes publish before the worker is up: it reads the spans topic from the start.
        via_exporter = run_agent_app(EvalstreamSpanExporter(broker, project=PROJECT))
        receiver.wait_ready()
        otlp = OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces", compression=Compression.Gzip,
                                headers={"Authorization": f"Bearer {TOKEN}"})
        via_otlp = run_agent_app(otlp)
        health = receiver.health()
        assert health["accepted_spans"] == 4 and not any(health["rejected"].values()), health

        worker.start()
        ids = f"'{via_exporter}', '{via_otlp}'"
        scored = ("SELECT count() FROM evalstream.scores_current "
                  f"WHERE rule = 'otel-errors' AND trace_id IN ({ids})")
        worker.wait_for(lambda: worker.scalar(scored) == 2, timeout_s=40, what="both traces scored")

        traces = {row[0]: row[1:] for row in worker.query(
            "SELECT trace_id, project, status, close_reason, name, span_count, error_count, agents, "
            f"total_tokens FROM evalstream.traces_current WHERE trace_id IN ({ids})")}
        expected_trace = [PROJECT, "complete", "final_marker", "invoke_agent support", 4, 1, ["support"], 138]
        assert traces[via_exporter] == expected_trace
        assert traces[via_otlp] == expected_trace

        exported, received = span_shape(worker, via_exporter), span_shape(worker, via_otlp)
        assert exported == received

        root, llm = exported["invoke_agent support"], exported["chat gpt-4o"]
        search, fetch = exported["execute_tool search"], exported["execute_tool fetch_page"]
        assert root["parent"] is None
        assert {llm["parent"], search["parent"], fetch["parent"]} == {"invoke_agent support"}
        assert (root["span_type"], root["agent_name"], root["agent_id"], root["session_id"]) == (
            "agent", "support", "agent-42", "conv-7")
        assert (llm["span_type"], llm["model"]) == ("llm", "gpt-4o-2024-08-06")
        assert (llm["input_tokens"], llm["output_tokens"], llm["total_tokens"]) == (120, 18, 138)
        assert llm["inputs"] == MESSAGES_IN and llm["outputs"] == MESSAGES_OUT
        assert (search["span_type"], search["inputs"], search["outputs"]) == (
            "tool", {"query": "refund policy"}, "Refunds within 30 days")
        assert (fetch["status"], fetch["error_type"], fetch["error_message"]) == (
            "error", "TimeoutError", "page took longer than 5s")
        assert {s["status"] for s in (root, llm, search)} == {"ok"}
        assert {s["project"] for s in exported.values()} == {PROJECT}
        assert {s["service"] for s in exported.values()} == {"refund-agent"}

        passed = worker.query("SELECT trace_id, passed FROM evalstream.scores_current "
                              f"WHERE rule = 'otel-errors' AND trace_id IN ({ids})")
        assert sorted(passed) == sorted([[via_exporter, False], [via_otlp, False]])  # the error span is seen
    finally:
        worker.stop()
        exit_code = receiver.stop()
    assert exit_code == 0, receiver.log_path.read_text()
