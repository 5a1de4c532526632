"""Alert incidents through a real worker, broker, chDB and slack-sdk's Web API client (bot token) against a
local Slack: windows exact at their boundaries, a cooldown whose digest reports exactly what it held back,
one resolution, and every later message of an incident in its firing's thread."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline import topics
from pipeline.contracts import ScoreResult, ScoreResultBatch, encode
from tests.integration.harness import WorkerProcess, produce
from tests.integration.slack_server import SlackServer

pytestmark = pytest.mark.integration

RULES = """
rules:
  - {name: probe, scorer: error_spans}
  - {name: boundary, scorer: error_spans}
  - {name: straddle, scorer: error_spans}
  - {name: noisy, scorer: error_spans}
alerts:
  - {name: probe, rule: probe, condition: failed, cooldown_s: 0, window_s: 1000000000}
  - {name: edge, rule: boundary, condition: failed, min_count: 2, window_s: 4, cooldown_s: 600}
  - {name: split, rule: straddle, condition: failed, min_count: 2, window_s: 4, cooldown_s: 0}
  - {name: quiet, rule: noisy, condition: failed, cooldown_s: 4, window_s: 1000000000}
"""


def failed(rule: str, trace_id: str, at_s: float) -> tuple[bytes, bytes]:
    result = ScoreResult(job_id=f"j-{trace_id}", rule=rule, scorer="error_spans", trace_id=trace_id,
                         trace_version=1, project="itest", status="scored", value=0.0, passed=False, threshold=1.0,
                         reason=f"{trace_id} failed", scored_at_ns=round(at_s * 1e9))
    return trace_id.encode(), encode(ScoreResultBatch(results=[result]))


def rows(worker: WorkerProcess, alert_rule: str) -> list[dict[str, Any]]:
    got = worker.query(
        "SELECT kind, failures, suppressed, trace_ids, delivery_status, title FROM evalstream.alerts FINAL "
        f"WHERE alert_rule = '{alert_rule}' ORDER BY fired_at")
    keys = ("kind", "failures", "suppressed", "trace_ids", "delivery_status", "title")
    out = [dict(zip(keys, r, strict=True)) for r in got]
    for r in out:
        r["trace_ids"] = json.loads(r["trace_ids"]) if isinstance(r["trace_ids"], str) else r["trace_ids"]
    return out


def test_windows_cooldown_digest_and_resolution(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    with SlackServer() as slack:
        worker = WorkerProcess(tmp_path / "data", broker, rules, {
            "EVALSTREAM_SLACK_BOT_TOKEN": slack.token, "EVALSTREAM_SLACK_CHANNEL": "#agents",
            "EVALSTREAM_SLACK_BASE_URL": slack.api_base_url, "EVALSTREAM_ALERT_GRACE_S": "0.5",
            "EVALSTREAM_ALERT_TICK_INTERVAL_S": "0.25"}).start()
        try:
            produce(broker, [failed("probe", "p1", time.time())], topic=topics.SCORES)
            worker.wait_for(lambda: len(rows(worker, "probe")) == 1, what="the alerter running")

            # Aligned 4 s windows a few seconds ahead, so no tick closes them before the results arrive.
            b = math.ceil((time.time() + 3) / 4) * 4 + 4
            produce(broker, [
                failed("boundary", "e-start", b - 4),  # the first instant of [b-4, b)
                failed("boundary", "e-end", b - 0.001),  # its last millisecond: 2 in one window, fires
                failed("boundary", "e-next", b),  # [b, b+4): alone, so that window clears the incident
                failed("straddle", "s-before", b - 0.001),  # one each side of the boundary: never 2 in one
                failed("straddle", "s-after", b),
            ], topic=topics.SCORES)
            now = time.time()
            produce(broker, [failed("noisy", "q-first", now)], topic=topics.SCORES)
            worker.wait_for(lambda: len(rows(worker, "quiet")) == 1, what="the quiet alert's firing")
            produce(broker, [failed("noisy", f"q-held-{i}", time.time()) for i in range(3)], topic=topics.SCORES)

            worker.wait_for(lambda: [r["kind"] for r in rows(worker, "quiet")] == ["firing", "digest"],
                            timeout_s=30, what="the digest when the 4 s cooldown ends")
            firing, digest = rows(worker, "quiet")
            assert firing["trace_ids"] == ["q-first"]
            assert digest["suppressed"] == 3 and sorted(digest["trace_ids"]) == ["q-held-0", "q-held-1", "q-held-2"]

            worker.wait_for(lambda: [r["kind"] for r in rows(worker, "edge")] == ["firing", "resolved"],
                            timeout_s=b + 20 - time.time(), what="the edge incident firing and resolving")
            fired, resolved = rows(worker, "edge")
            assert sorted(fired["trace_ids"]) == ["e-end", "e-start"] and fired["failures"] == 2
            assert resolved["trace_ids"] == ["e-next"] and resolved["failures"] == 3  # held, then reported once
            assert "RESOLVED" in resolved["title"]

            time.sleep(2)  # more ticks: still one resolution, no digest of nothing, the straddle never fired
            assert [r["kind"] for r in rows(worker, "edge")] == ["firing", "resolved"]
            assert [r["kind"] for r in rows(worker, "quiet")] == ["firing", "digest"]
            assert rows(worker, "split") == []
            everything = [r for name in ("probe", "edge", "quiet") for r in rows(worker, name)]
            assert {r["delivery_status"] for r in everything} == {"delivered"}
            attempts = worker.scalar("SELECT count() FROM evalstream.alert_deliveries FINAL WHERE ok")
            assert attempts == 6  # five messages, and the chat.update that marks the edge firing resolved

            # Slack: each firing starts a thread; the digest and the resolution are replies in it.
            assert len(slack.posts) == 5
            heads = {p["text"].split("]")[0].split("[")[-1]: p for p in slack.posts if "thread_ts" not in p}
            assert sorted(heads) == ["edge", "probe", "quiet"]
            replies = [p for p in slack.posts if "thread_ts" in p]
            assert sorted((p["thread_ts"], p["text"].split()[0]) for p in replies) == sorted([
                (heads["quiet"]["ts"], "CRITICAL"), (heads["edge"]["ts"], "RESOLVED")])
            (update,) = slack.updates
            assert update["ts"] == heads["edge"]["ts"]
        finally:
            worker.stop()
