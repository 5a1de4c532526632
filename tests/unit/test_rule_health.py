"""Rule health (pipeline/rules/health.py): table-driven classification, the reasons in words, and the table
at narrow widths (pipeline/views/rule_health.py, views/tables.py)."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from rich.console import Console

from pipeline.errors import ScorerError
from pipeline.rules import EvalRule
from pipeline.rules.health import (
    BACKLOG_MIN_WAITING,
    ERRORING_MIN_ERRORS,
    STARVED_AFTER_S,
    HealthState,
    RuleFigures,
    assess,
    classify,
    error_cause,
    scorer_problems,
)
from pipeline.views.rule_health import HEADERS, health_json, print_rule_health

NOW = 1_800_000_000.0
HOUR = 3600.0


def figures(**kw: Any) -> RuleFigures:
    return RuleFigures(rule="r", **kw)


FLOWING = {"matched": 40, "sampled": 40, "scored": 40, "recent_results": 10, "recent_queued": 10,
           "last_result_at": NOW - 5, "last_score_at": NOW - 5, "last_decision_at": NOW - 5}
AUTH = {"last_error_type": "AuthenticationError", "last_error_message": "Error code: 401 - invalid api key"}

CASES = [
    ("scoring", figures(**FLOWING), HealthState.HEALTHY, "scoring"),
    ("some errors, under half", figures(**{**FLOWING, "errored": 4, "recent_errors": 4, **AUTH}),
     HealthState.HEALTHY, "4 error(s)"),
    ("all sampled out", figures(matched=30), HealthState.HEALTHY, "all sampled out"),
    ("no traffic", figures(), HealthState.IDLE, "no matching traffic in 60 min"),
    ("filter matches nothing", figures(filtered_out=12), HealthState.IDLE, "matched none of 12"),
    ("provider refusing", figures(**{**FLOWING, "scored": 0, "errored": 10, "recent_errors": 10, **AUTH}),
     HealthState.ERRORING, "provider refusing (AuthenticationError"),
    ("rate-limited", figures(**{**FLOWING, "errored": 8, "recent_errors": 8, "last_error_type": "RateLimitError"}),
     HealthState.ERRORING, "provider rate-limiting"),
    ("a scorer bug", figures(**{**FLOWING, "errored": 10, "recent_errors": 10, "last_error_type": "ValueError",
                                "last_error_message": "bad trace"}),
     HealthState.ERRORING, "scorer raising ValueError: bad trace"),
    ("too few errors to call", figures(**{**FLOWING, "recent_results": ERRORING_MIN_ERRORS - 1,
                                          "recent_errors": ERRORING_MIN_ERRORS - 1}), HealthState.HEALTHY, ""),
    ("little traffic, all errors", figures(matched=5, sampled=5, errored=5, recent_results=1, recent_errors=1,
                                           last_result_was_error=True, last_result_at=NOW - 60, **AUTH),
     HealthState.ERRORING, "5 of 5 results are errors"),
    ("little traffic, fixed since", figures(matched=6, sampled=6, errored=5, scored=1, recent_results=1,
                                            last_result_was_error=False, last_result_at=NOW - 60),
     HealthState.HEALTHY, ""),
    ("no scorer role", figures(matched=20, sampled=20, waiting=20, oldest_waiting_at=NOW - STARVED_AFTER_S - 60,
                               last_decision_at=NOW - 1), HealthState.STARVED, "no result in the window"),
    ("results stopped", figures(matched=20, sampled=20, scored=5, waiting=15, last_result_at=NOW - 2 * STARVED_AFTER_S,
                                oldest_waiting_at=NOW - STARVED_AFTER_S - 1), HealthState.STARVED, "no result for 20 min"),
    ("one lost job", figures(**{**FLOWING, "waiting": 1, "oldest_waiting_at": NOW - STARVED_AFTER_S - 1}),
     HealthState.STARVED, "1 queued job(s) got no result"),
    ("young jobs waiting", figures(matched=3, sampled=3, waiting=3, oldest_waiting_at=NOW - 30, recent_queued=3),
     HealthState.HEALTHY, ""),
    ("budget", figures(**{**FLOWING, "deferred": 7, "deferred_waiting": 7}), HealthState.BACKLOGGED,
     "budget exhausted: 7 job(s) deferred"),
    ("growing queue", figures(**{**FLOWING, "waiting": BACKLOG_MIN_WAITING, "oldest_waiting_at": NOW - 120,
                                 "recent_queued": 50, "recent_results": 10}),
     HealthState.BACKLOGGED, f"{BACKLOG_MIN_WAITING} job(s) waiting"),
    ("queue draining", figures(**{**FLOWING, "waiting": 30, "oldest_waiting_at": NOW - 120, "recent_queued": 5,
                                  "recent_results": 40}), HealthState.HEALTHY, ""),
]


@pytest.mark.parametrize(("name", "f", "state", "reason"), CASES, ids=[c[0] for c in CASES])
def test_classify(name: str, f: RuleFigures, state: HealthState, reason: str) -> None:
    got_state, got_reason = classify(f, now=NOW, window_s=HOUR)
    assert got_state == state, got_reason
    assert reason in got_reason


def test_a_scorer_that_cannot_be_built_starves_the_rule_and_a_disabled_rule_is_idle() -> None:
    busy = figures(**FLOWING)
    assert classify(busy, now=NOW, window_s=HOUR, scorer_problem="scorer missing: unknown scorer 'x'") == (
        HealthState.STARVED, "scorer missing: unknown scorer 'x'")
    assert classify(figures(), now=NOW, window_s=HOUR, enabled=False) == (HealthState.IDLE,
                                                                         "disabled in the rules file")


@pytest.mark.parametrize(("error_type", "message", "cause"), [
    ("AuthenticationError", "litellm.AuthenticationError: Incorrect API key", "provider refusing"),
    ("APIStatusError", "Error code: 403 forbidden", "provider refusing"),
    ("RateLimitError", "", "provider rate-limiting"),
    ("ScorerError", "unknown scorer 'x'", "scorer missing"),
    ("ScorerTimeoutError", "no result within 30 s", "scorer timing out"),
    ("ServiceUnavailableError", "503", "provider unavailable"),
    ("KeyError", "'answer'", "scorer raising KeyError: 'answer'"),
])
def test_error_causes_are_named(error_type: str, message: str, cause: str) -> None:
    assert error_cause(error_type, message).startswith(cause)


class Resolver:
    def build(self, ref: str, params: dict[str, Any]) -> object:
        if ref == "gone":
            raise ScorerError("unknown scorer 'gone': use a built-in (a, b, c)")
        if params.get("max_ms") == "x":
            raise ValueError("max_ms must be a number")
        return object()

    def param_names(self, ref: str) -> set[str]:
        return set()


def test_scorer_problems_and_assess_cover_the_file_and_storage() -> None:
    rules = [EvalRule(name="ok", scorer="error_spans"), EvalRule(name="gone", scorer="gone"),
             EvalRule(name="bad-params", scorer="trace_latency", params={"max_ms": "x"}),
             EvalRule(name="off", scorer="error_spans", enabled=False)]
    problems = scorer_problems([r for r in rules if r.enabled], Resolver())
    assert problems == {"gone": "scorer missing: unknown scorer 'gone'",
                        "bad-params": "scorer cannot be built (bad params: max_ms must be a number)"}
    health = assess({"ok": RuleFigures("ok", **FLOWING), "sdk:helpful": RuleFigures("sdk:helpful", **FLOWING)},
                    now=NOW, window_s=HOUR, rules=rules, problems=problems)
    assert [(h.rule, h.state, h.in_rules_file) for h in health] == [
        ("ok", HealthState.HEALTHY, True), ("gone", HealthState.STARVED, True),
        ("bad-params", HealthState.STARVED, True), ("off", HealthState.IDLE, True),
        ("sdk:helpful", HealthState.HEALTHY, False)]
    as_json = health_json(health)
    assert as_json[0]["state"] == "healthy" and as_json[0]["last_score_at"].startswith("2027-01-15T")
    assert as_json[1]["reason"] == "scorer missing: unknown scorer 'gone'" and as_json[1]["last_score_at"] is None


def sample_health() -> list:
    rules = [EvalRule(name="answer-quality-judge", scorer="llm_criteria"), EvalRule(name="errors", scorer="e")]
    figs = {"answer-quality-judge": RuleFigures("answer-quality-judge", **{**FLOWING, "scored": 0, "errored": 120,
                                                                          "recent_errors": 10, **AUTH}),
            "errors": RuleFigures("errors", **FLOWING)}
    return assess(figs, now=NOW, window_s=HOUR, rules=rules)


def render(width: int, terminal: bool) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=terminal, color_system=None)
    print_rule_health(console, sample_health(), NOW)
    return buf.getvalue()


def test_a_narrow_terminal_gets_one_block_per_rule_with_nothing_cut() -> None:
    out = render(60, terminal=True)
    assert all(len(line) <= 60 for line in out.splitlines())
    for header in HEADERS:
        assert f"{header}:" in out
    assert "answer-quality-judge" in out and "erroring" in out and "healthy" in out
    flat = re.sub(r"\s+", " ", out)
    assert "provider refusing (AuthenticationError: Error code: 401 - invalid api key): 10 of 10" in flat


def test_piped_output_keeps_the_table_whole_on_long_lines() -> None:
    out = render(60, terminal=False)
    header = next(line for line in out.splitlines() if "rule" in line and "state" in line)
    for name in HEADERS:
        assert name in header  # every header whole, none cut to three letters
    row = next(line for line in out.splitlines() if "answer-quality-judge" in line)
    assert "erroring" in row and "provider refusing (AuthenticationError: Error code: 401 - invalid api key)" in row


def test_a_wide_terminal_gets_a_table_whose_reasons_fold() -> None:
    out = render(130, terminal=True)
    assert all(len(line) <= 130 for line in out.splitlines())
    header = next(line for line in out.splitlines() if "rule" in line and "state" in line)
    for name in HEADERS:
        assert name in header
    assert "answer-quality-judge" in out
