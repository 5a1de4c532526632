"""The scorer contract."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from pipeline.contracts import CriterionVerdict, Example, SpanSubject, Trace
from pipeline.contracts.conversation import Conversation
from pipeline.errors import ScorerReturnTypeError

# a SpanSubject for span rules (subject: span), a Conversation for session rules (subject: session)
ScoreTarget = Trace | Example | SpanSubject | Conversation

SUBJECTS = frozenset({"trace", "span", "session"})  # what a scorer may declare in `subjects`
TRACE_ONLY = frozenset({"trace"})


def subjects_of(declared: Iterable[str], owner: str) -> frozenset[str]:
    """A checked `subjects` declaration: a non-empty set of known subjects."""
    found = frozenset([declared] if isinstance(declared, str) else declared)
    unknown = sorted(found - SUBJECTS)
    if unknown or not found:
        raise ValueError(f"scorer {owner!r}: subjects {sorted(found)}: choose from {sorted(SUBJECTS)}")
    return found


class Score(BaseModel):
    """What a scorer returns. `passed` may be left to the threshold (rule's, then scorer's)."""

    model_config = ConfigDict(extra="forbid")

    value: float | bool | str | None = None
    passed: bool | None = None
    reason: str = ""
    criteria: list[CriterionVerdict] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Scorer:
    """Subclass and implement `score` (async or sync; sync scorers run in a thread).

    Keyword arguments given to the constructor come from the rule's `params`.
    `higher_is_better` says which side of `threshold` passes.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    threshold: float | None = None
    higher_is_better: ClassVar[bool] = True
    # Params only the operator may set (in the rules file or its sdk_evaluations list), never a span's
    # `async_evaluate` call: where it sends data, with which credentials, and what it may spend.
    operator_params: ClassVar[frozenset[str]] = frozenset()
    # A scorer that calls models takes the process's judge client as the keyword argument `client`: the
    # `ScorerResolver` that builds it passes its own (a rule cannot: `client` is not JSON). Judges do.
    takes_judge_client: ClassVar[bool] = False
    # The rule subjects it can score: "trace" (a Trace, or an async_evaluate Example), "span" (a SpanSubject:
    # one span, with its trace for context), "session" (a Conversation). A span rule naming a scorer that
    # does not declare "span" is refused when the rules load.
    subjects: ClassVar[frozenset[str]] = TRACE_ONLY

    def __init__(self, **params: Any) -> None:
        if params:
            raise TypeError(f"scorer {self.name!r} takes no params, got {sorted(params)}")

    def score(self, target: ScoreTarget) -> Score | Any:
        raise NotImplementedError(f"{type(self).__name__}.score")

    async def run(self, target: ScoreTarget) -> Score:
        """Call `score`, in a thread when it is synchronous, and check what it returned."""
        if inspect.iscoroutinefunction(self.score):
            out = await self.score(target)
        else:
            out = await asyncio.to_thread(self.score, target)
            if inspect.isawaitable(out):
                out = await out
        return coerce_score(out, self.name)

    def decide(self, score: Score, rule_threshold: float | None) -> tuple[bool | None, float | None]:
        """Resolve pass / fail: the rule's threshold, else the scorer's own `passed`, else its threshold."""
        threshold = rule_threshold if rule_threshold is not None else self.threshold
        numeric = _as_number(score.value)
        if rule_threshold is not None and numeric is not None:
            return self._compare(numeric, rule_threshold), rule_threshold
        if score.passed is not None:
            return score.passed, threshold
        if threshold is not None and numeric is not None:
            return self._compare(numeric, threshold), threshold
        if isinstance(score.value, bool):
            return score.value, threshold
        return None, threshold

    def _compare(self, value: float, threshold: float) -> bool:
        return value >= threshold if self.higher_is_better else value <= threshold


def _as_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def coerce_score(out: object, scorer_name: str) -> Score:
    if isinstance(out, Score):
        return out
    if isinstance(out, bool | int | float | str):
        return Score(value=out)
    raise ScorerReturnTypeError(
        f"scorer {scorer_name!r} returned {type(out).__name__}; expected Score, float, bool or str"
    )


class FunctionScorer(Scorer):
    """Adapts a decorated function; `params` from the rule become keyword arguments."""

    def __init__(self, fn: Callable[..., Any], **params: Any) -> None:
        inspect.signature(fn).bind(None, **params)  # an unknown param fails when the rules load
        self._fn = fn
        self._params = params

    def score(self, target: ScoreTarget) -> Any:  # replaced per instance in `run`
        return self._fn(target, **self._params)

    async def run(self, target: ScoreTarget) -> Score:
        if inspect.iscoroutinefunction(self._fn):
            out = await self._fn(target, **self._params)
        else:
            out = await asyncio.to_thread(self._fn, target, **self._params)
        return coerce_score(out, self.name)


def scorer(
    name: str | None = None,
    *,
    version: str = "1",
    threshold: float | None = None,
    higher_is_better: bool = True,
    subjects: Iterable[str] = TRACE_ONLY,
) -> Callable[[Callable[..., Any]], type[FunctionScorer]]:
    """Turn `fn(target, **params) -> Score | float | bool | str` into a scorer class. `subjects`: the rule
    subjects it can score (default trace only; add "span" when `fn` handles a SpanSubject)."""

    def wrap(fn: Callable[..., Any]) -> type[FunctionScorer]:
        attrs = {
            "subjects": subjects_of(subjects, name or fn.__name__),
            "name": name or fn.__name__,
            "version": version,
            "threshold": threshold,
            "higher_is_better": higher_is_better,
            "__doc__": fn.__doc__,
            "__init__": lambda self, **params: FunctionScorer.__init__(self, fn, **params),
            "__module__": fn.__module__,
            "__wrapped__": fn,  # its params are the function's (scorers.params)
        }
        return type(fn.__name__, (FunctionScorer,), attrs)

    return wrap
