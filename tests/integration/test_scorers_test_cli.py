"""`evalstream scorers test`: a scorer module run once in its sandbox against an example, a trace, or one
span of a trace (as a `subject: span` rule would give it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.contracts import Span, Trace

pytestmark = pytest.mark.integration

SPAN_AWARE = '''
from scorers import Score, SpanSubject, scorer


@scorer("json_like", subjects=("trace", "span"))
def json_like(target):
    if isinstance(target, SpanSubject):
        text = str(target.outputs)
        return Score(value=1.0 if text.startswith("{") else 0.0, passed=text.startswith("{"),
                     reason=f"span {target.name} of {target.trace_id}")
    return Score(value=float(len(target.spans)), passed=True, reason=f"{len(target.spans)} spans")
'''


def trace_file(tmp_path: Path) -> Path:
    def span(span_id: str, name: str, parent: str | None, outputs: str) -> Span:
        return Span(trace_id="t1", span_id=span_id, parent_span_id=parent, name=name, start_ns=0, end_ns=1,
                    outputs=outputs)
    trace = Trace(trace_id="t1", version=1, status="complete", close_reason="final_marker", root_span_id="root",
                  start_ns=0, end_ns=1, spans=[span("root", "agent", None, "done"),
                                               span("llm-1", "chat", "root", '{"ok": true}'),
                                               span("llm-2", "chat", "root", "not json")])
    path = tmp_path / "trace.json"
    path.write_text(trace.model_dump_json())
    return path


def evalstream(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVALSTREAM_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_scorer_is_tested_on_a_whole_trace_or_on_one_of_its_spans(tmp_path: Path) -> None:
    module = tmp_path / "json_like.py"
    module.write_text(SPAN_AWARE)
    trace = trace_file(tmp_path)

    whole = evalstream(tmp_path, "scorers", "test", str(module), "--trace", str(trace))
    assert whole.returncode == 0, whole.stderr
    assert '"reason": "3 spans"' in whole.stdout

    good = evalstream(tmp_path, "scorers", "test", str(module), "--trace", str(trace), "--span", "llm-1")
    assert good.returncode == 0, good.stderr
    assert "span chat of t1" in good.stdout and '"passed": true' in good.stdout

    bad = evalstream(tmp_path, "scorers", "test", str(module), "--trace", str(trace), "--span", "llm-2")
    assert bad.returncode == 0, bad.stderr
    assert '"passed": false' in bad.stdout

    missing = evalstream(tmp_path, "scorers", "test", str(module), "--trace", str(trace), "--span", "nope")
    assert missing.returncode != 0
    assert "span 'nope' is not in trace t1" in missing.stderr and "llm-1 (chat)" in missing.stderr

    alone = evalstream(tmp_path, "scorers", "test", str(module), "--example", json.dumps({"inputs": "q"}),
                       "--span", "llm-1")
    assert alone.returncode != 0 and "--span needs the --trace" in alone.stderr
