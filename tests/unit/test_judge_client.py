"""The judge call layer through litellm's real client against the local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from pipeline.contracts import Example, ScoreJob, ScoreStatus, Trace
from pipeline.errors import RetryableScorerError
from pipeline.scoring.runner import RetryPolicy, ScorerCache, run_job
from scorers.judges.client import JudgeClient, JudgeRequest, parse_retry_after, retry_after_seconds
from scorers.judges.config import RetrySettings
from scorers.judges.errors import JudgeRequestError, JudgeRetriesExhausted
from scorers.judges.limits import ModelLimits, RateGate, TokenBucket
from scorers.testing import resolver
from tests.support.openai_server import OpenAIServer

MODEL = "openai/gpt-4o-mini"
FAST = RetrySettings(max_attempts=4, backoff_s=0.01, max_backoff_s=0.05, timeout_s=10)


@pytest.fixture
def client() -> JudgeClient:
    return JudgeClient(retry=FAST)


def ask(server: OpenAIServer, text: str = "Is the sky blue?", **fields: object) -> JudgeRequest:
    return JudgeRequest(**{"model": MODEL, "messages": [{"role": "user", "content": text}],
                           "api_base": server.base_url, "api_key": "test", **fields})


async def test_a_call_is_recorded_with_tokens_cost_latency_and_attempts(
        client: JudgeClient, openai_server: OpenAIServer) -> None:
    openai_server.reply_with(content="yes")
    response = await client.complete(ask(openai_server, params={"temperature": 0}))
    call = response.call
    assert response.text == "yes" and call.response_text == "yes" and not call.cached
    assert call.messages == [{"role": "user", "content": "Is the sky blue?"}]
    assert call.input_tokens > 0 and call.output_tokens == 1  # what the server's usage said
    assert call.cost_usd is not None and call.cost_usd > 0  # priced from litellm's local map
    assert call.attempts == 1 and call.retries == [] and call.latency_ms > 0
    body = openai_server.requests[-1].body
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0
    assert openai_server.requests[-1].headers["authorization"] == "Bearer test"


async def test_tool_calls_come_back_with_their_raw_arguments(client: JudgeClient, openai_server: OpenAIServer) -> None:
    tool = {"type": "function", "function": {"name": "verdict", "parameters": {
        "type": "object", "properties": {"ok": {"type": "boolean"}}}}}
    openai_server.reply_with(tool_calls=[{"name": "verdict", "arguments": '{"ok": false}'}])
    response = await client.complete(ask(openai_server, tools=[tool],
                                         tool_choice={"type": "function", "function": {"name": "verdict"}}))
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("verdict", '{"ok": false}')]
    assert response.call.tool_names == ["verdict"]
    assert openai_server.requests[-1].body["tool_choice"] == {"type": "function", "function": {"name": "verdict"}}


async def test_an_identical_call_is_served_from_the_cache(client: JudgeClient, openai_server: OpenAIServer) -> None:
    first = await client.complete(ask(openai_server))
    second = await client.complete(ask(openai_server))
    other = await client.complete(ask(openai_server, params={"temperature": 0.5}))  # other params: a new call
    assert len(openai_server.requests) == 2
    assert second.text == first.text and second.call.cached and not first.call.cached and not other.call.cached
    assert (second.call.input_tokens, second.call.output_tokens, second.call.cost_usd, second.call.attempts) == (
        0, 0, None, 0)
    assert client.stats.cached == 1 and client.stats.calls == 3
    client.forget(first)
    await client.complete(ask(openai_server))
    assert len(openai_server.requests) == 3


async def test_the_cache_is_a_bounded_lru(openai_server: OpenAIServer) -> None:
    client = JudgeClient(retry=FAST, cache_size=2)
    for text in ("a", "b", "a", "c", "a", "b"):
        await client.complete(ask(openai_server, text))
    # a, b miss; a hits; c evicts b; a hits; b misses again
    assert [r.body["messages"][0]["content"] for r in openai_server.requests] == ["a", "b", "c", "b"]


async def test_retry_after_on_a_429_is_honoured(client: JudgeClient, openai_server: OpenAIServer) -> None:
    openai_server.fail_next(1, status=429, retry_after=0.3)
    started = time.perf_counter()
    response = await client.complete(ask(openai_server))
    assert time.perf_counter() - started >= 0.3
    call = response.call
    assert call.attempts == 2 and len(openai_server.requests) == 2 and call.error is None
    (retry,) = call.retries
    assert retry.status == 429 and retry.retry_after_s == 0.3 and 0.3 <= retry.wait_s <= 0.33
    assert "RateLimitError" in retry.error


async def test_a_429_storm_ends_and_every_job_completes(client: JudgeClient, openai_server: OpenAIServer) -> None:
    """8 judge jobs through the pipeline's runner; the first 6 requests get 429 with Retry-After 0.2 s."""
    openai_server.fail_next(6, status=429, retry_after=0.2)
    trace = Trace(trace_id="t-storm", version=1, status="complete", close_reason="quiet_period")
    params = {"criteria": ["The reply answers the question"], "model": MODEL, "api_base": openai_server.base_url,
              "api_key": "test"}
    jobs = [ScoreJob(job_id=f"j{i}", rule="answers", scorer="scorers.judges.llm_judge:CriteriaJudge",
                     params=params, trace_id=trace.trace_id, trace_version=1,
                     example=Example(inputs=f"question {i}", outputs=f"answer {i}")) for i in range(8)]
    cache = ScorerCache(resolver(client))  # every judge it builds shares `client`
    policy = RetryPolicy(max_attempts=1, timeout_s=20)  # the judge client alone must ride the storm out
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(run_job(job, trace, cache, policy) for job in jobs))
    elapsed = time.perf_counter() - started
    results = [o.result for o in outcomes]
    assert [r.status for r in results] == [ScoreStatus.SCORED] * 8, [r.error_message for r in results]
    assert not any(o.dead_letter for o in outcomes) and all(r.passed for r in results)
    calls = [r.metadata["judge"]["calls"][0] for r in results]
    retries = [retry for c in calls for retry in c["retries"]]
    assert len(retries) == 6 and {(r["status"], r["retry_after_s"]) for r in retries} == {(429, 0.2)}
    assert sum(c["attempts"] for c in calls) == 14 and len(openai_server.requests) == 14
    assert elapsed >= 0.2


async def test_5xx_and_connection_errors_are_retried_then_raised_as_retryable(
        client: JudgeClient, openai_server: OpenAIServer) -> None:
    openai_server.fail_next(2, status=503)
    assert (await client.complete(ask(openai_server, "a"))).call.attempts == 3

    openai_server.fail_next(10, status=500)
    with pytest.raises(JudgeRetriesExhausted) as caught:
        await client.complete(ask(openai_server, "b"))
    assert isinstance(caught.value, RetryableScorerError)  # the runner retries and then dead-letters it
    assert caught.value.call.attempts == FAST.max_attempts and "500" in str(caught.value)
    assert len(caught.value.call.retries) == FAST.max_attempts - 1

    refused = JudgeRequest(MODEL, [{"role": "user", "content": "c"}], api_base="http://127.0.0.1:9/v1", api_key="t")
    with pytest.raises(JudgeRetriesExhausted) as unreachable:
        await client.complete(refused)
    assert unreachable.value.call.attempts == FAST.max_attempts


async def test_a_bad_request_is_not_retried(client: JudgeClient, openai_server: OpenAIServer) -> None:
    with pytest.raises(JudgeRequestError) as caught:
        await client.complete(JudgeRequest("openai/error-400", [{"role": "user", "content": "x"}],
                                           api_base=openai_server.base_url, api_key="test"))
    assert not isinstance(caught.value, RetryableScorerError)
    assert caught.value.call.attempts == 1 and len(openai_server.requests) == 1 and "400" in str(caught.value)


async def test_a_call_that_outlives_its_timeout_is_retried(client: JudgeClient, openai_server: OpenAIServer) -> None:
    openai_server.latency_s = 0.4
    with pytest.raises(JudgeRetriesExhausted) as caught:
        await client.complete(ask(openai_server, timeout_s=0.1))
    assert caught.value.call.attempts == FAST.max_attempts
    assert all(r.status in (None, 408) for r in caught.value.call.retries)


async def test_a_retry_after_beyond_the_limit_gives_the_job_back_at_once(openai_server: OpenAIServer) -> None:
    client = JudgeClient(retry=RetrySettings(max_attempts=5, max_retry_after_s=1))
    openai_server.fail_next(1, status=429, retry_after=30)
    started = time.perf_counter()
    with pytest.raises(JudgeRetriesExhausted, match="Retry-After 30 s"):
        await client.complete(ask(openai_server))
    assert time.perf_counter() - started < 5


async def test_concurrency_per_model_is_capped(openai_server: OpenAIServer) -> None:
    client = JudgeClient(retry=FAST, default_limits=ModelLimits(max_concurrency=2))
    openai_server.latency_s = 0.15
    started = time.perf_counter()
    await asyncio.gather(*(client.complete(ask(openai_server, f"q{i}")) for i in range(6)))
    assert openai_server.max_in_flight == 2 and time.perf_counter() - started >= 0.45


async def test_sends_are_spaced_out(openai_server: OpenAIServer) -> None:
    client = JudgeClient(retry=FAST, send_spacing_s=0.05)
    started = time.perf_counter()
    await asyncio.gather(*(client.complete(ask(openai_server, f"s{i}")) for i in range(5)))
    assert time.perf_counter() - started >= 0.2  # the 5th leaves 4 spacings after the 1st


async def test_judges_tighten_the_shared_limits_of_their_model(openai_server: OpenAIServer) -> None:
    client = JudgeClient(default_limits=ModelLimits(max_concurrency=8, requests_per_minute=600))
    client.tighten_limits(MODEL, ModelLimits(max_concurrency=3))
    client.tighten_limits(MODEL, ModelLimits(max_concurrency=5, requests_per_minute=60, tokens_per_minute=9000))
    assert client.limits_for(MODEL) == ModelLimits(3, 60, 9000)
    assert client.limits_for("other/model") == ModelLimits(8, 600)


async def test_a_request_rate_limit_spaces_calls(openai_server: OpenAIServer) -> None:
    client = JudgeClient(retry=FAST, default_limits=ModelLimits(requests_per_minute=120))
    gate = client._gate(MODEL)
    assert gate.requests is not None
    gate.requests.reserve(gate.requests.capacity)  # spend the minute's burst: from now on 2 requests per second
    started = time.perf_counter()
    await asyncio.gather(*(client.complete(ask(openai_server, f"r{i}")) for i in range(2)))
    assert time.perf_counter() - started >= 0.9  # 0.5 s for the first, 1.0 s for the second


# -- pure parts -------------------------------------------------------------------------------------

def test_token_bucket_reservations_queue_without_a_lock() -> None:
    now = [0.0]
    bucket = TokenBucket(60, clock=lambda: now[0])  # one per second, holds 60
    assert bucket.reserve(60) == 0.0
    assert bucket.reserve(1) == pytest.approx(1.0)
    assert bucket.reserve(2) == pytest.approx(3.0)  # behind the previous caller
    now[0] = 3.0
    assert bucket.level == pytest.approx(0.0)
    bucket.adjust(-10)  # a call used 10 fewer than it reserved
    assert bucket.level == pytest.approx(10.0)
    assert bucket.reserve(1000) == pytest.approx(50.0)  # more than a minute's worth is clamped to the capacity


def test_the_token_rate_is_settled_with_the_real_usage() -> None:
    now = [0.0]
    gate = RateGate(ModelLimits(tokens_per_minute=6000), clock=lambda: now[0])
    assert gate.reserve(5000) == 0.0
    gate.settle(estimated_tokens=5000, actual_tokens=7000)
    assert gate.tokens is not None and gate.tokens.level == pytest.approx(-1000)
    assert gate.reserve(1000) == pytest.approx(20.0)  # 2000 short at 100 tokens/s


@pytest.mark.parametrize(("value", "expected"), [("0.2", 0.2), ("3", 3.0), ("-1", 0.0), ("soon", None)])
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_accepts_http_dates_and_milliseconds() -> None:
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    assert 100 < (parse_retry_after(future) or 0) <= 121
    ms = SimpleNamespace(litellm_response_headers={"Retry-After-Ms": "250", "retry-after": "9"})
    assert retry_after_seconds(ms) == 0.25  # type: ignore[arg-type]
    prefixed = SimpleNamespace(headers={"llm_provider-retry-after": "4"})
    assert retry_after_seconds(prefixed) == 4.0  # type: ignore[arg-type]
    assert retry_after_seconds(ValueError("no headers")) is None
