"""With Slack down, an alert is stored as failed and delivered once Slack is back: nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import WorkerProcess, batch, produce, span
from tests.integration.slack_server import SlackServer

pytestmark = pytest.mark.integration

RULES = """
rules:
  - name: errors
    scorer: error_spans
alerts:
  - name: error-alert
    rule: errors
    condition: failed
    window_s: 3600
"""


def test_an_alert_that_could_not_be_delivered_is_delivered_when_slack_is_back(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    with SlackServer() as slack:
        slack.down = True
        worker = WorkerProcess(tmp_path / "data", broker, rules, {
            "EVALSTREAM_SLACK_WEBHOOK_URL": slack.url, "EVALSTREAM_ALERT_RETRY_BACKOFF_S": "1",
            "EVALSTREAM_ALERT_RETRY_MAX_BACKOFF_S": "2"}).start()
        try:
            root = span("t-broken", "r", None, "handle")
            child = span("t-broken", "c", "r", "search", span_type="tool", status="error")
            produce(broker, [(b"t-broken", batch("t-broken", [root, child], final=True))])

            def status() -> list[list]:
                return worker.query("SELECT delivery_status, delivery_attempts, delivery_error "
                                    "FROM evalstream.alerts FINAL")

            worker.wait_for(lambda: bool(status()) and status()[0][0] == "failed", what="a failed delivery stored")
            assert "503" in status()[0][2] or "service_unavailable" in status()[0][2]
            worker.wait_for(lambda: slack.refused >= 2, what="at least one redelivery while Slack is down")
            assert slack.messages == []
            slack.down = False
            worker.wait_for(lambda: status()[0][0] == "delivered", what="the alert delivered once Slack is back")
            (_, attempts, error), = status()
            assert attempts >= 2 and error in ("", None)
            assert len(slack.messages) == 1 and "errors" in slack.messages[0]["text"]
            tries = worker.query("SELECT ok, http_status FROM evalstream.alert_deliveries FINAL ORDER BY at")
            assert tries[-1] == [True, 200] and len(tries) == attempts  # every try is a row
            assert all(not ok and status == 503 for ok, status in tries[:-1])
        finally:
            worker.stop()
