"""The otel-export role (issue 20): with it on, a local OTLP/HTTP logs endpoint receives exactly one
`gen_ai.evaluation.result` per stored score, on the scored trace's root span, with the score's values; with
the endpoint down, the rest of the pipeline goes on scoring and storing, the exporter's failures are counted
and logged, nothing is committed, and once the endpoint answers every score arrives."""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from pipeline import topics
from tests.integration.harness import WorkerProcess, batch, committed_offsets, produce, span
from tests.integration.test_metrics import metrics_url, scrape

pytestmark = pytest.mark.integration

N = 12
RULES = """
rules:
  - {name: errors, scorer: error_spans}
  - {name: latency, scorer: trace_latency, params: {max_ms: 100}, sampling_rate: 0.5}
"""
ROLES = "assembler,router,scorer,alerter,otel-export"


class LogsEndpoint:
    """An OTLP/HTTP logs endpoint on 127.0.0.1: decodes each ExportLogsServiceRequest and keeps its records."""

    def __init__(self, port: int = 0) -> None:
        self.records: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []  # (record, attributes, resource)
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportLogsServiceRequest.FromString(body)
                for resource_logs in request.resource_logs:
                    resource = {kv.key: _value(kv.value) for kv in resource_logs.resource.attributes}
                    for scope_logs in resource_logs.scope_logs:
                        for record in scope_logs.log_records:
                            outer.records.append((record, {kv.key: _value(kv.value) for kv in record.attributes},
                                                  resource))
                outer.requests += 1
                payload = ExportLogsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/logs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value")) if any_value.WhichOneof("value") else None


@pytest.fixture
def endpoint() -> Iterator[LogsEndpoint]:
    server = LogsEndpoint()
    try:
        yield server
    finally:
        server.close()


def trace(i: int) -> tuple[str, str, tuple[bytes, bytes]]:
    trace_id = f"{i + 1:032x}"
    root_id = f"{0xA000 + i:016x}"
    root = span(trace_id, root_id, None, "handle", dur_ms=50 + (i % 4) * 40)
    tool = span(trace_id, f"{0xB000 + i:016x}", root_id, "search", span_type="tool",
                status="error" if i % 3 == 0 else "ok")
    return trace_id, root_id, (trace_id.encode(), batch(trace_id, [root, tool], final=True))


def worker(tmp_path: Path, broker: str, logs_url: str, **env: str) -> WorkerProcess:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return WorkerProcess(tmp_path / "worker", broker, rules, {
        "EVALSTREAM_ROLES": ROLES, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": logs_url, **env})


def stored_scores(w: WorkerProcess) -> dict[str, list[Any]]:
    rows = w.query("SELECT job_id, rule, trace_id, value, passed, status FROM evalstream.scores FINAL")
    return {row[0]: row for row in rows}


def assert_one_event_per_score(received: list[tuple[Any, dict[str, Any], dict[str, Any]]],
                               scores: dict[str, list[Any]], roots: dict[str, str]) -> None:
    by_job = {}
    for record, attrs, resource in received:
        assert record.event_name == "gen_ai.evaluation.result"
        assert resource["service.name"] == "evalstream"
        by_job.setdefault(attrs["evalstream.job_id"], []).append((record, attrs))
    assert sorted(by_job) == sorted(scores)  # every stored score, and nothing else
    for job_id, events in by_job.items():
        _, rule, trace_id, value, passed, status = scores[job_id]
        records = {(r.trace_id, r.span_id, a["gen_ai.evaluation.score.value"], a.get("gen_ai.evaluation.score.label"))
                   for r, a in events}
        assert len(records) == 1, events  # a redelivery sends the same record, never another verdict
        (tid, sid, score, label), = records
        assert tid.hex() == trace_id and sid.hex() == roots[trace_id]
        assert events[0][1]["gen_ai.evaluation.name"] == rule and status == "scored"
        assert score == value
        assert label == ("pass" if passed else "fail")


def test_every_stored_score_arrives_as_one_evaluation_event_on_its_root_span(
        broker: str, tmp_path: Path, endpoint: LogsEndpoint) -> None:
    traces = [trace(i) for i in range(N)]
    roots = {trace_id: root for trace_id, root, _ in traces}
    w = worker(tmp_path, broker, endpoint.url).start()
    try:
        produce(broker, [message for _, _, message in traces])
        w.wait_for(lambda: w.scalar("SELECT countIf(outcome = 'queued') FROM evalstream.decisions_current") == 0
                   and w.scalar("SELECT count() FROM evalstream.decisions_current "
                                "WHERE outcome IN ('scored', 'failed')") >= N + 1, timeout_s=90, what="every job scored")
        scores = stored_scores(w)
        w.wait_for(lambda: len({a["evalstream.job_id"] for _, a, _ in endpoint.records}) >= len(scores),
                   timeout_s=60, what="an evaluation event per score")
        assert_one_event_per_score(endpoint.records, scores, roots)
        errors = [a for _, a, _ in endpoint.records if a["gen_ai.evaluation.name"] == "errors"]
        assert all(a["evalstream.sampling_rate"] == 1.0 for a in errors)
        assert sum(a["gen_ai.evaluation.score.label"] == "fail" for a in errors) == (N + 2) // 3
        url = metrics_url(w)
        w.wait_for(lambda: scrape(url).get("evalstream_otel_evaluations_total", {}).get(
            (("outcome", "exported"), ("reason", ""))) == len(endpoint.records), timeout_s=10,
            what="the exported records counted")
    finally:
        w.stop()


def test_a_down_endpoint_leaves_the_pipeline_scoring_counts_its_failures_and_loses_nothing(
        broker: str, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on (yet)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    traces = [trace(i) for i in range(N)]
    roots = {trace_id: root for trace_id, root, _ in traces}
    w = worker(tmp_path, broker, f"http://127.0.0.1:{port}/v1/logs", OTEL_EXPORTER_OTLP_LOGS_TIMEOUT="1").start()
    server: LogsEndpoint | None = None
    try:
        produce(broker, [message for _, _, message in traces])
        w.wait_for(lambda: w.scalar("SELECT countIf(outcome = 'queued') FROM evalstream.decisions_current") == 0
                   and w.scalar("SELECT count() FROM evalstream.decisions_current "
                                "WHERE outcome IN ('scored', 'failed')") >= N + 1, timeout_s=90,
                   what="every job scored and stored while the OTLP endpoint is down")
        url = metrics_url(w)
        w.wait_for(lambda: scrape(url).get("evalstream_otel_evaluations_total", {}).get(
            (("outcome", "failed"), ("reason", "export")), 0) > 0, timeout_s=30, what="the failures counted")
        assert "the OTLP logs endpoint did not take" in w.log_path.read_text(errors="replace")
        assert set(committed_offsets(broker, "evalstream-otel-export", topics.SCORES, 4).values()) == {-1}

        server = LogsEndpoint(port)  # the endpoint comes back: what it missed arrives, once per score
        scores = stored_scores(w)
        w.wait_for(lambda: len({a["evalstream.job_id"] for _, a, _ in server.records}) >= len(scores),
                   timeout_s=90, what="the missed scores exported after the outage")
        assert_one_event_per_score(server.records, scores, roots)
        assert w.process is not None and w.process.poll() is None
    finally:
        w.stop()
        if server is not None:
            server.close()
