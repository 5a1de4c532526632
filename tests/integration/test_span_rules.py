"""Issue 20 (span rules), through the real broker, worker and chDB, in one worker start: a `subject: span` rule
scores each matching span of a trace on its own (json_output: 3 LLM spans, 2 with JSON outputs -> 3 score rows
on the 3 span ids, 1 failed, 3 decisions); a judge span rule calls the local OpenAI-compatible server through
litellm, once per span, showing it that span; and the per-trace cap holds on a 500-span trace."""

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

SMALL = "5" * 32
BIG = "6" * 32
BIG_SPANS = 500
CAP = 50


def rules(judge_url: str) -> str:
    return f"""
rules:
  - name: json-steps
    scorer: json_output
    subject: span
    filter: {{span_type: llm, span_name: "extract*"}}
  - name: judged-steps
    scorer: llm_scale
    subject: span
    filter: {{span_type: llm, span_name: "extract*", model: gpt-4o}}
    params: {{question: "how useful is this step's output", model: openai/gpt-4o-mini, api_base: "{judge_url}",
              api_key: test}}
  - name: bulk-steps
    scorer: json_output
    subject: span
    max_spans_per_trace: {CAP}
    filter: {{span_name: bulk}}
alerts:
  - name: bad-steps
    rule: json-steps
    group_by: [span_name]
"""


def cli(worker: WorkerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVALSTREAM_DATA_DIR": str(worker.data_dir), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def judge_by_output(body: dict[str, Any]) -> Reply:
    """A score of 9 for a span whose output the judge was shown as JSON with a city, else 3."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    score = 9 if "Oslo" in user or "Bergen" in user else 3
    return Reply(tool_calls=[{"name": "submit_score", "arguments": json.dumps({"reason": "seen", "score": score})}])


def test_span_rules_score_each_span_and_cap_a_large_trace(
        broker: str, tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.respond_with(judge_by_output)
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(rules(openai_server.base_url))
    worker = WorkerProcess(tmp_path / "data", broker, rule_file).start()
    try:
        small = [span(SMALL, "root", None, "handle", dur_ms=100),
                 span(SMALL, "llm-a", "root", "extract_city", span_type="llm", start_ms=1, model="gpt-4o",
                      outputs='{"city": "Oslo"}'),
                 span(SMALL, "llm-b", "root", "extract_city", span_type="llm", start_ms=2, model="gpt-4o",
                      outputs='{"city": "Bergen"}'),
                 span(SMALL, "llm-c", "root", "extract_date", span_type="llm", start_ms=3, model="gpt-4o",
                      outputs="sorry, I cannot"),
                 span(SMALL, "tool-1", "root", "extract_tool", span_type="tool", start_ms=4, outputs="x")]
        big = [span(BIG, "root", None, "handle", dur_ms=1000)] + [
            span(BIG, f"b{i:03d}", "root", "bulk", span_type="llm", start_ms=i + 1, outputs="{}")
            for i in range(BIG_SPANS)]
        produce(broker, [(SMALL.encode(), batch(SMALL, small, final=True)),
                         (BIG.encode(), batch(BIG, big, final=True))])

        worker.wait_for(lambda: worker.scalar(
            f"SELECT count() FROM evalstream.scores_current WHERE trace_id IN ('{SMALL}', '{BIG}')")
            == 3 + 3 + CAP, timeout_s=120, what="every queued span scored")

        # json_output: 3 score rows on the 3 LLM span ids, one failed; 3 decisions, one per span.
        assert sorted(worker.query(
            f"SELECT span_id, span_name, status, passed FROM evalstream.scores_current "
            f"WHERE trace_id = '{SMALL}' AND rule = 'json-steps'")) == [
            ["llm-a", "extract_city", "scored", True], ["llm-b", "extract_city", "scored", True],
            ["llm-c", "extract_date", "scored", False]]
        assert sorted(worker.query(
            f"SELECT span_id, outcome FROM evalstream.decisions_current "
            f"WHERE trace_id = '{SMALL}' AND rule = 'json-steps'")) == [
            ["llm-a", "scored"], ["llm-b", "scored"], ["llm-c", "scored"]]  # a failed check is scored

        # The judge: one litellm call per span, each shown its own span with its trace as context.
        assert sorted(worker.query(
            f"SELECT span_id, value, passed FROM evalstream.scores_current "
            f"WHERE trace_id = '{SMALL}' AND rule = 'judged-steps'")) == [
            ["llm-a", 9.0, True], ["llm-b", 9.0, True], ["llm-c", 3.0, False]]
        prompts = [next(m["content"] for m in r.body["messages"] if m["role"] == "user")
                   for r in openai_server.requests]
        assert len(prompts) == 3
        assert all("<trace_context>" in p and "You are judging one span" in p for p in prompts)
        assert sum("sorry, I cannot" in p for p in prompts) == 1

        # Rules with no matching span in a trace: one trace-level decision each, not one per span.
        filtered = worker.query(
            f"SELECT trace_id, rule, span_id, reason FROM evalstream.decisions_current "
            f"WHERE trace_id IN ('{SMALL}', '{BIG}') AND outcome = 'filtered_out' ORDER BY trace_id, rule")
        assert [row[:3] for row in filtered] == [
            [SMALL, "bulk-steps", ""], [BIG, "json-steps", ""], [BIG, "judged-steps", ""]]
        assert filtered[2][3] == f"no span of {BIG_SPANS + 1} matches span_name/span_type/model"

        # The cap: 50 scored (the first 50 to start), 450 sampled out naming the cap.
        outcomes = dict(worker.query(
            f"SELECT outcome, count() FROM evalstream.decisions_current WHERE trace_id = '{BIG}' "
            f"AND rule = 'bulk-steps' GROUP BY outcome"))
        assert outcomes == {"scored": CAP, "sampled_out": BIG_SPANS - CAP}
        assert worker.scalar(
            f"SELECT countIf(startsWith(reason, 'over max_spans_per_trace={CAP}')) FROM evalstream.decisions_current "
            f"WHERE trace_id = '{BIG}' AND rule = 'bulk-steps' AND outcome = 'sampled_out'") == BIG_SPANS - CAP
        assert sorted(r[0] for r in worker.query(
            f"SELECT span_id FROM evalstream.scores_current WHERE trace_id = '{BIG}'")) == [
            f"b{i:03d}" for i in range(CAP)]

        # `why` lists the per-span decisions; `traces show` puts each span's scores on its span.
        why = cli(worker, "why", SMALL)
        assert why.returncode == 0, why.stderr
        assert all(s in why.stdout for s in ("llm-a", "llm-b", "llm-c", "json-steps", "extract_date"))
        shown = cli(worker, "traces", "show", SMALL)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        at = next(i for i, line in enumerate(lines) if "extract_date" in line)
        below = "\n".join(lines[at + 1:at + 4])
        assert "json-steps" in below and "judged-steps" in below, shown.stdout
    finally:
        worker.stop()
