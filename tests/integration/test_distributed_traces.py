"""Issue 17: a trace that crosses services is judged once, whole. Whichever service exports last, and however
late within `remote_wait_s`, the pipeline stores one version with every span and scores it once per rule.

Every scenario makes the callee's spans arrive after the caller's root, so a pipeline that closed on the
caller's `final` marker (or after the 1 s quiet period) would store a version 2; each test checks that this
ordering really happened before it checks the result.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from pipeline.sdk import Tracer, inject
from tests.integration.harness import WorkerProcess
from tests.integration.test_opentelemetry import PROJECT as OTLP_PROJECT
from tests.integration.test_opentelemetry import TOKEN, Receiver

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROJECT = "distributed"
RULES = """
rules:
  - {name: errors, scorer: error_spans}
  - {name: latency, scorer: trace_latency, params: {max_ms: 600000}}
"""
RULE_NAMES = ("errors", "latency")


def start_worker(tmp_path: Path, broker: str) -> WorkerProcess:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return WorkerProcess(tmp_path / "data", broker, rules).start()


def versions(worker: WorkerProcess, trace_id: str) -> list[list[Any]]:
    return worker.query("SELECT version, span_count, status, close_reason FROM evalstream.traces FINAL "
                        f"WHERE trace_id = '{trace_id}' ORDER BY version")


def wait_scored(worker: WorkerProcess, trace_id: str, timeout_s: float = 40) -> None:
    """Every rule scored the trace, and its first version is stored."""
    worker.wait_for(lambda: worker.scalar(f"SELECT uniqExact(rule) FROM evalstream.scores FINAL "
                                          f"WHERE trace_id = '{trace_id}'") == len(RULE_NAMES)
                    and worker.scalar(f"SELECT count() FROM evalstream.traces FINAL "
                                      f"WHERE trace_id = '{trace_id}'") >= 1,
                    timeout_s=timeout_s, what=f"trace {trace_id} stored and scored by every rule")


def scores_per_rule(worker: WorkerProcess, trace_id: str) -> list[list[Any]]:
    """(rule, trace_version, rows): every score row ever stored for the trace, not only the current ones."""
    return worker.query("SELECT rule, trace_version, count() FROM evalstream.scores FINAL "
                        f"WHERE trace_id = '{trace_id}' GROUP BY rule, trace_version ORDER BY rule, trace_version")


def waited_for(worker: WorkerProcess, trace_id: str) -> list[dict[str, Any]]:
    raw = worker.scalar(f"SELECT waited_for FROM evalstream.traces FINAL WHERE trace_id = '{trace_id}' "
                        "AND version = 1")
    return json.loads(raw) if raw else []


def test_two_otel_services_through_otlp_are_one_version_though_the_callee_exports_5s_later(
        broker: str, tmp_path: Path) -> None:
    receiver = Receiver(tmp_path / "otlp", broker)
    worker = start_worker(tmp_path, broker)
    providers: list[TracerProvider] = []

    def service(name: str, **batching: Any) -> Any:
        provider = TracerProvider(resource=Resource({"service.name": name}))
        exporter = OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces",
                                    headers={"Authorization": f"Bearer {TOKEN}"})
        provider.add_span_processor(BatchSpanProcessor(exporter, **batching))
        providers.append(provider)
        return provider.get_tracer(f"itest.{name}")

    try:
        receiver.wait_ready()
        tracer_a = service("checkout-svc", schedule_delay_millis=200)
        tracer_b = service("inventory-svc")  # OpenTelemetry's default: exports every 5 s

        def serve_inventory(headers: dict[str, str]) -> None:  # service B, behind an HTTP call
            with tracer_b.start_as_current_span("GET /inventory", context=propagate.extract(headers),
                                                kind=SpanKind.SERVER):
                with tracer_b.start_as_current_span("query stock"):
                    pass
                with tracer_b.start_as_current_span("reserve items"):
                    pass

        with tracer_a.start_as_current_span("POST /checkout", kind=SpanKind.SERVER) as root:
            with tracer_a.start_as_current_span("validate cart"):
                pass
            with tracer_a.start_as_current_span("GET inventory", kind=SpanKind.CLIENT) as call:
                headers: dict[str, str] = {}
                propagate.inject(headers)
                assert "traceparent" in headers
                serve_inventory(headers)
        trace_id = f"{root.get_span_context().trace_id:032x}"
        call_id = f"{call.get_span_context().span_id:016x}"

        # The order under test: A's three spans (its root among them) are in Kafka, B's are not yet.
        deadline = time.monotonic() + 20
        while receiver.health()["accepted_spans"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.health()["accepted_spans"] == 3, ("service A exported, service B not yet",
                                                          receiver.health())

        wait_scored(worker, trace_id)
        assert versions(worker, trace_id) == [[1, 6, "complete", "final_marker"]]
        assert receiver.health()["accepted_spans"] == 6  # B's spans came by its own 5 s schedule
        assert scores_per_rule(worker, trace_id) == [[rule, 1, 1] for rule in RULE_NAMES]
        assert [(w["span_id"], w["name"], w["answered"]) for w in waited_for(worker, trace_id)] == [
            (call_id, "GET inventory", True)]

        spans = {row[0]: row[1:] for row in worker.query(
            "SELECT name, kind, service, trace_version, project FROM evalstream.spans FINAL "
            f"WHERE trace_id = '{trace_id}'")}
        assert spans == {
            "POST /checkout": ["server", "checkout-svc", 1, OTLP_PROJECT],
            "validate cart": ["internal", "checkout-svc", 1, OTLP_PROJECT],
            "GET inventory": ["client", "checkout-svc", 1, OTLP_PROJECT],
            "GET /inventory": ["server", "inventory-svc", 1, OTLP_PROJECT],
            "query stock": ["internal", "inventory-svc", 1, OTLP_PROJECT],
            "reserve items": ["internal", "inventory-svc", 1, OTLP_PROJECT],
        }
    finally:
        for provider in providers:
            provider.shutdown()
        worker.stop()
        receiver.stop()


class Callee:
    """tests/integration/sdk_callee.py in its own process, driven by JSON lines."""

    def __init__(self, broker: str, flush_interval_s: float, log_path: Path) -> None:
        self._log = open(log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.sdk_callee", broker, PROJECT, str(flush_interval_s)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.log_path = log_path

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def receive(self, timeout_s: float = 30) -> dict[str, Any]:
        try:
            return json.loads(self._lines.get(timeout=timeout_s))
        except queue.Empty:
            raise AssertionError(f"the callee did not answer in {timeout_s}s:\n"
                                 f"{self.log_path.read_text(errors='replace')}") from None

    def ask(self, command: str, timeout_s: float = 30) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.receive(timeout_s)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask("quit")
                self.process.wait(timeout=15)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._log.close()


def test_two_sdk_processes_are_one_version_though_the_callee_flushes_seconds_later(broker: str,
                                                                                   tmp_path: Path) -> None:
    worker = start_worker(tmp_path, broker)
    callee = Callee(broker, flush_interval_s=4, log_path=tmp_path / "callee.log")
    tracer = Tracer(PROJECT, service="checkout-svc", bootstrap_servers=broker, flush_interval_s=0.05)
    try:
        ready = callee.receive(timeout_s=40)
        assert ready["ready"] and ready["stats"]["sent"] == 1, ready  # its warm-up trace

        with tracer.span("checkout", "agent") as root:
            with tracer.span("validate cart") as validate:
                pass
            with tracer.span("call inventory") as call:
                answer = callee.ask(json.dumps({"headers": dict(inject({}))}))
        assert tracer.flush(timeout_s=30), tracer.stats()
        # The order under test: the caller's root (its `final` batch) is in Kafka, the callee's spans are not.
        assert callee.ask("stats")["sent"] == 1, "the callee published its spans before the caller's root"

        trace_id = root.trace_id
        wait_scored(worker, trace_id)
        assert versions(worker, trace_id) == [[1, 6, "complete", "final_marker"]]
        assert scores_per_rule(worker, trace_id) == [[rule, 1, 1] for rule in RULE_NAMES]
        assert [(w["span_id"], w["answered"]) for w in waited_for(worker, trace_id)] == [(call.span_id, True)]
        spans = {row[0]: row[1:] for row in worker.query(
            "SELECT span_id, parent_span_id, kind, service FROM evalstream.spans FINAL "
            f"WHERE trace_id = '{trace_id}'")}
        server, (lookup, reserve) = answer["server"], answer["children"]
        assert spans[call.span_id][1:] == ["client", "checkout-svc"]
        assert spans[server] == [call.span_id, "server", "callee-svc"]
        assert spans[lookup][0] == spans[reserve][0] == server
        assert set(spans) == {root.span_id, validate.span_id, call.span_id, server, lookup, reserve}
        assert callee.ask("stats")["sent"] == 4  # published by its own schedule, not by a shutdown
    finally:
        tracer.shutdown()
        callee.stop()
        worker.stop()


def test_a_child_that_outlives_its_root_by_3s_is_in_the_first_version(broker: str, tmp_path: Path) -> None:
    worker = start_worker(tmp_path, broker)
    tracer = Tracer(PROJECT, service="orders-svc", bootstrap_servers=broker, flush_interval_s=0.05)
    try:
        with tracer.span("place order", "agent") as root:
            background = tracer.start_span("send receipt email", parent=root)  # fire and forget
        assert tracer.flush(timeout_s=30), tracer.stats()
        trace_id = root.trace_id
        time.sleep(3)  # the background work runs on, 3x the quiet period, after its root ended and was sent
        assert versions(worker, trace_id) == [], "closed without the span still running"
        background.end()
        assert tracer.flush(timeout_s=30), tracer.stats()

        wait_scored(worker, trace_id)
        assert versions(worker, trace_id) == [[1, 2, "complete", "final_marker"]]
        assert scores_per_rule(worker, trace_id) == [[rule, 1, 1] for rule in RULE_NAMES]
        assert worker.query(f"SELECT name, parent_span_id FROM evalstream.spans FINAL WHERE trace_id = '{trace_id}' "
                            "ORDER BY start_time") == [["place order", ""], ["send receipt email", root.span_id]]
    finally:
        tracer.shutdown()
        worker.stop()


def test_single_service_traces_still_close_on_the_final_marker(broker: str, tmp_path: Path) -> None:
    worker = start_worker(tmp_path, broker)
    tracer = Tracer(PROJECT, service="support-svc", bootstrap_servers=broker, flush_interval_s=0.05)
    try:
        trace_ids = []
        for n in range(20):
            with tracer.span(f"answer question {n}", "agent") as root:
                with tracer.span("search docs", "tool"):
                    pass
                with tracer.span("write answer", "llm"):
                    pass
            trace_ids.append(root.trace_id)
        assert tracer.flush(timeout_s=30), tracer.stats()
        ids = ", ".join(f"'{t}'" for t in trace_ids)
        worker.wait_for(lambda: worker.scalar(f"SELECT count() FROM evalstream.scores FINAL WHERE trace_id IN ({ids})")
                        == len(trace_ids) * len(RULE_NAMES), timeout_s=40, what="every trace scored by every rule")
        assert worker.query("SELECT version, span_count, status, close_reason, count() FROM evalstream.traces FINAL "
                            f"WHERE trace_id IN ({ids}) GROUP BY ALL") == [[1, 3, "complete", "final_marker", 20]]
    finally:
        tracer.shutdown()
        worker.stop()
