"""`evalstream why` on a trace the assembler still holds open: the worker that holds it says what it is waiting
for and when it will close; once stored, `why` shows the stored version and no longer an open one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline.runfile import read_run_file
from tests.integration.harness import WorkerProcess, batch, produce, span

pytestmark = pytest.mark.integration

RULES = "rules:\n  - {name: errors, scorer: error_spans}\n"


def why(data_dir: Path, trace_id: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVALSTREAM_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "why", trace_id], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def held(worker: WorkerProcess, trace_id: str) -> bool:
    urls = list((read_run_file(worker.data_dir / "run.json").get("metrics_urls") or {}).values())
    if not urls:
        return False  # its metrics endpoint is not up yet
    (url,) = urls
    try:
        with urllib.request.urlopen(f"{url.removesuffix('/metrics')}/traces/open/{trace_id}", timeout=3) as r:
            return bool(json.loads(r.read())["open"])
    except urllib.error.HTTPError:
        return False


def test_why_says_what_an_open_trace_waits_for_then_shows_it_stored(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    worker = WorkerProcess(tmp_path / "data", broker, rules, {"EVALSTREAM_IDLE_TIMEOUT_S": "120",
                                                                "EVALSTREAM_METRICS_INTERVAL_S": "1"}).start()
    try:
        trace_id = "open-trace-1"
        children = [span(trace_id, f"c{i}", "root", f"tool{i}", span_type="tool") for i in range(2)]
        produce(broker, [(trace_id.encode(), batch(trace_id, children))])  # no root yet: it stays open
        worker.wait_for(lambda: held(worker, trace_id), timeout_s=30, what="the assembler holds the trace")
        worker.wait_for(lambda: worker.metric("evalstream_assembly_open_traces") == 1, timeout_s=30,
                        what="the open-traces gauge")
        assert (worker.metric("evalstream_assembly_oldest_open_seconds") or 0) > 0

        out = why(worker.data_dir, trace_id)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "not in storage" in out.stdout
        assert "is OPEN: 2 spans" in out.stdout and "root span" in out.stdout
        assert "as incomplete (no root span by then), unless more spans arrive" in out.stdout

        produce(broker, [(trace_id.encode(), batch(trace_id, [span(trace_id, "root", None, "handle")], final=True))])
        worker.wait_for(lambda: worker.scalar(f"SELECT count() FROM evalstream.scores FINAL "
                                              f"WHERE trace_id = '{trace_id}'") == 1, what="trace scored")
        out = why(worker.data_dir, trace_id)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "complete" in out.stdout and "error_spans" in out.stdout and "is OPEN" not in out.stdout

        out = why(worker.data_dir, "never-sent")
        assert out.returncode == 1 and "No running worker holds it either (1 answered)" in out.stdout
    finally:
        worker.stop()
