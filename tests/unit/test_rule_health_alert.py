"""The built-in rule-health alert's incident logic (pure) and its message."""

from __future__ import annotations

from pipeline.alerts.blocks import slack_blocks
from pipeline.alerts.rule_health import (
    RULE_HEALTH_ALERT,
    RuleIncident,
    incidents_from_rows,
    render_health,
    step,
)
from pipeline.contracts import AlertKind, AlertLevel
from pipeline.rules.health import HealthState

COOLDOWN = 600.0
REFUSING = "provider refusing (AuthenticationError: 401): 5 of 6 results in the last 5 min are errors"


def kinds(notices: list) -> list[str]:
    return [n.kind.value for n in notices]


def test_healthy_to_erroring_fires_once_and_stays_quiet_while_erroring() -> None:
    inc = RuleIncident("polite")
    assert step(inc, HealthState.HEALTHY, "scoring", 0.0, COOLDOWN) == []
    fired = step(inc, HealthState.ERRORING, REFUSING, 30.0, COOLDOWN, scorer="llm_criteria", failures=5)
    assert kinds(fired) == ["firing"]
    assert fired[0].reason == REFUSING and fired[0].state == "erroring" and fired[0].failures == 5
    assert inc.open and inc.started == 30.0
    for t in (60.0, 90.0, 1000.0, 5000.0):  # past the cooldown too: one message per incident
        assert step(inc, HealthState.ERRORING, REFUSING, t, COOLDOWN) == []
    assert step(inc, HealthState.BACKLOGGED, "budget exhausted: 3 job(s) deferred", 5030.0, COOLDOWN) == []
    assert inc.open  # backlogged neither fires nor resolves


def test_erroring_to_healthy_resolves_once() -> None:
    inc = RuleIncident("polite")
    fired = step(inc, HealthState.ERRORING, REFUSING, 10.0, COOLDOWN)
    resolved = step(inc, HealthState.HEALTHY, "scoring", 130.0, COOLDOWN)
    assert kinds(resolved) == ["resolved"]
    assert resolved[0].incident_id == fired[0].incident_id and resolved[0].incident_started == 10.0
    assert resolved[0].notice_id != fired[0].notice_id
    assert not inc.open
    assert step(inc, HealthState.HEALTHY, "scoring", 160.0, COOLDOWN) == []
    assert step(inc, HealthState.IDLE, "no matching traffic in 1.0 h", 190.0, COOLDOWN) == []


def test_idle_resolves_too() -> None:
    inc = RuleIncident("r")
    step(inc, HealthState.STARVED, "scorer missing: unknown scorer 'ghost'", 0.0, COOLDOWN)
    assert kinds(step(inc, HealthState.IDLE, "disabled in the rules file", 60.0, COOLDOWN)) == ["resolved"]


def test_starved_fires_with_its_reason() -> None:
    inc = RuleIncident("ghost")
    fired = step(inc, HealthState.STARVED, "scorer missing: unknown scorer 'ghost_scorer'", 5.0, COOLDOWN,
                 scorer="ghost_scorer")
    assert kinds(fired) == ["firing"] and fired[0].state == "starved"
    alert = render_health(fired[0], channel="slack")
    assert alert.alert_rule == RULE_HEALTH_ALERT and alert.kind == AlertKind.FIRING
    assert alert.level == AlertLevel.CRITICAL and alert.rule == "ghost" and alert.scorer == "ghost_scorer"
    assert "starved" in alert.title and "scorer missing" in alert.title
    assert alert.alert_id == fired[0].notice_id  # the same notice renders the same id: a re-send replaces its row


def test_cooldown_holds_a_flapping_rule_and_fires_when_it_ends() -> None:
    inc = RuleIncident("flaky")
    assert kinds(step(inc, HealthState.ERRORING, REFUSING, 0.0, COOLDOWN)) == ["firing"]
    assert kinds(step(inc, HealthState.HEALTHY, "scoring", 60.0, COOLDOWN)) == ["resolved"]
    assert step(inc, HealthState.ERRORING, REFUSING, 120.0, COOLDOWN) == []  # within the cooldown: held
    assert step(inc, HealthState.ERRORING, REFUSING, 300.0, COOLDOWN) == []
    again = step(inc, HealthState.ERRORING, REFUSING, 600.0, COOLDOWN)
    assert kinds(again) == ["firing"] and again[0].incident_started == 120.0  # since it turned bad


def test_a_rule_that_recovers_within_the_cooldown_sends_nothing() -> None:
    inc = RuleIncident("flaky")
    step(inc, HealthState.ERRORING, REFUSING, 0.0, COOLDOWN)
    step(inc, HealthState.HEALTHY, "scoring", 60.0, COOLDOWN)
    assert step(inc, HealthState.STARVED, "scorer missing", 100.0, COOLDOWN) == []
    assert step(inc, HealthState.HEALTHY, "scoring", 200.0, COOLDOWN) == []
    assert step(inc, HealthState.HEALTHY, "scoring", 900.0, COOLDOWN) == []
    assert inc.bad_since is None and not inc.open


def test_resolved_message_threads_under_the_firing_and_says_what_it_was() -> None:
    inc = RuleIncident("polite")
    step(inc, HealthState.ERRORING, REFUSING, 0.0, COOLDOWN)
    inc.thread.update({"slack": "100.1", "slack:channel": "C1"})
    resolved = step(inc, HealthState.HEALTHY, "scoring", 300.0, COOLDOWN)[0]
    alert = render_health(resolved, channel="slack", fired_reason=inc.reason)
    assert alert.kind == AlertKind.RESOLVED and alert.thread == {"slack": "100.1", "slack:channel": "C1"}
    assert "healthy again after 5 min" in alert.title and "provider refusing" in alert.text
    texts = [b["text"]["text"] for b in slack_blocks(alert) if b["type"] == "section" and "text" in b]
    assert any("provider refusing" in t for t in texts)  # the reason is shown in Slack, not only stored


def test_state_from_the_alerts_table_keeps_an_open_incident_open_after_a_restart() -> None:
    inc = RuleIncident("polite")
    fired = step(inc, HealthState.ERRORING, REFUSING, 100.0, COOLDOWN)[0]
    text = render_health(fired, channel="slack").text
    rows = [["polite", "firing", fired.incident_id, 100.0, 100.0, "erroring", text, "slack=100.1,slack:channel=C1"],
            ["ghost", "resolved", "i2", 50.0, 60.0, "healthy", "rule ghost is healthy: scoring", ""]]
    loaded = incidents_from_rows(rows)
    polite = loaded["polite"]
    assert polite.open and polite.incident_id == fired.incident_id and polite.reason == REFUSING
    assert polite.thread == {"slack": "100.1", "slack:channel": "C1"}
    assert step(polite, HealthState.ERRORING, REFUSING, 200.0, COOLDOWN) == []  # no second firing
    resolved = step(polite, HealthState.HEALTHY, "scoring", 300.0, COOLDOWN)
    assert kinds(resolved) == ["resolved"] and resolved[0].incident_id == fired.incident_id
    ghost = loaded["ghost"]
    assert not ghost.open and ghost.last_fired == 60.0
    assert step(ghost, HealthState.ERRORING, REFUSING, 100.0, COOLDOWN) == []  # the cooldown survives too


# -- the sink's evaluator around it, with fakes: storage, channel, Kafka ------------------------------------

class _Reader:
    database = "evalstream"

    def __init__(self, stored: list[list], errors: int) -> None:
        self.stored = stored
        self.errors = errors

    async def arows(self, sql: str) -> list[list]:
        assert RULE_HEALTH_ALERT in sql
        return self.stored

    async def aquery(self, sql: str):
        from pipeline.storage.reader import QueryResult

        if "decisions" in sql:
            return QueryResult(["rule", "matched", "sampled"], ["", "", ""], [["polite", 6, 6]])
        return QueryResult(["rule", "scored", "errored", "recent_results", "recent_errors", "last_error_type",
                            "last_error_message"], [""] * 7,
                           [["polite", 6 - self.errors, self.errors, 6, self.errors, "AuthenticationError", "401"]])


class _Channel:
    name = "console"

    def __init__(self) -> None:
        self.sent: list = []

    async def deliver(self, alert):
        self.sent.append(alert)
        return alert


def _evaluator(reader: _Reader, *, leads: bool = True):
    from types import SimpleNamespace

    from pipeline.metrics import Counters
    from pipeline.rules.loader import parse_rules
    from pipeline.settings import Settings
    from pipeline.worker.rule_health_alerts import RuleHealthAlerts
    from scorers.testing import resolver

    sent: list = []

    async def send(topic: str, key: str, value: bytes, partition: int | None = None) -> None:
        sent.append((topic, key))

    ruleset = parse_rules({"rules": [{"name": "polite", "scorer": "error_spans"}]})
    ctx = SimpleNamespace(settings=Settings(), ruleset=ruleset, scorers=resolver(), counters=Counters(), send=send)
    channel = _Channel()
    return RuleHealthAlerts(ctx, reader, channel, leads=lambda: leads), channel, sent  # type: ignore[arg-type]


def test_the_evaluator_fires_once_stores_it_and_resolves() -> None:
    import asyncio

    reader = _Reader([], errors=6)
    evaluator, channel, sent = _evaluator(reader)
    asyncio.run(evaluator.check(1000.0))
    asyncio.run(evaluator.check(1030.0))
    assert [(a.kind.value, a.rule) for a in channel.sent] == [("firing", "polite")]
    assert "provider refusing" in channel.sent[0].title
    assert sent == [("evalstream.alerts.v1", channel.sent[0].alert_id)]
    gauges = evaluator.ctx.counters.snapshot()
    assert {k: v for k, v in gauges.items() if k.startswith("rule_health") and v} == {
        "rule_health{rule=polite,state=erroring}": 1.0}
    reader.errors = 0
    asyncio.run(evaluator.check(1060.0))
    assert [a.kind.value for a in channel.sent] == ["firing", "resolved"]
    assert evaluator.ctx.counters.snapshot()["rule_health{rule=polite,state=erroring}"] == 0.0


def test_the_evaluator_does_not_fire_again_for_an_incident_stored_before_a_restart() -> None:
    import asyncio

    stored = [["polite", "firing", "inc1", 900.0, 900.0, "erroring", "rule polite is erroring: provider refusing", ""]]
    evaluator, channel, _ = _evaluator(_Reader(stored, errors=6))
    asyncio.run(evaluator.check(1000.0))
    assert channel.sent == []
    assert evaluator.incidents is not None and evaluator.incidents["polite"].open


def test_a_sink_that_does_not_lead_checks_nothing() -> None:
    import asyncio

    evaluator, channel, _ = _evaluator(_Reader([], errors=6), leads=False)
    asyncio.run(evaluator.check(1000.0))
    assert channel.sent == [] and evaluator.incidents is None
