"""`evalstream alerts list|test`: a sample alert reaches Slack through slack-sdk's real client."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.slack_server import SlackServer

RULES = """
rules:
  - name: errors
    scorer: error_spans
alerts:
  - {name: error-alert, rule: errors, condition: failed}
  - {name: burst, rule: errors, condition: failed, min_count: 5, window_s: 60}
"""


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_alerts_list_and_a_test_message_to_slack(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    with SlackServer() as slack:
        env = {"EVALSTREAM_SLACK_WEBHOOK_URL": slack.url, "EVALSTREAM_DATA_DIR": str(tmp_path)}
        listed = run_cli("alerts", "list", "--rules", str(rules), env=env)
        assert listed.returncode == 0, listed.stderr
        assert "burst" in listed.stdout and "critical at matches ≥ 5 per 60s" in listed.stdout and "slack-webhook" in listed.stdout

        sent = run_cli("alerts", "test", "burst", "--rules", str(rules), env=env)
        assert sent.returncode == 0, sent.stderr
        assert "delivered" in sent.stdout
        (message,) = slack.messages
        assert message["text"].startswith("[TEST] CRITICAL [burst] errors firing: 5 vs threshold 5 in 60s")

        slack.down = True
        failed = run_cli("alerts", "test", "error-alert", "--rules", str(rules), env=env)
        assert failed.returncode != 0 and "delivery to slack-webhook failed" in failed.stderr

        unknown = run_cli("alerts", "test", "nope", "--rules", str(rules), env=env)
        assert unknown.returncode != 0 and "known: error-alert, burst" in unknown.stderr
