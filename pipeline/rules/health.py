"""Rule health: is each online evaluator still running? Pure: a rule's figures over a window in, a state and
the reason for it in words out (docs/rule-health.md).

    healthy     results come out as jobs go in
    erroring    most recent results are errors (ERRORING_*): the reason names the cause (provider refusing,
                rate-limited, scorer missing, timing out, or the error the scorer raised)
    starved     the rules file names a scorer that cannot be built, or a queued job got no result within
                STARVED_AFTER_S (no result at all since then, or some jobs lost while others score)
    backlogged  jobs wait and more go in than come out (BACKLOG_*), or jobs are deferred by the budget
    idle        no matching traffic in the window (not an error), or the rule is disabled

The figures come from storage (`storage/rule_health.py`); `classify` and `assess` only compare them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from pipeline.errors import ScorerError
from pipeline.rules.loader import ScorerCheck
from pipeline.rules.model import EvalRule

__all__ = [
    "BACKLOG_MIN_WAITING",
    "ERRORING_MIN_ERRORS",
    "ERRORING_SHARE",
    "RECENT_WINDOW_S",
    "STARVED_AFTER_S",
    "HealthState",
    "RuleFigures",
    "RuleHealth",
    "assess",
    "classify",
    "error_cause",
    "scorer_problems",
]

RECENT_WINDOW_S = 300.0  # "now": the last five minutes' results decide erroring and backlogged
ERRORING_SHARE = 0.5  # erroring: more than half of the recent results are errors ...
ERRORING_MIN_ERRORS = 3  # ... and at least this many of them (one error in two results is not a pattern)
STARVED_AFTER_S = 600.0  # starved: a queued job without a result for ten minutes
BACKLOG_MIN_WAITING = 10  # backlogged: at least this many queued jobs without a result, and growing


class HealthState(StrEnum):
    HEALTHY = "healthy"
    ERRORING = "erroring"
    STARVED = "starved"
    BACKLOGGED = "backlogged"
    IDLE = "idle"


@dataclass(frozen=True)
class RuleFigures:
    """What storage says of one rule over the window. Times are epoch seconds (None: never in the window).

    matched: subjects (trace versions, span requests, session versions) decided other than filtered_out;
    sampled: those queued; scored / failed / errored: results (failed = scored and not passed; errored = an
    error result or a failed decision); deferred: subjects held back by the budget. waiting: queued subjects
    without a result and not deferred; deferred_waiting: deferred ones without a result."""

    rule: str
    filtered_out: int = 0
    matched: int = 0
    sampled: int = 0
    scored: int = 0
    failed: int = 0
    errored: int = 0
    deferred: int = 0
    waiting: int = 0
    deferred_waiting: int = 0
    oldest_waiting_at: float | None = None
    last_decision_at: float | None = None
    last_result_at: float | None = None  # any result, error or not
    last_score_at: float | None = None  # a result with a score (status scored)
    last_result_was_error: bool = False
    recent_results: int = 0
    recent_errors: int = 0
    recent_queued: int = 0
    last_error_type: str = ""
    last_error_message: str = ""


@dataclass(frozen=True)
class RuleHealth:
    figures: RuleFigures
    state: HealthState
    reason: str
    scorer: str | None = None  # from the rules file; None for a rule seen in storage only
    in_rules_file: bool = False

    @property
    def rule(self) -> str:
        return self.figures.rule


_CAUSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("provider refusing", re.compile(r"AuthenticationError|PermissionDenied|Unauthorized|Forbidden|\b40[13]\b|"
                                     r"invalid[ _-]?api[ _-]?key|incorrect api key", re.IGNORECASE)),
    ("provider rate-limiting", re.compile(r"RateLimit|\b429\b|too many requests|quota", re.IGNORECASE)),
    ("scorer missing", re.compile(r"^ScorerError\b|unknown scorer|no scorer named|ModuleNotFoundError", re.IGNORECASE)),
    ("scorer timing out", re.compile(r"Timeout", re.IGNORECASE)),
    ("provider unavailable", re.compile(r"ServiceUnavailable|APIConnectionError|InternalServerError|\b50[0234]\b",
                                        re.IGNORECASE)),
)


def error_cause(error_type: str, error_message: str) -> str:
    """An error result in words: "provider refusing (AuthenticationError: 401 ...)", or "scorer raising ..."."""
    text = f"{error_type}: {error_message}".strip(": ")
    short = text if len(text) <= 80 else text[:77] + "..."
    for cause, pattern in _CAUSES:
        if pattern.search(text):
            return f"{cause} ({short})"
    return f"scorer raising {short}" if short else "scorer raising errors"


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def classify(f: RuleFigures, *, now: float, window_s: float, scorer_problem: str | None = None,
             enabled: bool = True) -> tuple[HealthState, str]:
    """The state of one rule and the reason for it, in this order: a scorer that cannot be built, disabled,
    erroring, starved, backlogged, idle, healthy."""
    if scorer_problem:
        return HealthState.STARVED, scorer_problem
    if not enabled:
        return HealthState.IDLE, "disabled in the rules file"
    error = error_cause(f.last_error_type, f.last_error_message)
    if f.recent_errors >= ERRORING_MIN_ERRORS and f.recent_errors > ERRORING_SHARE * f.recent_results:
        return HealthState.ERRORING, (f"{error}: {f.recent_errors} of {f.recent_results} results in the last "
                                      f"{_ago(RECENT_WINDOW_S)} are errors")
    if (f.recent_results < ERRORING_MIN_ERRORS and f.last_result_was_error and f.errored >= ERRORING_MIN_ERRORS
            and f.errored > ERRORING_SHARE * (f.scored + f.errored)):  # little traffic: judge the whole window
        return HealthState.ERRORING, f"{error}: {f.errored} of {f.scored + f.errored} results are errors"
    if f.waiting and f.oldest_waiting_at is not None and now - f.oldest_waiting_at > STARVED_AFTER_S:
        if f.last_result_at is None or now - f.last_result_at > STARVED_AFTER_S:
            since = "in the window" if f.last_result_at is None else f"for {_ago(now - f.last_result_at)}"
            return HealthState.STARVED, (f"no result {since} while {f.waiting} queued job(s) wait "
                                         f"(oldest {_ago(now - f.oldest_waiting_at)}): is a scorer role running?")
        return HealthState.STARVED, (f"{f.waiting} queued job(s) got no result, the oldest for "
                                     f"{_ago(now - f.oldest_waiting_at)} (others are scored)")
    if f.deferred_waiting:
        return HealthState.BACKLOGGED, f"budget exhausted: {f.deferred_waiting} job(s) deferred until it refills"
    recent_out = f.recent_results
    if f.waiting >= BACKLOG_MIN_WAITING and f.recent_queued > recent_out:
        return HealthState.BACKLOGGED, (f"{f.waiting} job(s) waiting; {f.recent_queued} queued and {recent_out} "
                                        f"scored in the last {_ago(RECENT_WINDOW_S)}")
    if f.matched == 0:
        if f.filtered_out:
            return HealthState.IDLE, f"the filter matched none of {f.filtered_out} trace(s) in {_ago(window_s)}"
        return HealthState.IDLE, f"no matching traffic in {_ago(window_s)}"
    if f.sampled == 0 and f.scored + f.errored == 0:
        return HealthState.HEALTHY, f"{f.matched} matched, all sampled out"
    if f.errored:
        return HealthState.HEALTHY, f"{f.errored} error(s) in {_ago(window_s)}, last: {error}"
    return HealthState.HEALTHY, "scoring"


def _first_clause(exc: Exception) -> str:
    """"unknown scorer 'x'" of "unknown scorer 'x': use a built-in (... twenty names ...)"."""
    text = str(exc).split(": use ", 1)[0]
    return text if len(text) <= 120 else text[:117] + "..."


def scorer_problems(rules: Iterable[EvalRule], scorers: ScorerCheck) -> dict[str, str]:
    """The rules whose scorer cannot be built now, with why: "scorer missing: ..." or "bad params: ..."."""
    problems: dict[str, str] = {}
    for rule in rules:
        try:
            scorers.build(rule.scorer, rule.params)
        except ScorerError as exc:
            problems[rule.name] = f"scorer missing: {_first_clause(exc)}"
        except (TypeError, ValueError) as exc:
            problems[rule.name] = f"scorer cannot be built (bad params: {_first_clause(exc)})"
    return problems


def assess(figures: Mapping[str, RuleFigures], *, now: float, window_s: float,
           rules: Iterable[EvalRule] = (), problems: Mapping[str, str] | None = None) -> list[RuleHealth]:
    """Every rule of the rules file (figures or not), then every other rule seen in storage, by name."""
    problems = problems or {}
    out: list[RuleHealth] = []
    named: set[str] = set()
    for rule in rules:
        named.add(rule.name)
        f = figures.get(rule.name) or RuleFigures(rule.name)
        state, reason = classify(f, now=now, window_s=window_s, scorer_problem=problems.get(rule.name),
                                 enabled=rule.enabled)
        out.append(RuleHealth(f, state, reason, scorer=rule.scorer, in_rules_file=True))
    for name in sorted(set(figures) - named):
        state, reason = classify(figures[name], now=now, window_s=window_s)
        out.append(RuleHealth(figures[name], state, reason))
    return out

