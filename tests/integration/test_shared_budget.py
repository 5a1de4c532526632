"""One spend cap per rule across scorer processes (issue 21): two scorer-only processes and one process with
the other roles and the sink share a rule with a token budget, judged by the local OpenAI-compatible server.
Whatever any window of the budget's length holds stays within the cap plus one job per scorer process; the
rest is deferred and scored later, none dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import WorkerProcess, batch, produce, span
from tests.support.openai_server import OpenAIServer, Reply

pytestmark = pytest.mark.integration

N_TRACES = 12
CAP_TOKENS = 400  # the judge answers with ~175 tokens a job: two jobs a window
WINDOW_S = 4
SCORERS = 2


def rules(judge_url: str) -> str:
    return f"""
rules:
  - name: judged
    scorer: llm_scale
    params: {{question: "how well did the agent answer", model: openai/gpt-4o-mini, api_base: "{judge_url}",
              api_key: test}}
    budget: {{tokens_per_hour: {CAP_TOKENS}}}
  - name: errors
    scorer: error_spans
"""


def verdict(body: dict[str, Any]) -> Reply:
    return Reply(tool_calls=[{"name": "submit_score", "arguments": json.dumps({"reason": "fine", "score": 7})}])


def test_scorer_processes_share_one_cap_per_rule(broker: str, tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.respond_with(verdict)
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(rules(openai_server.base_url))
    common = {"EVALSTREAM_BUDGET_WINDOW_S": str(WINDOW_S), "EVALSTREAM_JUDGE_CACHE_SIZE": "0",
              "EVALSTREAM_BUDGET_DEFAULT_ESTIMATE_TOKENS": str(CAP_TOKENS), "EVALSTREAM_DEFER_MAX_SLEEP_S": "2",
              "EVALSTREAM_JUDGE_EVALUATION_TRACES": "false"}
    scorers = [WorkerProcess(tmp_path / f"scorer-{i}", broker, rule_file,
                             {**common, "EVALSTREAM_ROLES": "scorer", "EVALSTREAM_SINK_ENABLED": "false"})
               for i in range(SCORERS)]
    front = WorkerProcess(tmp_path / "front", broker, rule_file, {**common, "EVALSTREAM_ROLES": "assembler,router,alerter"})
    try:
        for scorer in scorers:
            scorer.start()
        front.start(timeout_s=120)
        produce(broker, [(f"sb{i:03d}".encode(), batch(f"sb{i:03d}", [span(f"sb{i:03d}", f"sb{i:03d}-r", None, "handle")],
                                                        final=True)) for i in range(N_TRACES)])
        front.wait_for(lambda: front.scalar("SELECT count() FROM evalstream.scores_current WHERE rule = 'judged'")
                       == N_TRACES, timeout_s=240, what="every judged trace scored once the budget refilled")
        for scorer in scorers:
            assert scorer.process is not None and scorer.process.poll() is None, scorer.log_tail()

        spends = front.query(
            "SELECT toUnixTimestamp64Milli(scored_at), JSONExtractUInt(metadata, 'judge', 'input_tokens') + "
            "JSONExtractUInt(metadata, 'judge', 'output_tokens') FROM evalstream.scores_current "
            "WHERE rule = 'judged' ORDER BY scored_at")
        largest = max(tokens for _, tokens in spends)
        assert 0 < largest <= CAP_TOKENS, spends
        worst = max(sum(t for at, t in spends if end - WINDOW_S * 1000 < at <= end) for end, _ in spends)
        assert worst <= CAP_TOKENS + SCORERS * largest, (worst, spends)
        # The budget did bind: jobs waited, with the shared ledger's reason, and all were scored in the end.
        deferred = front.query("SELECT reason FROM evalstream.decisions FINAL "
                               "WHERE rule = 'judged' AND outcome = 'deferred'")
        assert len(deferred) >= N_TRACES // 2, deferred
        assert all(f"budget spent in the last {WINDOW_S} s by all scorers" in r for (r,) in deferred), deferred[:3]
        assert front.query("SELECT DISTINCT outcome FROM evalstream.decisions_current WHERE rule = 'judged'") \
            == [["scored"]]
        assert front.scalar("SELECT count() FROM evalstream.decisions FINAL "
                            "WHERE rule = 'errors' AND outcome = 'deferred'") == 0
        assert front.scalar("SELECT count() FROM evalstream.scores_current WHERE rule = 'errors'") == N_TRACES
        print(f"largest job {largest} tokens, worst window {worst} of cap {CAP_TOKENS}, {len(deferred)} deferrals")
    finally:
        front.stop()
        for scorer in scorers:
            scorer.stop()
