"""pipeline/scoring/runner.py: run_job always returns a result row; retries only transient failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline.contracts import Example, JobSource, ScoreJob, ScoreStatus, Span, Trace
from pipeline.errors import RetryableScorerError
from pipeline.scoring import RetryPolicy, ScorerCache, run_job
from scorers import Score, Scorer, scorer
from scorers.testing import resolver

FAST = RetryPolicy(max_attempts=3, backoff_s=0.001, max_backoff_s=0.01, timeout_s=0.2)
HERE = __name__  # the module name pytest imported us as: importable by the scorer registry


# -- test scorers (referenced as f"{HERE}:Name") ---------------------------------------------------

class Flaky(Scorer):
    """Raises RetryableScorerError `failures` times, then scores 1.0."""

    name = "flaky"

    def __init__(self, failures: int = 2) -> None:
        self.failures = failures
        self.calls = 0

    async def score(self, target: Any) -> Score:
        self.calls += 1
        if self.calls <= self.failures:
            raise RetryableScorerError(f"rate limited (call {self.calls})")
        return Score(value=1.0, reason="ok at last")


class Unreachable(Scorer):
    name = "unreachable"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, target: Any) -> Score:
        self.calls += 1
        raise ConnectionError("judge endpoint refused the connection")


class Buggy(Scorer):
    name = "buggy"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, target: Any) -> Score:
        self.calls += 1
        raise ValueError("division by zero in my scorer")


class ReturnsDict(Scorer):
    name = "returns_dict"

    def score(self, target: Any) -> Any:
        return {"value": 1.0}


class Slow(Scorer):
    name = "slow"

    def __init__(self) -> None:
        self.calls = 0

    async def score(self, target: Any) -> Score:
        self.calls += 1
        await asyncio.sleep(5)
        return Score(value=1.0)


class SocketTimeout(Scorer):
    """Its own HTTP client times out quickly: a transient error with its own message."""

    name = "socket_timeout"

    async def score(self, target: Any) -> Score:
        raise TimeoutError("judge read timed out after 0.1 s")


class SeesTarget(Scorer):
    """Reports what it was given."""

    name = "sees_target"

    def score(self, target: Any) -> Score:
        if isinstance(target, Example):
            return Score(value=str(target.inputs), passed=True)
        return Score(value=f"trace:{target.trace_id}", passed=True)


@scorer(threshold=0.5)
def ratio(target: Any, numerator: float = 1.0, denominator: float = 2.0) -> float:
    return numerator / denominator


@scorer()
def always_true(target: Any) -> bool:
    return True


# -- helpers ----------------------------------------------------------------------------------------

def make_trace(duration_ms: float = 1500.0) -> Trace:
    end = int(duration_ms * 1e6)
    return Trace(
        trace_id="trace-1", version=2, project="bot", status="complete", close_reason="quiet_period",
        root_span_id="root", start_ns=0, end_ns=end,
        spans=[
            Span(trace_id="trace-1", span_id="child", parent_span_id="root", name="llm", start_ns=1, end_ns=2,
                 agent_name="researcher", model="small-model"),
            Span(trace_id="trace-1", span_id="root", name="handle", start_ns=0, end_ns=end, agent_name="planner"),
        ],
    )


def make_job(scorer_ref: str, *, params: dict | None = None, threshold: float | None = None,
             example: Example | None = None, span_id: str | None = None) -> ScoreJob:
    return ScoreJob(job_id="job-1", rule="r1", scorer=scorer_ref, params=params or {}, threshold=threshold,
                    trace_id="trace-1", trace_version=2, example=example, span_id=span_id,
                    source=JobSource.BACKFILL)


# -- built-in scorers -------------------------------------------------------------------------------

async def test_results_name_the_scored_traces_root_span_for_exporters() -> None:
    """A trace-level result carries the root span it is about (the OTel exporter links its event there);
    an error result too, and a span-scored one keeps its own span besides."""
    trace = make_trace()
    ok = (await run_job(make_job("trace_latency", params={"max_ms": 1000}), trace, ScorerCache(resolver()), FAST)).result
    failed = (await run_job(make_job(f"{HERE}:Buggy"), trace, ScorerCache(resolver()), FAST)).result
    on_span = (await run_job(make_job("trace_latency", span_id="child"), trace, ScorerCache(resolver()), FAST)).result
    assert ok.root_span_id == failed.root_span_id == on_span.root_span_id == "root"
    assert ok.span_id is None and on_span.span_id == "child"
    rootless = trace.model_copy(update={"root_span_id": None})
    assert (await run_job(make_job("trace_latency"), rootless, ScorerCache(resolver()), FAST)).result.root_span_id is None


async def test_builtin_scorer_fails_over_its_own_threshold() -> None:
    out = await run_job(make_job("trace_latency", params={"max_ms": 1000}), make_trace(1500), ScorerCache(resolver()), FAST)
    r = out.result
    assert not out.dead_letter
    assert r.status == ScoreStatus.SCORED
    assert r.value == 1500.0 and r.passed is False and r.threshold == 1000.0
    assert r.attempts == 1 and r.error_type is None
    # the row echoes the job and attributes it to the root's agent, the first model seen
    assert (r.job_id, r.rule, r.scorer, r.trace_id, r.trace_version) == ("job-1", "r1", "trace_latency", "trace-1", 2)
    assert r.project == "bot" and r.agent_name == "planner" and r.model == "small-model"
    assert r.source == JobSource.BACKFILL and r.scorer_version == "1"
    assert r.latency_ms >= 0 and r.scored_at_ns > 0


async def test_builtin_scorer_passes_under_its_threshold() -> None:
    out = await run_job(make_job("trace_latency", params={"max_ms": 2000}), make_trace(1500), ScorerCache(resolver()), FAST)
    assert out.result.passed is True and out.result.threshold == 2000.0


async def test_rule_threshold_overrides_the_scorer_threshold() -> None:
    job = make_job("trace_latency", params={"max_ms": 1000}, threshold=2000.0)
    out = await run_job(job, make_trace(1500), ScorerCache(resolver()), FAST)
    assert out.result.passed is True and out.result.threshold == 2000.0


# -- retries ----------------------------------------------------------------------------------------

async def test_retryable_error_twice_then_success_is_scored_on_attempt_3() -> None:
    cache = ScorerCache(resolver())
    out = await run_job(make_job(f"{HERE}:Flaky"), make_trace(), cache, FAST)
    assert out.result.status == ScoreStatus.SCORED
    assert out.result.attempts == 3 and out.result.value == 1.0 and out.result.reason == "ok at last"
    assert not out.dead_letter
    assert cache.get(f"{HERE}:Flaky", {}).calls == 3  # the same instance was retried


async def test_always_transient_gives_an_error_row_for_the_dead_letter_topic() -> None:
    out = await run_job(make_job(f"{HERE}:Flaky", params={"failures": 99}), make_trace(), ScorerCache(resolver()), FAST)
    r = out.result
    assert out.dead_letter
    assert r.status == ScoreStatus.ERROR and r.attempts == 3
    assert r.error_type == "RetryableScorerError" and "rate limited (call 3)" in r.error_message
    assert r.value is None and r.passed is None
    assert r.reason.startswith("scorer error:")


async def test_max_attempts_is_respected() -> None:
    policy = RetryPolicy(max_attempts=5, backoff_s=0.001, max_backoff_s=0.01, timeout_s=0.2)
    out = await run_job(make_job(f"{HERE}:Flaky", params={"failures": 99}), make_trace(), ScorerCache(resolver()), policy)
    assert out.dead_letter and out.result.attempts == 5


async def test_connection_error_is_transient() -> None:
    cache = ScorerCache(resolver())
    out = await run_job(make_job(f"{HERE}:Unreachable"), make_trace(), cache, FAST)
    assert out.dead_letter and out.result.error_type == "ConnectionError" and out.result.attempts == 3
    assert cache.get(f"{HERE}:Unreachable", {}).calls == 3


async def test_scorer_bug_is_an_error_row_at_once() -> None:
    cache = ScorerCache(resolver())
    out = await run_job(make_job(f"{HERE}:Buggy"), make_trace(), cache, FAST)
    r = out.result
    assert not out.dead_letter
    assert r.status == ScoreStatus.ERROR and r.attempts == 1
    assert r.error_type == "ValueError" and r.error_message == "division by zero in my scorer"
    assert cache.get(f"{HERE}:Buggy", {}).calls == 1  # not retried


async def test_wrong_return_type_is_an_error_row() -> None:
    out = await run_job(make_job(f"{HERE}:ReturnsDict"), make_trace(), ScorerCache(resolver()), FAST)
    r = out.result
    assert not out.dead_letter
    assert r.status == ScoreStatus.ERROR and r.attempts == 1
    assert r.error_type == "ScorerReturnTypeError" and "dict" in r.error_message


async def test_timeout_is_a_scorer_timeout_error_row() -> None:
    policy = RetryPolicy(max_attempts=2, backoff_s=0.001, max_backoff_s=0.01, timeout_s=0.05)
    cache = ScorerCache(resolver())
    out = await run_job(make_job(f"{HERE}:Slow"), make_trace(), cache, policy)
    r = out.result
    assert r.status == ScoreStatus.ERROR and r.error_type == "ScorerTimeoutError"
    assert "0.05" in r.error_message
    assert out.dead_letter and r.attempts == 2  # timeouts are transient
    assert cache.get(f"{HERE}:Slow", {}).calls == 2
    assert r.latency_ms < 2000


async def test_scorer_own_timeout_error_keeps_its_message() -> None:
    out = await run_job(make_job(f"{HERE}:SocketTimeout"), make_trace(), ScorerCache(resolver()), FAST)
    assert out.dead_letter and out.result.attempts == 3  # transient: retried (holds today)
    assert "judge read timed out" in out.result.error_message


async def test_unknown_scorer_is_an_error_row() -> None:
    out = await run_job(make_job("no_such_scorer"), make_trace(), ScorerCache(resolver()), FAST)
    r = out.result
    assert r.status == ScoreStatus.ERROR and r.error_type == "ScorerNotFoundError"
    assert not out.dead_letter and r.attempts == 1 and r.scorer_version == "?"


async def test_bad_params_are_an_error_row() -> None:
    out = await run_job(make_job("trace_latency", params={"max_ms": -5}), make_trace(), ScorerCache(resolver()), FAST)
    assert out.result.status == ScoreStatus.ERROR and out.result.error_type == "ValueError"
    assert not out.dead_letter


# -- targets and function scorers -------------------------------------------------------------------

async def test_example_job_scores_the_example_and_is_attributed_to_the_asking_span() -> None:
    job = make_job(f"{HERE}:SeesTarget", example=Example(inputs={"q": "hi"}), span_id="child")
    out = await run_job(job, make_trace(), ScorerCache(resolver()), FAST)
    r = out.result
    assert r.value == "{'q': 'hi'}" and r.passed is True
    assert r.span_id == "child" and r.agent_name == "researcher"


async def test_trace_job_scores_the_trace() -> None:
    out = await run_job(make_job(f"{HERE}:SeesTarget"), make_trace(), ScorerCache(resolver()), FAST)
    assert out.result.value == "trace:trace-1"


async def test_function_scorer_with_params_and_threshold() -> None:
    cache = ScorerCache(resolver())
    out = await run_job(make_job(f"{HERE}:ratio", params={"numerator": 3, "denominator": 4}), make_trace(),
                        cache, FAST)
    assert out.result.value == 0.75 and out.result.passed is True and out.result.threshold == 0.5
    out = await run_job(make_job(f"{HERE}:ratio", params={"numerator": 1, "denominator": 4}), make_trace(),
                        cache, FAST)
    assert out.result.value == 0.25 and out.result.passed is False


async def test_function_scorer_returning_bool() -> None:
    out = await run_job(make_job(f"{HERE}:always_true"), make_trace(), ScorerCache(resolver()), FAST)
    assert out.result.status == ScoreStatus.SCORED
    assert out.result.value is True and out.result.passed is True


# -- cache and policy -------------------------------------------------------------------------------

def test_scorer_cache_keeps_one_instance_per_scorer_and_params() -> None:
    cache = ScorerCache(resolver())
    a = cache.get("trace_latency", {"max_ms": 100})
    assert cache.get("trace_latency", {"max_ms": 100}) is a
    assert cache.get("trace_latency", {"max_ms": 200}) is not a
    assert cache.get("error_spans", {}) is not a
    b = cache.get(f"{HERE}:ratio", {"numerator": 1, "denominator": 2})
    assert cache.get(f"{HERE}:ratio", {"denominator": 2, "numerator": 1}) is b  # key order does not matter


@pytest.mark.parametrize("attempt, low, high", [(1, 0.25, 0.5), (2, 0.5, 1.0), (3, 1.0, 2.0), (10, 5.0, 10.0)])
def test_backoff_doubles_with_jitter_and_is_capped(attempt: int, low: float, high: float) -> None:
    policy = RetryPolicy(backoff_s=0.5, max_backoff_s=10.0)
    for _ in range(50):
        assert low <= policy.delay(attempt) <= high
