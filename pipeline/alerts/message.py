"""Build an Alert (stored and delivered) from a firing."""

from __future__ import annotations

import hashlib
import time

from pipeline.alerts.evaluator import Firing
from pipeline.contracts import Alert, ScoreResult
from pipeline.rules.model import AlertRule


def build_alert(alert: AlertRule, result: ScoreResult, firing: Firing, channel: str,
                trace_url_template: str | None = None, group: dict[str, str] | None = None) -> Alert:
    fired_at = time.time_ns()
    alert_id = hashlib.blake2b(
        f"{alert.name}\x00{result.job_id}\x00{firing.failures}".encode(), digest_size=12
    ).hexdigest()
    where = " (" + ", ".join(f"{k} {v or '-'}" for k, v in group.items()) + ")" if group else ""
    if alert.kind == "each":
        title = f"[{alert.name}] {result.rule} failed on trace {result.trace_id}{where}"
    else:
        title = f"[{alert.name}] {firing.failures} failures of {result.rule} within {alert.window_s:g}s{where}"
    value = f"value {result.value!r} vs threshold {result.threshold!r}" if result.status == "scored" \
        else f"scorer error {result.error_type}"
    lines = [f"scorer {result.scorer} · project {result.project} · {value}"]
    for trace_id, reason in zip(firing.trace_ids, firing.reasons, strict=False):
        link = trace_url_template.format(trace_id=trace_id) if trace_url_template else trace_id
        lines.append(f"• {link}: {reason}")
    return Alert(
        alert_id=alert_id, alert_rule=alert.name, kind=alert.kind, rule=result.rule, scorer=result.scorer,
        project=result.project, title=title, text="\n".join(lines), failures=firing.failures,
        window_s=alert.window_s if alert.kind == "count" else None, trace_ids=firing.trace_ids,
        fired_at_ns=fired_at, channel=channel,
    )


def slack_blocks(alert: Alert) -> list[dict]:
    return [
        {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": alert.text[:2900]}},
    ]
