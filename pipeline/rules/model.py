"""The rules file's schema (YAML or TOML). Unknown keys are errors: a typo must not pass silently."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.sampling import SDK_RULE_PREFIX

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleFilter(_Strict):
    """All given conditions must hold. For a trace rule, span-level conditions (span_name, span_type,
    attributes, model, agent) hold when any one span matches them all; has_error, min_duration_ms and
    min_cost_usd are the trace's. For a span rule (subject: span) every span-level condition, has_error,
    min_duration_ms and min_cost_usd included, is asked of each span; project and status stay the trace's."""

    project: list[str] | None = None
    span_name: str | None = None  # glob, e.g. "search_*"
    span_type: list[str] | None = None
    attributes: dict[str, Any] | None = None
    has_error: bool | None = None
    min_duration_ms: float | None = Field(default=None, ge=0)
    min_cost_usd: float | None = Field(default=None, ge=0)
    status: list[str] | None = None  # trace status: complete / incomplete
    model: list[str] | None = None  # a span's model, exactly
    agent: list[str] | None = None  # a span's agent name, exactly

    @field_validator("project", "span_type", "status", "model", "agent", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Budget(_Strict):
    """Spend allowed per rolling hour. When it is spent, jobs wait (deferred), they are not dropped."""

    tokens_per_hour: int | None = Field(default=None, gt=0)
    cost_usd_per_hour: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _something(self) -> Budget:
        if self.tokens_per_hour is None and self.cost_usd_per_hour is None:
            raise ValueError("set tokens_per_hour, cost_usd_per_hour or both")
        return self


class RuleSubject(StrEnum):
    TRACE = "trace"  # each closed trace version
    SESSION = "session"  # each closed session version (a conversation), and optionally each turn
    SPAN = "span"  # each span of a closed trace version that matches the filter


MAX_SPANS_PER_TRACE = 50  # a span rule's default cap on the spans of one trace it queues


SESSION_FILTER_FIELDS = ("project", "status", "has_error", "min_duration_ms", "min_cost_usd")


class EvalRule(_Strict):
    name: str
    scorer: str
    params: dict[str, Any] = Field(default_factory=dict)
    filter: RuleFilter = Field(default_factory=RuleFilter)
    sampling_rate: float = Field(default=1.0, ge=0.0, le=1.0)  # by trace id, or session id for sessions
    threshold: float | None = None
    enabled: bool = True
    budget: Budget | None = None
    subject: RuleSubject = RuleSubject.TRACE
    each_turn: bool = False  # sessions: also judge after every turn, until the scorer reaches a verdict
    # span rules: matched spans of one trace beyond this many (in start order) are sampled out, with the reason
    max_spans_per_trace: int | None = Field(default=None, ge=1, le=10_000)

    @property
    def span_cap(self) -> int:
        return self.max_spans_per_trace or MAX_SPANS_PER_TRACE

    @model_validator(mode="after")
    def _session_options(self) -> EvalRule:
        if self.each_turn and self.subject != RuleSubject.SESSION:
            raise ValueError("each_turn applies to session rules only (subject: session)")
        if self.max_spans_per_trace is not None and self.subject != RuleSubject.SPAN:
            raise ValueError("max_spans_per_trace applies to span rules only (subject: span)")
        if self.subject == RuleSubject.SESSION:
            given = {k for k, v in self.filter.model_dump(exclude_none=True).items() if v}
            spanwise = sorted(given - set(SESSION_FILTER_FIELDS))
            if spanwise:
                raise ValueError(f"a session rule filters on {', '.join(SESSION_FILTER_FIELDS)}; "
                                 f"not on {', '.join(spanwise)}")
            if self.budget is not None:
                raise ValueError("budget is not supported on session rules yet")
        return self

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use letters, digits, '.', '_' or '-' (at most 100 characters)")
        return value


class AlertCondition(StrEnum):
    FAILED = "failed"  # the score did not pass
    ERROR = "error"  # the scorer raised / timed out
    FAILED_OR_ERROR = "failed_or_error"
    SCORE_BELOW = "score_below"  # numeric value < `value`
    SCORE_ABOVE = "score_above"  # numeric value > `value`
    VERDICT_FALSE = "verdict_false"  # any criterion judged false
    CATEGORY_IN = "category_in"  # the label is one of `categories`


GROUP_FIELDS = ("rule", "scorer", "project", "agent", "model", "span_name")  # span_name: span rules' spans


class CountLevels(_Strict):
    """Matches within one window that put the group in breach."""

    critical: int = Field(ge=1)
    warning: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> CountLevels:
        if self.warning is not None and self.warning >= self.critical:
            raise ValueError("warning must be lower than critical")
        return self


class RateLevels(_Strict):
    """The fraction of the window's results that matched; below `min_samples` results it never breaches."""

    critical: float = Field(gt=0, le=1)
    warning: float | None = Field(default=None, gt=0, le=1)
    min_samples: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> RateLevels:
        if self.warning is not None and self.warning >= self.critical:
            raise ValueError("warning must be lower than critical")
        return self


class Levels(BaseModel):
    """An alert's thresholds, resolved from `min_count`, `count` or `rate`."""

    model_config = ConfigDict(frozen=True)

    measure: str  # "count" or "rate"
    warning: float | None
    critical: float
    min_samples: int = 1


class AlertRule(_Strict):
    """When a group's windows breach, an incident opens (firing), and it closes (resolved) once a whole
    window passes without breach. Windows are aligned to the clock: a 60 s window is a calendar minute."""

    name: str
    rule: str | None = None  # an eval rule's name; None = every rule
    condition: AlertCondition = AlertCondition.FAILED
    value: float | None = None  # for score_below / score_above
    categories: list[str] | None = None  # for category_in
    group_by: list[str] = Field(default_factory=list)  # one window (and one incident) per group
    min_count: int | None = Field(default=None, ge=1)  # shorthand for count: {critical: N}
    count: CountLevels | None = None
    rate: RateLevels | None = None
    window_s: float = Field(default=60.0, gt=0)
    sustained: int = Field(default=1, ge=1, le=1000)  # consecutive breaching windows before it fires
    cooldown_s: float = Field(default=300.0, ge=0)  # after a message, further matches wait for a digest
    channel: str = "default"  # every configured channel; choosing channels per alert is not built yet

    @model_validator(mode="after")
    def _condition_has_its_operand(self) -> AlertRule:
        if self.channel != "default":
            raise ValueError(f"channel {self.channel!r}: alerts go to every configured channel (Slack, webhook, "
                             "hook); choosing channels per alert is not supported yet, so leave `channel` out")
        if self.condition in (AlertCondition.SCORE_BELOW, AlertCondition.SCORE_ABOVE) and self.value is None:
            raise ValueError(f"condition {self.condition.value} needs `value`")
        if self.condition == AlertCondition.CATEGORY_IN and not self.categories:
            raise ValueError("condition category_in needs `categories`")
        unknown = sorted(set(self.group_by) - set(GROUP_FIELDS))
        if unknown:
            raise ValueError(f"group_by {unknown}: choose from {', '.join(GROUP_FIELDS)}")
        given = [k for k in ("min_count", "count", "rate") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"set one of min_count, count or rate, not {' and '.join(given)}")
        return self

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use letters, digits, '.', '_' or '-' (at most 100 characters)")
        return value

    @property
    def levels(self) -> Levels:
        if self.rate is not None:
            return Levels(measure="rate", warning=self.rate.warning, critical=self.rate.critical,
                          min_samples=self.rate.min_samples)
        if self.count is not None:
            return Levels(measure="count", warning=self.count.warning, critical=self.count.critical)
        return Levels(measure="count", warning=None, critical=self.min_count or 1)

    @property
    def needs_all_results(self) -> bool:
        """A rate needs every result of the rule (the denominator), not only the matches."""
        return self.rate is not None

    def describe(self) -> str:
        """When it fires, in words (for `alerts list` and messages)."""
        lv = self.levels
        fmt = (lambda x: f"{x:.0%}") if lv.measure == "rate" else (lambda x: f"{x:g}")
        what = "failure rate" if lv.measure == "rate" else "matches"
        parts = [f"critical at {what} ≥ {fmt(lv.critical)}"]
        if lv.warning is not None:
            parts.append(f"warning at ≥ {fmt(lv.warning)}")
        text = ", ".join(parts) + f" per {self.window_s:g}s window"
        if lv.measure == "rate":
            text += f" (≥ {lv.min_samples} results)"
        if self.sustained > 1:
            text += f", for {self.sustained} windows in a row"
        return text


class SdkScorer(_Strict):
    """A scorer that spans may name in `async_evaluate`, with the params the operator fixes for it."""

    name: str = Field(min_length=1, max_length=200)  # what a span's request names
    scorer: str | None = None  # what runs (default: `name`); here, in the operator's file, a dotted path is fine
    params: dict[str, Any] = Field(default_factory=dict)  # fixed: provider, credentials, limits; a span cannot set them
    allow_model_override: bool = False  # let a span choose `model` (never the endpoint or the key)
    # Its judges' spend per rolling hour, across every scorer process, as a rule's: spans are untrusted, so
    # without one a flood of requests is a flood of paid judge calls. Over it, requests wait (deferred).
    budget: Budget | None = None

    @property
    def ref(self) -> str:
        return self.scorer or self.name


class SdkEvaluations(_Strict):
    """What an `async_evaluate` request carried on a span may ask for. Spans are untrusted: by default they may
    name built-in code scorers and uploaded scorers; judges, installed scorers and dotted paths only when
    listed in `scorers`, whose provider settings come from here and never from the span."""

    enabled: bool = True
    code_scorers: bool = True
    uploaded_scorers: bool = True
    max_per_trace: int = Field(default=1000, ge=0)  # requests beyond it are sampled out, with the reason
    scorers: list[SdkScorer] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_unique(self) -> SdkEvaluations:
        names = [s.name for s in self.scorers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"sdk_evaluations.scorers lists {', '.join(twice)} more than once")
        return self

    def listed(self, name: str) -> SdkScorer | None:
        return next((s for s in self.scorers if s.name == name), None)


class RuleSet(_Strict):
    rules: list[EvalRule] = Field(default_factory=list)
    alerts: list[AlertRule] = Field(default_factory=list)
    sdk_evaluations: SdkEvaluations = Field(default_factory=SdkEvaluations)

    @model_validator(mode="after")
    def _names_unique_and_linked(self) -> RuleSet:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        alert_names: set[str] = set()
        for alert in self.alerts:
            if alert.name in alert_names:
                raise ValueError(f"alert name {alert.name!r} is used twice")
            alert_names.add(alert.name)
            if alert.rule is not None and alert.rule not in seen:
                raise ValueError(f"alert {alert.name!r} refers to unknown rule {alert.rule!r}")
        return self

    @property
    def active(self) -> list[EvalRule]:
        return [r for r in self.rules if r.enabled]

    @property
    def trace_rules(self) -> list[EvalRule]:
        return [r for r in self.active if r.subject == RuleSubject.TRACE]

    @property
    def span_rules(self) -> list[EvalRule]:
        return [r for r in self.active if r.subject == RuleSubject.SPAN]

    @property
    def trace_and_span_rules(self) -> list[EvalRule]:
        """The rules a closed trace version is routed against (live and backfill), in file order."""
        return [r for r in self.active if r.subject in (RuleSubject.TRACE, RuleSubject.SPAN)]

    @property
    def session_rules(self) -> list[EvalRule]:
        return [r for r in self.active if r.subject == RuleSubject.SESSION]

    @property
    def judges_each_turn(self) -> bool:
        return any(r.each_turn for r in self.session_rules)

    def rule(self, name: str) -> EvalRule | None:
        return next((r for r in self.rules if r.name == name), None)

    def budget_of(self, rule: str) -> Budget | None:
        """The spend cap of a rule, or of an `async_evaluate` scorer listed in `sdk_evaluations` (its requests
        are recorded under `sdk:<name>`)."""
        if rule.startswith(SDK_RULE_PREFIX):
            listed = self.sdk_evaluations.listed(rule[len(SDK_RULE_PREFIX):])
            return listed.budget if listed is not None else None
        found = self.rule(rule)
        return found.budget if found is not None else None
