"""Render what the incident state machine decided (a Notice) as an Alert: the stored and sent message."""

from __future__ import annotations

import time
from typing import Any

from pipeline.alerts.incidents import Notice, Reading
from pipeline.contracts import Alert, AlertKind, AlertLevel, AlertTrace
from pipeline.rules.model import AlertRule

LEVEL_NAMES = {1: AlertLevel.WARNING, 2: AlertLevel.CRITICAL}


def fmt_value(measure: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" if measure == "rate" else f"{value:g}"


def fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _failures(n: int) -> str:
    return f"{n} failure" if n == 1 else f"{n} failures"


def _reading_text(alert: AlertRule, reading: Reading | None) -> str:
    if reading is None:
        return ""
    measure = alert.levels.measure
    if measure == "rate":
        return (f"failure rate {fmt_value('rate', reading.observed)} vs threshold "
                f"{fmt_value('rate', reading.threshold)} ({reading.matches} of {reading.samples} results)")
    return f"{reading.matches} vs threshold {fmt_value('count', reading.threshold)}"


def _title(alert: AlertRule, notice: Notice, meta: dict[str, Any]) -> str:
    where = " (" + ", ".join(f"{k} {v or '-'}" for k, v in meta["group"].items()) + ")" if meta["group"] else ""
    level = LEVEL_NAMES.get(notice.level, AlertLevel.CRITICAL).value.upper()
    rule = meta.get("rule") or alert.rule or "every rule"
    if notice.kind == AlertKind.RESOLVED:
        return (f"RESOLVED [{alert.name}] {rule}{where} after "
                f"{fmt_duration(notice.at - notice.incident_started)}: {_failures(notice.failures)} in all")
    if notice.kind == AlertKind.DIGEST:
        return f"{level} [{alert.name}] {rule}{where}: {notice.suppressed} more since the last message"
    what = _reading_text(alert, notice.reading)
    verb = "escalated to critical" if notice.kind == AlertKind.ESCALATED else "firing"
    return f"{level} [{alert.name}] {rule}{where} {verb}: {what} in {alert.window_s:g}s"


def _text(alert: AlertRule, notice: Notice, meta: dict[str, Any], traces: list[AlertTrace]) -> str:
    lines = [f"alert {alert.name}: {alert.describe()}",
             f"scorer {meta.get('scorer') or '-'} · project {meta.get('project') or '-'}"]
    if notice.reading is not None:
        window = "the window that cleared" if notice.kind == AlertKind.RESOLVED else "this window"
        lines.append(f"{window}: {_reading_text(alert, notice.reading)}")
    if notice.suppressed:
        lines.append(f"held back by the {alert.cooldown_s:g}s cooldown and reported here: {notice.suppressed}")
    for trace in traces:
        lines.append(f"• {trace.url or trace.trace_id}: {trace.reason}")
    more = max(len(notice.trace_ids), notice.failures if notice.kind != AlertKind.RESOLVED else 0) - len(traces)
    if more > 0:
        lines.append(f"… and {more} more")
    return "\n".join(lines)


def render(alert: AlertRule, notice: Notice, meta: dict[str, Any], *, channel: str,
           trace_url_template: str | None = None, dashboard_url_template: str | None = None,
           now_ns: int | None = None) -> Alert:
    """`meta`: the group and the latest rule / scorer / project seen for it."""
    traces = [AlertTrace(trace_id=tid, reason=reason,
                         url=trace_url_template.format(trace_id=tid) if trace_url_template else None)
              for tid, reason in notice.traces]
    rule = meta.get("rule") or alert.rule or ""
    started_ms = int(notice.incident_started * 1000)
    dashboard = None
    if dashboard_url_template:
        dashboard = dashboard_url_template.format(
            alert_rule=alert.name, rule=rule, from_ms=started_ms - int(alert.window_s * 1000),
            to_ms=int(notice.at * 1000) + int(alert.window_s * 1000))
    reading = notice.reading
    return Alert(
        alert_id=notice.notice_id, incident_id=notice.incident_id, alert_rule=alert.name, kind=notice.kind,
        level=LEVEL_NAMES.get(notice.level), rule=rule or None, scorer=meta.get("scorer"),
        project=meta.get("project"), group=dict(meta["group"]), title=_title(alert, notice, meta)[:300],
        text=_text(alert, notice, meta, traces), measure=alert.levels.measure,
        observed=reading.observed if reading else None, threshold=reading.threshold if reading else None,
        failures=notice.failures, samples=reading.samples if reading and alert.levels.measure == "rate" else None,
        suppressed=notice.suppressed, window_s=alert.window_s,
        window_start_ns=int(notice.window_start * 1e9) if notice.window_start is not None else None,
        incident_started_ns=int(notice.incident_started * 1e9), trace_ids=notice.trace_ids, traces=traces,
        dashboard_url=dashboard, fired_at_ns=now_ns or time.time_ns(), thread=dict(notice.thread), channel=channel,
    )


def sample_alert(alert: AlertRule, channel: str, **templates: str | None) -> Alert:
    """What `evalstream alerts test` sends: a firing at the critical threshold, marked as a test."""
    from pipeline.alerts.incidents import read

    now = time.time()
    lv = alert.levels
    samples = max(lv.min_samples, 10) if lv.measure == "rate" else 0
    matches = round(lv.critical * samples) if lv.measure == "rate" else int(lv.critical)
    notice = Notice(kind=AlertKind.FIRING, level=2, incident_id="test", incident_started=now, at=now,
                    failures=matches, reading=read(lv, matches, samples or matches),
                    window_start=now - now % alert.window_s,
                    traces=[("test-trace", "a sample failure sent by `evalstream alerts test`")],
                    trace_ids=["test-trace"])
    meta = {"group": {k: "sample" for k in alert.group_by}, "rule": alert.rule or "any-rule", "scorer": "sample",
            "project": "sample"}
    rendered = render(alert, notice, meta, channel=channel, **templates)
    return rendered.model_copy(update={"kind": AlertKind.TEST, "alert_id": f"test-{time.time_ns()}",
                                       "title": "[TEST] " + rendered.title})
