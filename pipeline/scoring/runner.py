"""Run one score job: always a result, never an exception.

Transient failures (RetryableScorerError, timeouts, connection errors) are retried with
exponential backoff and jitter. When retries run out the result is an error row and the job
is marked for the dead-letter topic. Deterministic failures (a bug, a wrong return type) give
an error row at once: retrying them would only repeat the bug.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from pipeline.contracts import JobSubject, ScoreJob, ScoreResult, ScoreStatus, SessionJob, SpanSubject, Trace
from pipeline.contracts.conversation import Conversation
from pipeline.errors import RetryableScorerError, ScorerTimeoutError
from scorers.base import Scorer
from scorers.registry import ScorerResolver

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

TRANSIENT = (RetryableScorerError, ScorerTimeoutError, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(max_attempts=settings.scorer_max_attempts, backoff_s=settings.scorer_backoff_s,
                   timeout_s=settings.scorer_timeout_s)

    def delay(self, attempt: int) -> float:
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)


@dataclass
class JobOutcome:
    result: ScoreResult
    dead_letter: bool  # retries exhausted on a transient error


class ScorerCache:
    """One scorer instance per (scorer, params), built by `scorers` (the process's resolver, whose judges
    share its judge client). The params of `async_evaluate` requests come from spans, so the cache keeps
    only the `max_entries` used last."""

    def __init__(self, scorers: ScorerResolver, max_entries: int = 256) -> None:
        self.scorers = scorers
        self.max_entries = max(1, max_entries)
        self._items: OrderedDict[bytes, Scorer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, ref: str, params: dict[str, Any]) -> Scorer:
        key = orjson.dumps([ref, params], option=orjson.OPT_SORT_KEYS)
        scorer = self._items.get(key)
        if scorer is not None:
            self._items.move_to_end(key)
            return scorer
        scorer = self._items[key] = self.scorers.build(ref, params)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
        return scorer


def job_target(job: ScoreJob, trace: Trace) -> Trace | SpanSubject | Any:
    """What the job's scorer gets: its example (async_evaluate), the span with its trace (a span rule), or
    the trace. KeyError when a span job's span is not in the trace."""
    if job.example is not None:
        return job.example
    if job.subject == JobSubject.SPAN and job.span_id:
        return SpanSubject.of(trace, job.span_id)
    return trace


async def run_job(job: ScoreJob, trace: Trace, cache: ScorerCache, policy: RetryPolicy) -> JobOutcome:
    started = time.perf_counter()
    try:
        target = job_target(job, trace)
    except KeyError as exc:  # a job that does not fit its trace is an error row, never a lost job
        return JobOutcome(_error(job, trace, started, 0, None, LookupError(exc.args[0])), dead_letter=False)
    attempt, scorer, got = await _score(job.scorer, job.params, job.threshold, target, cache, policy, job.trace_id)
    if isinstance(got, _Failed):
        return JobOutcome(_error(job, trace, started, attempt, scorer, got.exc), dead_letter=got.transient)
    score, passed, threshold = got
    return JobOutcome(
        _result(job, trace, started, attempt, scorer, status=ScoreStatus.SCORED, value=score.value,
                passed=passed, threshold=threshold, reason=score.reason, criteria=score.criteria,
                metadata=score.metadata),
        dead_letter=False,
    )


async def run_session_job(job: SessionJob, conversation: Conversation, cache: ScorerCache,
                          policy: RetryPolicy) -> JobOutcome:
    """The same for a session rule: the scorer gets the conversation. The result names the latest turn
    the scorer saw as its trace, so links lead to where the verdict was reached."""
    started = time.perf_counter()
    attempt, scorer, got = await _score(job.scorer, job.params, job.threshold, conversation, cache, policy,
                                        f"session {job.session_id}")
    latest = conversation.latest
    fields: dict[str, Any] = {
        "job_id": job.job_id, "rule": job.rule, "scorer": job.scorer, "scorer_version": scorer.version if scorer else "?",
        "trace_id": latest.trace_id if latest else "", "trace_version": latest.trace_version if latest else 1,
        "project": conversation.project, "agent_name": latest.agents[0] if latest and latest.agents else None,
        "attempts": attempt, "source": job.source, "rules_version": job.rules_version, "session_id": job.session_id, "session_version": job.session_version,
        "turn": job.turn, "final": job.final,
    }
    if isinstance(got, _Failed):
        fields.update(status=ScoreStatus.ERROR, error_type=type(got.exc).__name__,
                      error_message=str(got.exc)[:4000], reason=f"scorer error: {got.exc}"[:500])
    else:
        score, passed, threshold = got
        fields.update(status=ScoreStatus.SCORED, value=score.value, passed=passed, threshold=threshold,
                      reason=score.reason, criteria=score.criteria, metadata=score.metadata)
    result = ScoreResult(latency_ms=(time.perf_counter() - started) * 1000, scored_at_ns=time.time_ns(), **fields)
    return JobOutcome(result, dead_letter=isinstance(got, _Failed) and got.transient)


@dataclass
class _Failed:
    exc: BaseException
    transient: bool  # retries ran out (dead-letter it), rather than a deterministic failure


async def _score(ref: str, params: dict[str, Any], rule_threshold: float | None, target: Any, cache: ScorerCache,
                 policy: RetryPolicy, what: str) -> tuple[int, Scorer | None, tuple[Any, bool | None, float | None] | _Failed]:
    """Run a scorer with retries: (attempts, scorer, (score, passed, threshold) or the failure)."""
    attempt = 0
    scorer: Scorer | None = None
    while True:
        attempt += 1
        try:
            scorer = scorer or cache.get(ref, params)
            try:
                async with asyncio.timeout(policy.timeout_s):  # unlike wait_for, no task of its own per job
                    score = await scorer.run(target)
            except TimeoutError as exc:
                raise ScorerTimeoutError(str(exc) or f"no result within {policy.timeout_s:g} s") from None
            passed, threshold = scorer.decide(score, rule_threshold)
            return attempt, scorer, (score, passed, threshold)
        except TRANSIENT as exc:
            if attempt < policy.max_attempts:
                delay = policy.delay(attempt)
                log.warning("scorer %s on %s attempt %d failed (%s: %s); retrying in %.2fs",
                            ref, what, attempt, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                continue
            log.error("scorer %s on %s gave up after %d attempts: %s: %s", ref, what, attempt, type(exc).__name__, exc)
            return attempt, scorer, _Failed(exc, transient=True)
        except Exception as exc:  # noqa: BLE001 - a scorer bug must become a row, never a lost job
            log.error("scorer %s on %s raised %s: %s", ref, what, type(exc).__name__, exc)
            return attempt, scorer, _Failed(exc, transient=False)


def _error(job: ScoreJob, trace: Trace, started: float, attempt: int, scorer: Scorer | None,
           exc: BaseException) -> ScoreResult:
    return _result(job, trace, started, attempt, scorer, status=ScoreStatus.ERROR,
                   error_type=type(exc).__name__, error_message=str(exc)[:4000], reason=f"scorer error: {exc}"[:500])


def _result(job: ScoreJob, trace: Trace, started: float, attempt: int, scorer: Scorer | None,
            **fields: Any) -> ScoreResult:
    agent, model = _attribution(job, trace)
    return ScoreResult(
        job_id=job.job_id, rule=job.rule, scorer=job.scorer,
        scorer_version=scorer.version if scorer else "?",
        trace_id=job.trace_id, trace_version=job.trace_version, span_id=job.span_id,
        root_span_id=trace.root_span_id, request_index=job.request_index, span_name=_span_name(job, trace),
        project=trace.project, agent_name=agent, model=model, attempts=attempt,
        latency_ms=(time.perf_counter() - started) * 1000, source=job.source, scored_at_ns=time.time_ns(),
        rules_version=job.rules_version, **fields,
    )


def _span_name(job: ScoreJob, trace: Trace) -> str | None:
    if not job.span_id:
        return None
    return next((s.name for s in trace.spans if s.span_id == job.span_id), None)


def _attribution(job: ScoreJob, trace: Trace) -> tuple[str | None, str | None]:
    """The agent and model a result is about: the asking span's, else the root's, else the first seen."""
    spans = trace.spans
    if job.span_id:
        spans = [s for s in spans if s.span_id == job.span_id] or spans
    elif trace.root is not None:
        spans = [trace.root, *spans]
    agent = next((s.agent_name for s in spans if s.agent_name), None)
    model = next((s.model for s in spans if s.model), None)
    return agent, model
