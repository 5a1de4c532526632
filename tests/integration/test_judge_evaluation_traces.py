"""Issue 20, part 2: an agent judge's work is a trace. In a real worker, an agent-judge job on the local
OpenAI-compatible server (litellm's real client; the judge investigates with a tool) leaves an evaluation trace
of project evalstream-judges whose spans are its LLM calls and tool run, with tokens and cost, linked from its
score; no rule judges that trace; `evalstream traces show` prints the calls under the score, and the evaluation
trace on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import WorkerProcess, batch, produce, span
from tests.support.openai_server import OpenAIServer, Reply

pytestmark = pytest.mark.integration

VERDICT = {"criteria": {"c1": {"verdict": "true", "reason": "every tool call succeeded"}},
           "summary": "every tool call succeeded"}


def rules(api_base: str) -> str:
    return f"""
rules:
  - name: tools-ok
    scorer: agent_judge
    params:
      instructions: "Look at {{trace}} and decide whether every tool call succeeded."
      criteria: ["Every tool call succeeded"]
      inline_tokens: 0
      max_steps: 3
      model: openai/gpt-4o-mini
      api_base: "{api_base}"
      api_key: test
  - name: any-errors
    scorer: error_spans
"""


def script(body: dict[str, Any]) -> Reply:
    """The judge model: first it asks for the trace's overview, then it gives its verdict."""
    if not any(m.get("role") == "tool" for m in body["messages"]):
        return Reply(tool_calls=[{"name": "get_trace_info", "arguments": "{}"}])
    return Reply(tool_calls=[{"name": "submit_verdicts", "arguments": json.dumps(VERDICT)}])


def cli(worker: WorkerProcess, *args: str) -> str:
    env = {**os.environ, "EVALSTREAM_DATA_DIR": str(worker.data_dir), "COLUMNS": "250"}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_agent_judge_job_leaves_a_linked_evaluation_trace_of_its_calls(
        broker: str, tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.respond_with(script)
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(rules(openai_server.base_url))
    worker = WorkerProcess(tmp_path / "data", broker, rule_file).start()
    try:
        root = span("a1", "a1-root", None, "handle", span_type="agent", dur_ms=40, inputs={"q": "weather?"},
                    outputs={"a": "sunny"})
        lookup = span("a1", "a1-tool", "a1-root", "get_weather", span_type="tool", start_ms=5, dur_ms=20,
                      inputs={"city": "Paris"}, outputs={"sky": "sunny"})
        produce(broker, [(b"a1", batch("a1", [root, lookup], final=True))])

        def linked() -> bool:
            rows = worker.query("SELECT evaluation_trace_id FROM evalstream.scores_current WHERE rule = 'tools-ok'")
            return bool(rows) and rows[0][0] != ""

        worker.wait_for(linked, timeout_s=90, what="the judged score with its evaluation trace link")
        status, passed, judge_trace = worker.query(
            "SELECT status, passed, evaluation_trace_id FROM evalstream.scores_current WHERE rule = 'tools-ok'")[0]
        assert (status, passed) == ("scored", True)
        worker.wait_for(lambda: worker.scalar(f"SELECT count() FROM evalstream.traces WHERE trace_id = '{judge_trace}'") > 0,
                        timeout_s=60, what="the evaluation trace stored")

        project, span_count = worker.query(
            f"SELECT project, span_count FROM evalstream.traces_current WHERE trace_id = '{judge_trace}'")[0]
        assert (project, span_count) == ("evalstream-judges", 4)
        spans = worker.query(
            f"SELECT span_type, name, model, input_tokens, output_tokens, cost_usd, parent_span_id = '' AS is_root, "
            f"attributes, inputs, outputs FROM evalstream.spans FINAL WHERE trace_id = '{judge_trace}' "
            f"ORDER BY start_time, span_id")
        assert [(s[0], s[1]) for s in spans] == [
            ("evaluator", "evaluate tools-ok"), ("llm", "chat openai/gpt-4o-mini"), ("tool", "get_trace_info"),
            ("llm", "chat openai/gpt-4o-mini")]
        evaluator, first, tool, second = spans
        assert evaluator[6] and json.loads(evaluator[7])["evalstream.evaluated_trace_id"] == "a1"
        for llm in (first, second):
            assert llm[2] == "openai/gpt-4o-mini" and llm[3] > 0 and llm[4] > 0 and llm[5] > 0  # tokens and cost
        assert json.loads(first[8])["messages"][0]["role"] == "system"  # the whole conversation is kept
        assert json.loads(first[9])["tool_calls"][0]["name"] == "get_trace_info"
        assert json.loads(tool[9])["span_count"] == 2  # what the tool returned to the judge
        assert json.loads(second[9])["tool_calls"][0]["name"] == "submit_verdicts"

        # The rules that do not name evalstream-judges leave it alone, with no decision; the trace was judged.
        assert worker.scalar(f"SELECT count() FROM evalstream.decisions FINAL WHERE trace_id = '{judge_trace}'") == 0
        assert worker.scalar(f"SELECT count() FROM evalstream.scores FINAL WHERE trace_id = '{judge_trace}'") == 0
        assert worker.scalar("SELECT count() FROM evalstream.scores_current WHERE trace_id = 'a1'") == 2

        shown = cli(worker, "traces", "show", "a1")
        assert "◆ tools-ok (agent_judge): pass" in shown and f"judge trace {judge_trace}" in shown
        calls = [line for line in shown.splitlines() if "↳" in line]
        assert len(calls) == 3 and "get_trace_info" in calls[1], shown
        assert "openai/gpt-4o-mini ·" in calls[0] and " tok · $" in calls[0] and "→ get_trace_info({})" in calls[0]
        assert "→ submit_verdicts(" in calls[2]

        whole = cli(worker, "traces", "show", judge_trace)
        assert "evalstream-judges" in whole and "judged trace a1 v1 (tools-ok): pass" in whole
        assert whole.count("chat openai/gpt-4o-mini llm") == 2 and "get_trace_info tool" in whole
    finally:
        worker.stop()
