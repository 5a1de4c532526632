"""Slack Block Kit for one incident message, laid out to be read by an on-call engineer in seconds.

Header (level, kind, alert rule), a section of fields (what was measured against what, where and
when), the traces shown with their reasons, a dashboard button and a context line (incident id,
time). Every value from outside is escaped for mrkdwn and every text is cut to Slack's limits, so a
message with 300 traces or a 10 kB reason is still accepted.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.alerts.rule_health import RULE_HEALTH_ALERT
from pipeline.contracts import Alert, AlertKind, AlertLevel, AlertTrace

__all__ = ["resolved_parent_blocks", "slack_blocks"]

# Slack's limits (https://api.slack.com/reference/block-kit/blocks)
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELDS_MAX = 10
FIELD_MAX = 2000
BLOCKS_MAX = 50
URL_MAX = 3000
CONTEXT_TEXT_MAX = 3000

LINK_URL_MAX = 1000  # a longer trace url is left out: a few links must fit in one section
REASON_MAX = 200  # per trace, so that several fit in one section
TRACES_SHOWN_MAX = 10
FALLBACK_IDS_SHOWN = 5  # shown as plain ids when the caller gave trace_ids but no traces

_LEVEL = {AlertLevel.CRITICAL: "🔴 CRITICAL", AlertLevel.WARNING: "🟠 WARNING"}


def slack_blocks(alert: Alert) -> list[dict]:
    blocks: list[dict] = [_header(_title(alert))]
    fields = _fields(alert)
    if fields:
        blocks.append({"type": "section", "fields": fields})
    traces = _traces_text(alert)
    if traces:
        blocks.append(_section(traces))
    # the caller's own words; the rule-health alert's reason is in its text
    if alert.text and (alert.kind == AlertKind.TEST or not (fields or traces) or alert.alert_rule == RULE_HEALTH_ALERT):
        blocks.append(_section(escape(alert.text)))
    if alert.dashboard_url and len(alert.dashboard_url) <= URL_MAX:
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "text": {"type": "plain_text", "text": "Open dashboard"}, "url": alert.dashboard_url,
        }]})
    blocks.append(_context(alert))
    return blocks[:BLOCKS_MAX]


def resolved_parent_blocks(alert: Alert) -> list[dict]:
    """What the incident's first message becomes once the incident is resolved."""
    parts = []
    if alert.incident_started_ns is not None:
        parts.append(f"lasted {duration(max(0, alert.fired_at_ns - alert.incident_started_ns) / 1e9)}")
    parts.append(f"{alert.failures} failure{'s' if alert.failures != 1 else ''} in total")
    parts.append(f"resolved {_clock(alert.fired_at_ns)}")
    context = {"type": "mrkdwn", "text": _cut(" · ".join(parts), CONTEXT_TEXT_MAX)}
    return [_header(f"✅ Resolved · {alert.alert_rule}"), {"type": "context", "elements": [context]}]


def _title(alert: Alert) -> str:
    if alert.kind == AlertKind.RESOLVED:
        return f"✅ Resolved · {alert.alert_rule}"
    if alert.kind == AlertKind.TEST:
        return f"🧪 Test · {alert.alert_rule}"
    level = _LEVEL[alert.level] if alert.level else "🔔 ALERT"
    return f"{level} · {alert.alert_rule} {alert.kind.value}"


def _fields(alert: Alert) -> list[dict]:
    where = [(label, escape(value)) for label, value in
             (("Eval rule", alert.rule), ("Scorer", alert.scorer), ("Project", alert.project)) if value]
    group = [(escape(k), escape(v) or "-") for k, v in alert.group.items()]
    measured: list[tuple[str, str]] = []
    if alert.observed is not None:
        measured.append(("Value", value_text(alert)))
    if alert.window_s is not None:
        measured.append(("Window", window_text(alert)))
    failures = {AlertKind.RESOLVED: "Failures in incident", AlertKind.DIGEST: "Failures"}
    measured.append((failures.get(alert.kind, "Failures in window"), str(alert.failures)))
    if alert.kind == AlertKind.DIGEST or alert.suppressed:
        measured.append(("Held back by cooldown", str(alert.suppressed)))
    if alert.kind == AlertKind.RESOLVED and alert.incident_started_ns is not None:
        measured.append(("Lasted", duration(max(0, alert.fired_at_ns - alert.incident_started_ns) / 1e9)))
    if group and len(where) + len(group) + len(measured) > FIELDS_MAX:  # many group keys: one field for all
        group = [("Group", ", ".join(f"{k} {v}" for k, v in group))]
    return [{"type": "mrkdwn", "text": _cut(f"*{label}*\n{value}", FIELD_MAX)}
            for label, value in (where + group + measured)[:FIELDS_MAX]]


def value_text(alert: Alert) -> str:
    """`12 ≥ 10` for a count, `32% ≥ 25% (16 of 50)` for a rate."""
    observed = alert.observed if alert.observed is not None else 0.0
    if alert.measure == "rate":
        text = percent(observed)
        if alert.threshold is not None:
            text += f" {'≥' if observed >= alert.threshold else '<'} {percent(alert.threshold)}"
        if alert.samples is not None:
            text += f" ({round(observed * alert.samples)} of {alert.samples})"
        return text
    text = f"{round(observed)}"
    if alert.threshold is not None:
        text += f" {'≥' if observed >= alert.threshold else '<'} {round(alert.threshold)}"
    return text


def percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}".rstrip("0").rstrip(".") + "%"


def window_text(alert: Alert) -> str:
    text = duration(alert.window_s or 0)
    if alert.window_start_ns is not None:
        text += f" from {_clock(alert.window_start_ns)}"
    return text


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _traces_text(alert: Alert) -> str:
    shown = alert.traces or [AlertTrace(trace_id=t) for t in alert.trace_ids[:FALLBACK_IDS_SHOWN]]
    total = max(len(alert.trace_ids), len(shown))
    lines: list[str] = []
    room = SECTION_TEXT_MAX - 40  # kept for the "…and N more" line
    for trace in shown[:TRACES_SHOWN_MAX]:
        line = _trace_line(trace)
        if sum(len(x) + 1 for x in lines) + len(line) > room:
            break
        lines.append(line)
    if total > len(lines):
        lines.append(f"…and {total - len(lines)} more")
    return "\n".join(lines)


def _trace_line(trace: AlertTrace) -> str:
    label = escape(trace.trace_id[:200]).replace("|", "¦")
    link = f"<{_url(trace.url)}|{label}>" if trace.url and len(trace.url) <= LINK_URL_MAX else f"`{label}`"
    reason = " ".join(trace.reason.split())
    return f"• {link} — {escape(_cut(reason, REASON_MAX))}" if reason else f"• {link}"


def escape(text: str) -> str:
    """Slack mrkdwn control characters: only these three need escaping."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _url(url: str) -> str:
    return url.replace("|", "%7C").replace("<", "%3C").replace(">", "%3E").replace(" ", "%20")


def _context(alert: Alert) -> dict:
    parts = []
    if alert.incident_id:
        parts.append(f"incident `{escape(alert.incident_id[:100])}`")
    parts.append(f"sent {_clock(alert.fired_at_ns, date=True)}")
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(" · ".join(parts), CONTEXT_TEXT_MAX)}]}


def _header(text: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": _cut(text, HEADER_MAX), "emoji": True}}


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_TEXT_MAX)}}


def _clock(ns: int, *, date: bool = False) -> str:
    moment = datetime.fromtimestamp(ns / 1e9, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if date else "%H:%M:%S UTC")


def _cut(text: str, limit: int) -> str:
    """At most `limit` characters, never ending in half an `&amp;`-style entity."""
    if len(text) <= limit:
        return text
    text = text[: limit - 1]
    amp = text.rfind("&", len(text) - 5)
    if amp != -1 and ";" not in text[amp:]:
        text = text[:amp]
    return text + "…"
