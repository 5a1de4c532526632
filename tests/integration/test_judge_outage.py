"""The judge provider misbehaves while traces keep coming: it answers 429 with Retry-After, then 500, then
stops answering in time, and then recovers. Through litellm's real client against the local server, inside
a real worker: every trace is still judged once, nothing is lost, and the stored calls show the retries.
The fast variant is a few seconds of each; `EVALSTREAM_LONG=1` (or `--long`) holds the timeouts for a minute."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.integration.harness import WorkerProcess, batch, produce, span
from tests.support.openai_server import OpenAIServer

pytestmark = pytest.mark.integration

LONG = os.environ.get("EVALSTREAM_LONG", "") not in ("", "0")
SLOW_S = 60.0 if LONG else 4.0  # how long the provider answers too late
TRACES = 12


def rules(api_base: str) -> str:
    return f"""
rules:
  - name: polite
    scorer: llm_criteria
    params: {{criteria: ["The reply is polite"], model: openai/gpt-4o-mini, api_base: "{api_base}", api_key: test}}
"""


def trace(i: int) -> tuple[bytes, bytes]:
    trace_id = f"j{i:03d}"
    root = span(trace_id, f"{trace_id}-r", None, "reply", inputs={"message": f"question {i}"},
                outputs={"output": f"Thank you for asking about {i}."})
    return trace_id.encode(), batch(trace_id, [root], final=True)


def test_every_trace_is_judged_once_through_429s_500s_and_timeouts(
        broker: str, tmp_path: Path, openai_server: OpenAIServer) -> None:
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(rules(openai_server.base_url))
    worker = WorkerProcess(tmp_path / "data", broker, rule_file, {
        "EVALSTREAM_JUDGE_TIMEOUT_S": "2", "EVALSTREAM_JUDGE_MAX_ATTEMPTS": "100",
        "EVALSTREAM_SCORER_TIMEOUT_S": str(SLOW_S * 4 + 60)}).start()
    try:
        openai_server.fail_next(TRACES, status=429, retry_after=0.3)  # about two of each per trace of the first half
        openai_server.fail_next(TRACES, status=500)
        produce(broker, [trace(i) for i in range(TRACES // 2)])
        worker.wait_for(lambda: openai_server.failures_left() == 0, timeout_s=90, what="the errors answered")
        openai_server.latency_s = 4.0  # past the judge's 2 s timeout: every call times out
        produce(broker, [trace(i) for i in range(TRACES // 2, TRACES)])
        time.sleep(SLOW_S)
        openai_server.latency_s = 0.0

        worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.scores_current") == TRACES,
                        timeout_s=SLOW_S + 90, what="every trace judged after the provider recovered")
        rows = worker.query("SELECT trace_id, status, metadata FROM evalstream.scores_current ORDER BY trace_id")
        assert [(t, s) for t, s, _ in rows] == [(f"j{i:03d}", "scored") for i in range(TRACES)]
        attempts = [json.loads(m)["judge"]["calls"][0].get("attempts", 1) for _, _, m in rows]
        assert max(attempts) > 1  # the calls record their retries
        assert worker.scalar("SELECT count() FROM evalstream.dead_letters FINAL") == 0
        assert worker.query("SELECT DISTINCT outcome FROM evalstream.decisions_current") == [["scored"]]
        assert len(openai_server.requests) > 3 * TRACES  # every error and timeout was a call, retried
    finally:
        worker.stop()
