"""Issue 17: versions never go backwards. A late span of a trace whose assembly state is gone (the broker was
restarted, or the reopen window passed) continues from the stored highest version + 1, with the stored spans
merged; a late turn of a conversation whose state is gone continues its stored versions. Stored versions are
never rewritten."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.admin import ensure_topics
from pipeline.embedded import EmbeddedBroker
from tests.integration.harness import WorkerProcess, batch, produce, span

pytestmark = pytest.mark.integration

RULES = """
rules:
  - {name: errors, scorer: error_spans}
"""
TRACE_COLUMNS = ("version, span_count, status, close_reason, root_span_id, toUnixTimestamp64Micro(closed_at), "
                 "reopened_by")


def start_broker(log_file: Path) -> EmbeddedBroker:
    broker = EmbeddedBroker(log_file=log_file)
    asyncio.run(ensure_topics(broker.start(), partitions=4))
    return broker


def checkout_trace(trace_id: str) -> list[dict[str, Any]]:
    """A complete trace in one final batch: a root, a step, and a remote call answered by the callee."""
    return [span(trace_id, "root", None, "checkout", dur_ms=50),
            span(trace_id, "plan", "root", "plan", start_ms=1),
            span(trace_id, "call", "root", "GET inventory", start_ms=10, dur_ms=30, kind="client"),
            span(trace_id, "serve", "call", "GET /inventory", start_ms=12, dur_ms=20, kind="server",
                 service="inventory-svc")]


def late_span(trace_id: str) -> tuple[bytes, bytes]:
    return trace_id.encode(), batch(trace_id, [span(trace_id, "late", "root", "send receipt", start_ms=60)])


def turn(session_id: str, n: int) -> tuple[bytes, bytes]:
    trace_id = f"{session_id}-t{n}"
    root = span(trace_id, f"{trace_id}-r", None, "chat", start_ms=n * 1000, session_id=session_id,
                inputs={"message": f"q{n}"}, outputs={"output": f"a{n}"})
    return trace_id.encode(), batch(trace_id, [root], final=True)


def trace_versions(worker: WorkerProcess, trace_id: str) -> list[list[Any]]:
    return worker.query(f"SELECT {TRACE_COLUMNS} FROM evalstream.traces FINAL WHERE trace_id = '{trace_id}' "
                        "ORDER BY version")


def closed_sessions(worker: WorkerProcess, session_id: str) -> list[list[Any]]:
    return worker.query("SELECT version, turn_count, close_reason FROM evalstream.sessions FINAL "
                        f"WHERE session_id = '{session_id}' AND status = 'complete' ORDER BY version")


def why(worker: WorkerProcess, trace_id: str) -> str:
    """`evalstream why` against the running worker (it reads through the worker's query endpoint)."""
    env = {**os.environ, "EVALSTREAM_DATA_DIR": str(worker.data_dir), "COLUMNS": "200"}  # rich wraps at 80
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "why", trace_id], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def assert_continued(worker: WorkerProcess, trace_id: str, first: list[Any]) -> None:
    """Version 1 as it was stored; version 2 holds its 4 spans and the late one, re-opened by the late one."""
    stored = trace_versions(worker, trace_id)
    assert [row[:-1] for row in stored] == [first[:-1], [2, 5, "complete", "quiet_period", "root", stored[1][5]]]
    assert stored[0][-1] == "" and '"span_id":"late"' in stored[1][-1].replace(" ", ""), stored
    assert worker.query(f"SELECT span_id FROM evalstream.spans FINAL WHERE trace_id = '{trace_id}' "
                        "AND trace_version = 2 ORDER BY span_id") == [["call"], ["late"], ["plan"], ["root"],
                                                                      ["serve"]]
    assert f"trace {trace_id} continues from stored version 1 as version 2" in worker.log_path.read_text(errors="replace")
    worker.wait_for(lambda: worker.query(f"SELECT trace_version, count() FROM evalstream.scores FINAL WHERE "
                                         f"trace_id = '{trace_id}' GROUP BY trace_version ORDER BY trace_version")
                    == [[1, 1], [2, 1]], timeout_s=30, what="version 2 scored, version 1's score kept")
    assert "v2 re-opened by span late (send receipt)" in why(worker, trace_id)


def test_versions_go_on_after_a_broker_restart(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = {"EVALSTREAM_SESSION_IDLE_TIMEOUT_S": "2"}
    trace_id, session_id = "restart-trace", "restart-conv"
    broker = start_broker(tmp_path / "broker.log")
    worker = WorkerProcess(tmp_path / "data", broker.bootstrap, rules, env).start()
    try:
        produce(broker.bootstrap, [(trace_id.encode(), batch(trace_id, checkout_trace(trace_id), final=True)),
                                   turn(session_id, 1), turn(session_id, 2)])
        worker.wait_for(lambda: len(trace_versions(worker, trace_id)) == 1
                        and closed_sessions(worker, session_id) == [[1, 2, "idle_timeout"]],
                        timeout_s=40, what="the trace's version 1 and the session's version 1 stored")
        first = trace_versions(worker, trace_id)[0]
        assert first[:5] == [1, 4, "complete", "final_marker", "root"]

        # The broker loses every topic, the assembly changelogs with them; chDB keeps its data.
        worker.stop()
        broker.stop()
        broker = start_broker(tmp_path / "broker.log")
        worker = WorkerProcess(tmp_path / "data", broker.bootstrap, rules, env).start()
        produce(broker.bootstrap, [late_span(trace_id), turn(session_id, 3)])

        worker.wait_for(lambda: len(trace_versions(worker, trace_id)) == 2
                        and len(closed_sessions(worker, session_id)) == 2, timeout_s=40,
                        what="the trace's and the session's version 2")
        assert_continued(worker, trace_id, first)
        sessions = closed_sessions(worker, session_id)
        assert sessions[0] == [1, 2, "idle_timeout"] and sessions[1][0] == 2, sessions
        assert [f"{session_id}-t3", 1] in worker.query(
            f"SELECT trace_id, trace_version FROM evalstream.session_turns FINAL WHERE session_id = '{session_id}' "
            "AND session_version = 2")
        assert worker.query(f"SELECT trace_id FROM evalstream.session_turns FINAL WHERE session_id = '{session_id}' "
                            "AND session_version = 1 ORDER BY turn") == [[f"{session_id}-t1"], [f"{session_id}-t2"]]
    finally:
        worker.stop()
        broker.stop()


def test_a_late_span_after_the_reopen_window_makes_version_2(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    reopen_window_s = 2
    worker = WorkerProcess(tmp_path / "data", broker, rules, {"EVALSTREAM_REOPEN_WINDOW_S": str(reopen_window_s),
                                                              "EVALSTREAM_IDLE_TIMEOUT_S": "3"}).start()
    trace_id = "window-trace"
    try:
        produce(broker, [(trace_id.encode(), batch(trace_id, checkout_trace(trace_id), final=True))])
        worker.wait_for(lambda: len(trace_versions(worker, trace_id)) == 1, timeout_s=30, what="version 1 stored")
        first = trace_versions(worker, trace_id)[0]
        assert first[:5] == [1, 4, "complete", "final_marker", "root"]
        # Past the window (plus ticks to spare), the assembler has forgotten the trace.
        forgotten_at = first[5] / 1e6 + reopen_window_s + 2
        while time.time() < forgotten_at:
            time.sleep(0.1)
        produce(broker, [late_span(trace_id)])

        worker.wait_for(lambda: len(trace_versions(worker, trace_id)) == 2, timeout_s=30, what="version 2")
        assert_continued(worker, trace_id, first)
        late_by_s = worker.scalar(f"SELECT late_by_s FROM evalstream.traces FINAL WHERE trace_id = '{trace_id}' "
                                  "AND version = 2")
        assert late_by_s >= reopen_window_s
        # The spans of version 2 replaced version 1's rows in `spans`: they should still say what they were.
        kinds = worker.query(f"SELECT span_id, kind FROM evalstream.spans FINAL WHERE trace_id = '{trace_id}' "
                             "AND span_id IN ('call', 'serve') ORDER BY span_id")
        assert kinds == [["call", "client"], ["serve", "server"]]
    finally:
        worker.stop()
