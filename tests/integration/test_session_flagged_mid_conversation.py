"""A conversation that breaks a "must not" criterion at turn 3 of 10 is flagged, and alerted in Slack, right
after turn 3, while it is still going: the session judge runs through litellm's real client against a local
OpenAI-compatible server, inside a real worker on the broker and chDB. The closing verdict still comes when
the conversation ends, and the judge is not asked again about turns after its verdict."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import WorkerProcess, batch, produce, span
from tests.integration.slack_server import SlackServer
from tests.support.openai_server import OpenAIServer, Reply

pytestmark = pytest.mark.integration

SESSION = "chat-refund"
NO_PROMISE = "The agent must not promise a refund before the order has been verified"
OFFENDING = "I promise you a full refund today."
DECISION = "submit_decision"


def rules(api_base: str) -> str:
    return f"""
rules:
  - name: no-early-refund
    subject: session
    each_turn: true
    scorer: session_criteria
    params:
      criteria: ["{NO_PROMISE}"]
      model: openai/gpt-4o-mini
      api_base: {api_base}
      api_key: test
alerts:
  - {{name: refund-promised, rule: no-early-refund, condition: failed, cooldown_s: 0}}
"""


def turn(n: int) -> tuple[bytes, bytes]:
    trace_id = f"{SESSION}-t{n:02d}"
    reply = OFFENDING if n == 3 else f"Let me look at order {n}; which email is on the account?"
    root = span(trace_id, f"{trace_id}-r", None, "chat", start_ms=n * 1000, dur_ms=20, session_id=SESSION,
                agent_name="support-bot", inputs={"message": f"question {n} about my refund"},
                outputs={"output": reply})
    return trace_id.encode(), batch(trace_id, [root], final=True)


def judge(body: dict[str, Any]) -> Reply:
    """Reads the transcript it is sent: once the promise is in it, the criterion is broken for good."""
    transcript = next(m["content"] for m in body["messages"] if m["role"] == "user")
    where = re.search(r"Turn (\d+) \([^)]*\):\nUser: [^\n]*\nAgent: " + re.escape(OFFENDING), transcript)
    verdict = "false" if where else ("true" if body["tool_choice"]["function"]["name"] != DECISION else "inconclusive")
    reason = f"turn {where.group(1)} promised a refund" if where else "no refund promised"
    args: dict[str, Any] = {"criteria": {"c1": {"reason": reason, "verdict": verdict}}, "summary": reason}
    name = body["tool_choice"]["function"]["name"]
    if name == DECISION:
        args["decision"] = "finish" if where else "continue"
    return Reply(tool_calls=[{"name": name, "arguments": json.dumps(args)}])


def looks(worker: WorkerProcess) -> list[list[Any]]:
    return worker.query("SELECT turn, final, passed FROM evalstream.session_scores FINAL "
                        f"WHERE session_id = '{SESSION}' ORDER BY final, turn")


def test_a_broken_must_not_is_flagged_and_alerted_after_turn_3_of_10(
        broker: str, tmp_path: Path, openai_server: OpenAIServer) -> None:
    openai_server.respond_with(judge)
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(rules(openai_server.base_url))
    with SlackServer() as slack:
        worker = WorkerProcess(tmp_path / "data", broker, rule_file, {
            "EVALSTREAM_SESSION_IDLE_TIMEOUT_S": "20",  # longer than a look takes on a loaded machine
            "EVALSTREAM_SLACK_BOT_TOKEN": slack.token,
            "EVALSTREAM_SLACK_CHANNEL": "#agents", "EVALSTREAM_SLACK_BASE_URL": slack.api_base_url,
            "EVALSTREAM_ALERT_GRACE_S": "0.5", "EVALSTREAM_ALERT_TICK_INTERVAL_S": "0.25"}).start()
        try:
            for n in (1, 2, 3):  # one turn at a time, each look done before the user says more
                produce(broker, [turn(n)])
                # the first look waits for the consumer groups to join and litellm to load in the worker
                worker.wait_for(lambda n=n: len(looks(worker)) >= n, timeout_s=90 if n == 1 else 30,
                                what=f"the look after turn {n}")
            assert looks(worker) == [[1, False, None], [2, False, None], [3, False, False]]
            flag = worker.query("SELECT reason, trace_id FROM evalstream.session_scores FINAL "
                                f"WHERE session_id = '{SESSION}' AND turn = 3")
            assert "turn 3 promised a refund" in flag[0][0] and flag[0][1] == f"{SESSION}-t03"

            # The alert fires while the conversation is still open, naming the session and the turn.
            worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.alerts FINAL "
                                                  "WHERE alert_rule = 'refund-promised'") == 1,
                            timeout_s=30, what="the alert after turn 3")
            assert worker.scalar(f"SELECT status FROM evalstream.sessions_current WHERE session_id = '{SESSION}'") \
                == "open"
            (post,) = slack.posts
            assert f"session {SESSION} v1 after turn 3, still running" in json.dumps(post)

            # The rest of the conversation: no more looks, then the closing verdict once it has gone quiet.
            produce(broker, [turn(n) for n in range(4, 11)])
            worker.wait_for(lambda: any(final for _, final, _ in looks(worker)), timeout_s=60,
                            what="the closing verdict")
            assert looks(worker) == [[1, False, None], [2, False, None], [3, False, False], [10, True, False]]
            assert worker.query("SELECT outcome FROM evalstream.session_decisions_current "
                                f"WHERE session_id = '{SESSION}'") == [["scored"]]
            assert len(openai_server.requests) == 4  # three looks and the closing verdict
        finally:
            worker.stop()
