"""The built-in rule-health alert on a real worker (issue 21's done-when): a rule whose judge provider answers
401 turns erroring, alerts once through Slack (the local Slack API, slack-sdk's real client) and resolves when
the provider recovers; a rule naming an uploaded scorer that was never uploaded alerts as starved. Every
message is stored in `alerts`. One stack; the check runs every second."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.alerts.rule_health import RULE_HEALTH_ALERT
from tests.integration.harness import WorkerProcess, batch, produce, span
from tests.integration.slack_server import SlackServer
from tests.support.openai_server import OpenAIServer

pytestmark = pytest.mark.integration

TOKEN = "xoxb-test-token"
REFUSED = 6  # traces whose judge call is refused
RECOVERED = 10  # then scored: 6 errors of 16 recent results is under half, so the rule is healthy again


def rules(api_base: str) -> str:
    return f"""
rules:
  - name: polite
    scorer: llm_criteria
    params: {{criteria: ["The reply is polite"], model: openai/gpt-4o-mini, api_base: "{api_base}", api_key: test}}
  - name: ghost
    scorer: ghost_scorer
"""


def trace(i: int) -> tuple[bytes, bytes]:
    trace_id = f"rh{i:03d}"
    root = span(trace_id, f"{trace_id}-r", None, "reply", inputs={"message": f"question {i}"},
                outputs={"output": f"Thank you for asking about {i}."})
    return trace_id.encode(), batch(trace_id, [root], final=True)


def posts_about(slack: SlackServer, rule: str) -> list[dict]:
    return [p for p in slack.posts if f"rule {rule} is" in p.get("text", "")]


def test_erroring_rule_alerts_once_and_resolves_and_a_missing_scorer_alerts_as_starved(
        broker: str, tmp_path: Path, openai_server: OpenAIServer) -> None:
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(rules(openai_server.base_url))
    openai_server.fail_next(REFUSED, status=401)
    with SlackServer(TOKEN) as slack:
        worker = WorkerProcess(tmp_path / "data", broker, rule_file, {
            "EVALSTREAM_SLACK_BOT_TOKEN": TOKEN, "EVALSTREAM_SLACK_CHANNEL": "#alerts",
            "EVALSTREAM_SLACK_BASE_URL": slack.api_base_url, "EVALSTREAM_RULE_HEALTH_INTERVAL_S": "1",
            "EVALSTREAM_JUDGE_MAX_ATTEMPTS": "1", "EVALSTREAM_SCORER_MAX_ATTEMPTS": "1",
            "EVALSTREAM_SANDBOX_TIMEOUT_S": "5"}).start()
        try:
            produce(broker, [trace(i) for i in range(REFUSED)])
            worker.wait_for(lambda: len(posts_about(slack, "polite")) >= 1 and len(posts_about(slack, "ghost")) >= 1,
                            timeout_s=90, what="both rules' firing posted to Slack")
            polite = posts_about(slack, "polite")[0]
            assert "is erroring" in polite["text"] and "provider refusing" in polite["text"], polite["text"]
            ghost = posts_about(slack, "ghost")[0]
            assert "is starved" in ghost["text"] and "scorer missing" in ghost["text"], ghost["text"]
            assert "thread_ts" not in ghost or not ghost["thread_ts"]

            time.sleep(4)  # four more checks: still erroring, still starved, nothing more sent
            assert len(posts_about(slack, "polite")) == 1 and len(posts_about(slack, "ghost")) == 1

            produce(broker, [trace(i) for i in range(REFUSED, REFUSED + RECOVERED)])  # the provider answers again
            worker.wait_for(lambda: len(posts_about(slack, "polite")) >= 2, timeout_s=90,
                            what="the erroring rule resolved")
            time.sleep(3)
            first, resolved = posts_about(slack, "polite")
            assert resolved["text"].startswith("RESOLVED") and "healthy again" in resolved["text"], resolved["text"]
            assert resolved["thread_ts"] == first["ts"]  # a reply in the incident's thread
            assert len(posts_about(slack, "ghost")) == 1  # still starved: not resolved, not fired again

            worker.wait_for(lambda: worker.scalar(
                f"SELECT count() FROM evalstream.alerts FINAL WHERE alert_rule = '{RULE_HEALTH_ALERT}'") >= 3,
                what="the three messages stored")
            stored = worker.query(
                "SELECT rule, kind, delivery_status, group_values['state'] FROM evalstream.alerts FINAL "
                f"WHERE alert_rule = '{RULE_HEALTH_ALERT}' ORDER BY fired_at")
            assert sorted(map(tuple, stored)) == [("ghost", "firing", "delivered", "starved"),
                                                 ("polite", "firing", "delivered", "erroring"),
                                                 ("polite", "resolved", "delivered", "healthy")], stored
        finally:
            worker.stop()
