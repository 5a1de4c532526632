"""pipeline/alerts/blocks: Block Kit an on-call engineer reads in seconds, always within Slack's limits."""

from __future__ import annotations

import json

from pipeline.alerts.blocks import resolved_parent_blocks, slack_blocks
from pipeline.contracts import Alert, AlertKind, AlertLevel, AlertTrace

T0 = 1_700_000_460 * 10**9  # 2023-11-14 22:21:00 UTC


def make_alert(**changes: object) -> Alert:
    fields: dict = {
        "alert_id": "a1", "incident_id": "inc-42", "alert_rule": "burst", "kind": AlertKind.FIRING,
        "level": AlertLevel.CRITICAL, "rule": "tool-errors", "scorer": "error_spans", "project": "shop",
        "title": "[burst] 12 failures", "text": "plain text", "observed": 12, "threshold": 10, "failures": 12,
        "window_s": 60, "window_start_ns": T0, "trace_ids": ["t1", "t2"],
        "traces": [AlertTrace(trace_id="t1", reason="search failed", url="https://ui/t/t1"),
                   AlertTrace(trace_id="t2", reason="timeout")],
        "fired_at_ns": T0 + 60 * 10**9,
    }
    return Alert(**{**fields, **changes})


def header(blocks: list[dict]) -> str:
    return blocks[0]["text"]["text"]


def fields(blocks: list[dict]) -> dict[str, str]:
    section = next(b for b in blocks if b["type"] == "section" and "fields" in b)
    return dict(f["text"].removeprefix("*").split("*\n", 1) for f in section["fields"])


def traces(blocks: list[dict]) -> str:
    return next(b for b in blocks if b["type"] == "section" and "text" in b)["text"]["text"]


def check_limits(blocks: list[dict]) -> None:
    assert len(blocks) <= 50
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150 and block["text"]["type"] == "plain_text"
        if block["type"] == "section":
            assert len(block.get("text", {}).get("text", "")) <= 3000
            assert len(block.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
    json.dumps(blocks)  # plain JSON, as sent


def test_a_count_alert_names_level_kind_and_rule_and_shows_count_against_threshold() -> None:
    blocks = slack_blocks(make_alert(group={"agent": "researcher"}))
    assert header(blocks) == "🔴 CRITICAL · burst firing"
    shown = fields(blocks)
    assert shown["Eval rule"] == "tool-errors" and shown["Scorer"] == "error_spans" and shown["Project"] == "shop"
    assert shown["agent"] == "researcher"
    assert shown["Value"] == "12 ≥ 10" and shown["Failures in window"] == "12"
    assert shown["Window"] == "60 s from 22:21:00 UTC"
    context = blocks[-1]["elements"][0]["text"]
    assert blocks[-1]["type"] == "context" and "inc-42" in context and "2023-11-14 22:22:00 UTC" in context
    check_limits(blocks)


def test_a_rate_alert_shows_percentages_and_the_samples() -> None:
    blocks = slack_blocks(make_alert(measure="rate", observed=0.32, threshold=0.25, samples=50,
                                     level=AlertLevel.WARNING, kind=AlertKind.ESCALATED))
    assert header(blocks) == "🟠 WARNING · burst escalated"
    assert fields(blocks)["Value"] == "32% ≥ 25% (16 of 50)"
    below = slack_blocks(make_alert(measure="rate", observed=1 / 3, threshold=0.5, samples=3))
    assert fields(below)["Value"] == "33.3% < 50% (1 of 3)"


def test_digest_and_resolved_say_what_they_are() -> None:
    digest = slack_blocks(make_alert(kind=AlertKind.DIGEST, suppressed=37, failures=37, trace_ids=["t1"] * 37))
    assert header(digest) == "🔴 CRITICAL · burst digest"
    assert fields(digest)["Held back by cooldown"] == "37" and "…and 35 more" in traces(digest)
    resolved = slack_blocks(make_alert(kind=AlertKind.RESOLVED, failures=80, incident_started_ns=T0 - 600 * 10**9))
    assert header(resolved) == "✅ Resolved · burst"
    assert fields(resolved)["Failures in incident"] == "80" and fields(resolved)["Lasted"] == "11 min"


def test_traces_are_links_when_they_have_a_url_and_plain_ids_otherwise() -> None:
    text = traces(slack_blocks(make_alert()))
    assert text.splitlines() == ["• <https://ui/t/t1|t1> — search failed", "• `t2` — timeout"]
    assert "more" not in text


def test_text_from_outside_is_escaped_for_mrkdwn() -> None:
    blocks = slack_blocks(make_alert(
        rule="a<b>&c", group={"agent": "<!channel>"},
        traces=[AlertTrace(trace_id="t<1>", reason="x < y && <@U123>", url="https://ui/t?a=1&b=<2>|x")]))
    shown = fields(blocks)
    assert shown["Eval rule"] == "a&lt;b&gt;&amp;c" and shown["agent"] == "&lt;!channel&gt;"
    line = traces(blocks).splitlines()[0]
    assert line == "• <https://ui/t?a=1&b=%3C2%3E%7Cx|t&lt;1&gt;> — x &lt; y &amp;&amp; &lt;@U123&gt;"


def test_300_traces_with_huge_reasons_stay_within_slacks_limits() -> None:
    many = [AlertTrace(trace_id=f"trace-{i:04d}", reason="why " * 5000, url=f"https://ui/t/{i}")
            for i in range(300)]
    alert = make_alert(traces=many, trace_ids=[t.trace_id for t in many], alert_rule="r" * 400,
                       group={f"key{i}": "v" * 5000 for i in range(20)}, rule="&" * 3000)
    blocks = slack_blocks(alert)
    check_limits(blocks)
    text = traces(blocks)
    shown = text.count("• <https://ui/t/")
    assert 0 < shown <= 10 and text.endswith(f"…and {300 - shown} more")
    assert all(len(line) < 400 for line in text.splitlines())  # reasons truncated
    assert "Group" in fields(blocks)  # 20 group keys folded into one field
    assert not fields(blocks)["Eval rule"].rstrip("…").endswith(("&", "&a", "&am", "&amp"))  # no half entity


def test_only_trace_ids_are_shown_as_plain_ids_with_the_rest_counted() -> None:
    text = traces(slack_blocks(make_alert(traces=[], trace_ids=[f"t{i}" for i in range(8)])))
    assert text.splitlines()[0] == "• `t0`" and text.endswith("…and 3 more")


def test_the_dashboard_is_a_button_when_known() -> None:
    blocks = slack_blocks(make_alert(dashboard_url="https://grafana/d/alerts?rule=burst"))
    (actions,) = [b for b in blocks if b["type"] == "actions"]
    assert actions["elements"][0]["url"] == "https://grafana/d/alerts?rule=burst"
    assert not [b for b in slack_blocks(make_alert()) if b["type"] == "actions"]


def test_a_test_message_shows_the_callers_text() -> None:
    blocks = slack_blocks(make_alert(kind=AlertKind.TEST, level=None, rule=None, scorer=None, project=None,
                                     observed=None, window_s=None, trace_ids=[], traces=[], text="hello <team>"))
    assert header(blocks) == "🧪 Test · burst"
    assert {"type": "section", "text": {"type": "mrkdwn", "text": "hello &lt;team&gt;"}} in blocks
    check_limits(blocks)


def test_the_resolved_parent_is_short() -> None:
    blocks = resolved_parent_blocks(make_alert(kind=AlertKind.RESOLVED, failures=80,
                                               incident_started_ns=T0 - 3 * 3600 * 10**9))
    assert header(blocks) == "✅ Resolved · burst" and len(blocks) == 2
    assert blocks[1]["elements"][0]["text"].startswith("lasted 3 h 1 min · 80 failures in total")
    check_limits(blocks)
