"""The judge call layer: one `JudgeClient` per process, built by the composition root from a `JudgeConfig`
(`scorers/judges/config.py`) and handed to every judge (through the `ScorerResolver` that builds them).

It calls `litellm.acompletion` with any model string and adds what a stream of judgments needs:
retries with backoff and jitter on 429, 5xx, timeouts and connection errors (honouring Retry-After),
a per-model concurrency cap and request / token rate limits, a per-call timeout, an LRU cache of
identical calls, and a record of every call. litellm is imported on the first call only, so the
`scorers` package imports without it.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import importlib.util
import logging
import os
import random
import time
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from scorers.judges.config import JudgeConfig, RetrySettings
from scorers.judges.errors import JudgeOutputError, JudgeRequestError, JudgeRetriesExhausted
from scorers.judges.limits import ModelLimits, RateGate
from scorers.judges.records import JudgeCall, RetryRecord, ToolCallRequest, note_activity
from scorers.judges.tokens import estimate_request_tokens

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclass(frozen=True)
class JudgeRequest:
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    api_base: str | None = None
    api_key: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, and any litellm kwarg
    timeout_s: float | None = None
    trace_id: str | None = None  # for the logs only

    def cache_key(self) -> bytes:
        # the key leaves the api key out: the same question to the same endpoint has the same answer
        raw = orjson.dumps([self.model, self.api_base, self.messages, self.tools, self.tool_choice, self.params],
                           option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(raw, digest_size=16).digest()

    @property
    def tool_names(self) -> list[str]:
        return [str((t.get("function") or t).get("name", "?")) for t in self.tools or []]


@dataclass
class JudgeResponse:
    text: str | None
    tool_calls: list[ToolCallRequest]
    call: JudgeCall
    cache_key: bytes


@dataclass(frozen=True)
class _Answer:
    text: str | None
    tool_calls: tuple[ToolCallRequest, ...]


@dataclass(frozen=True)
class _Failure:
    retryable: bool
    status: int | None
    retry_after_s: float | None
    description: str


@dataclass
class ClientStats:
    calls: int = 0
    cached: int = 0
    attempts: int = 0
    retries: int = 0
    failures: int = 0


class JudgeClient:
    """`send_spacing_s`: the least time between two requests leaving this process (all models together).

    litellm spends 5-8 ms of CPU on each call. Requests sent together come back together, and the event
    loop then handles the whole convoy before it sends the next requests, so they leave together again:
    at 32 concurrent calls that adds ~200 ms to every round trip. A few ms between sends breaks the convoy
    (measured in bench/judge_throughput.py) and caps a process at 1 / spacing requests per second, above
    what its CPU can drive anyway.
    """

    def __init__(
        self,
        config: JudgeConfig | None = None,
        *,
        default_limits: ModelLimits | None = None,
        retry: RetrySettings | None = None,
        cache_size: int | None = None,
        history_size: int | None = None,
        send_spacing_s: float | None = None,
    ) -> None:
        """`config` (default: `JudgeConfig()`); a keyword argument beats its field."""
        self.config = config = config or JudgeConfig()
        self.default_limits = default_limits or config.limits
        self.retry = retry or config.retry
        self.cache_size = config.cache_size if cache_size is None else cache_size
        self.send_spacing_s = config.send_spacing_s if send_spacing_s is None else send_spacing_s
        self._next_send = 0.0
        self.stats = ClientStats()
        self.history: deque[JudgeCall] = deque(maxlen=config.history_size if history_size is None else history_size)
        self._limits: dict[str, ModelLimits] = {}
        self._gates: dict[str, RateGate] = {}
        # asyncio semaphores belong to one event loop; tests (and some hosts) run several loops in turn
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]] = (
            weakref.WeakKeyDictionary())
        self._cache: OrderedDict[bytes, _Answer] = OrderedDict()

    # -- configuration ------------------------------------------------------------------------------
    def limits_for(self, model: str) -> ModelLimits:
        return self._limits.get(model, self.default_limits)

    def set_limits(self, model: str, limits: ModelLimits) -> None:
        self._limits[model] = limits
        self._gates.pop(model, None)
        for per_loop in self._semaphores.values():
            per_loop.pop(model, None)

    def tighten_limits(self, model: str, limits: ModelLimits) -> None:
        """Apply `limits` to `model` unless stricter ones are set already (idempotent)."""
        current = self.limits_for(model)
        tightened = current.tightened(limits)
        if tightened != current:
            self.set_limits(model, tightened)

    def clear_cache(self) -> None:
        self._cache.clear()

    def forget(self, response: JudgeResponse) -> None:
        """Drop a cached answer, e.g. one the judge could not parse, so that a retry asks the model again."""
        self._cache.pop(response.cache_key, None)

    # -- calling ------------------------------------------------------------------------------------
    async def complete(self, request: JudgeRequest) -> JudgeResponse:
        key = request.cache_key()
        self.stats.calls += 1
        hit = self._cached(key)
        if hit is not None:
            self.stats.cached += 1
            call = JudgeCall(request.model, request.messages, request.tool_names, request.tool_choice,
                             response_text=hit.text, tool_calls=list(hit.tool_calls), cached=True)
            self.history.append(call)
            note_activity(call)
            return JudgeResponse(hit.text, list(hit.tool_calls), call, key)

        call = JudgeCall(request.model, request.messages, request.tool_names, request.tool_choice)
        self.history.append(call)
        note_activity(call)  # noted before it runs: a call that fails is recorded too
        started = time.perf_counter()
        try:
            answer = await self._call_with_retries(request, call)
        finally:
            call.latency_ms = (time.perf_counter() - started) * 1000
        self._store(key, answer)
        return JudgeResponse(answer.text, list(answer.tool_calls), call, key)

    async def _call_with_retries(self, request: JudgeRequest, call: JudgeCall) -> _Answer:
        gate = self._gate(request.model)
        estimate = estimate_request_tokens(request.messages, request.tools) + int(
            request.params.get("max_tokens") or 0)
        timeout = request.timeout_s or self.retry.timeout_s
        for attempt in range(1, self.retry.max_attempts + 1):
            await _sleep_until(gate.paused_until)
            wait = gate.reserve(estimate)
            if wait > 0:
                await asyncio.sleep(wait)
            call.attempts = attempt
            self.stats.attempts += 1
            try:
                async with self._semaphore(request.model):
                    await self._spaced_send()
                    response = await asyncio.wait_for(self._send(request, timeout), timeout + 1.0)
            except Exception as exc:  # classified below: retried, or raised as a judge error
                failure = _classify(exc, timeout)
                call.error = failure.description
                if not failure.retryable:
                    self.stats.failures += 1
                    log.error("judge call to %s on trace %s failed and cannot be retried: %s", request.model,
                              request.trace_id, failure.description)
                    raise JudgeRequestError(
                        f"judge call to {request.model!r} failed (not retryable): {failure.description}", call) from exc
                await asyncio.sleep(self._wait_before_retry(request, call, failure, attempt, gate))
                continue
            call.error = None
            answer = _read_answer(response, call)
            gate.settle(estimate, call.input_tokens + call.output_tokens)
            return answer
        raise AssertionError("unreachable: the last failed attempt raises")

    def _wait_before_retry(self, request: JudgeRequest, call: JudgeCall, failure: _Failure, attempt: int,
                           gate: RateGate) -> float:
        """The wait before the next attempt (recorded in the call), or raise when the attempts ran out."""
        too_long = failure.retry_after_s is not None and failure.retry_after_s > self.retry.max_retry_after_s
        if attempt >= self.retry.max_attempts or too_long:
            self.stats.failures += 1
            log.error("judge model %s on trace %s: giving up after attempt %d (%s)", request.model,
                      request.trace_id, attempt, failure.description)
            why = (f"Retry-After {failure.retry_after_s:g} s is over {self.retry.max_retry_after_s:g} s"
                   if too_long else f"{attempt} attempts")
            raise JudgeRetriesExhausted(
                f"judge model {request.model!r} gave up after {why}: {failure.description}", call)
        if failure.retry_after_s is not None:
            wait = failure.retry_after_s * (1 + random.random() / 10)  # jitter above, never below, the ask
        else:
            wait = self.retry.backoff(attempt)
        if failure.status == 429:
            gate.paused_until = max(gate.paused_until, time.monotonic() + wait)
        self.stats.retries += 1
        call.retries.append(RetryRecord(attempt, failure.description, failure.status, round(wait, 4),
                                        failure.retry_after_s))
        log.warning("judge model %s on trace %s: attempt %d failed (%s); retrying in %.2fs",
                    request.model, request.trace_id, attempt, failure.description, wait)
        return wait

    async def _send(self, request: JudgeRequest, timeout: float) -> Any:
        """One request to the provider, through litellm (`scorers.testing.ScriptedJudgeClient` answers here)."""
        return await _acompletion(request, timeout)

    async def _spaced_send(self) -> None:
        now = time.monotonic()
        slot = max(now, self._next_send)
        self._next_send = slot + self.send_spacing_s
        if slot > now:
            await asyncio.sleep(slot - now)

    # -- state --------------------------------------------------------------------------------------
    def _gate(self, model: str) -> RateGate:
        gate = self._gates.get(model)
        if gate is None:
            gate = self._gates[model] = RateGate(self.limits_for(model))
        return gate

    def _semaphore(self, model: str) -> asyncio.Semaphore:
        per_loop = self._semaphores.setdefault(asyncio.get_running_loop(), {})
        semaphore = per_loop.get(model)
        if semaphore is None:
            semaphore = per_loop[model] = asyncio.Semaphore(self.limits_for(model).max_concurrency)
        return semaphore

    def _cached(self, key: bytes) -> _Answer | None:
        answer = self._cache.get(key)
        if answer is not None:
            self._cache.move_to_end(key)
        return answer

    def _store(self, key: bytes, answer: _Answer) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = answer
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


# -- litellm ----------------------------------------------------------------------------------------

def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # else litellm fetches its price map
    import litellm

    return litellm


# litellm 1.106 imports its MCP gateway (and so the optional `mcp` package) for any call with `tools`.
# Judges never use MCP tools, so without that package we tell litellm to skip the gateway.
_SKIP_MCP = importlib.util.find_spec("mcp") is None


async def _acompletion(request: JudgeRequest, timeout: float) -> Any:
    kwargs: dict[str, Any] = {**request.params, "model": request.model, "messages": request.messages,
                              "timeout": timeout, "max_retries": 0}  # retries are ours, with Retry-After
    if request.api_base:
        kwargs["api_base"] = request.api_base
    if request.api_key:
        kwargs["api_key"] = request.api_key
    if request.tools:
        kwargs["tools"] = request.tools
        if request.tool_choice is not None:
            kwargs["tool_choice"] = request.tool_choice
        if _SKIP_MCP:
            kwargs["_skip_mcp_handler"] = True
    return await _litellm().acompletion(**kwargs)


def _read_answer(response: Any, call: JudgeCall) -> _Answer:
    choices = getattr(response, "choices", None) or []
    if not choices:
        raise JudgeOutputError("the response has no choices", raw=str(response))
    message = choices[0].message
    text = message.content if isinstance(message.content, str) else None
    tool_calls = tuple(
        ToolCallRequest(str(tc.id or f"call_{i}"), str(tc.function.name), tc.function.arguments or "")
        for i, tc in enumerate(getattr(message, "tool_calls", None) or []))
    usage = getattr(response, "usage", None)
    call.input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    call.output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    call.cost_usd = _cost_of(response)
    call.response_text = text
    call.tool_calls = list(tool_calls)
    return _Answer(text, tool_calls)


def _cost_of(response: Any) -> float | None:
    hidden = getattr(response, "_hidden_params", None) or {}
    cost = hidden.get("response_cost")
    if cost is None:
        try:
            cost = _litellm().completion_cost(completion_response=response)
        except Exception:  # noqa: BLE001 - a model missing from the price map has no known cost
            return None
    return float(cost)


def _classify(exc: BaseException, timeout: float) -> _Failure:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return _Failure(True, None, None, f"no answer within {timeout:g} s")
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    name = type(exc).__name__
    description = f"{name}{f' {status}' if status else ''}: {str(exc)[:300]}"
    transport = _is_transport_error(exc)
    retryable = transport or (status is not None and (status in RETRYABLE_STATUS or status >= 500))
    return _Failure(retryable, status, retry_after_seconds(exc) if retryable else None, description)


def _is_transport_error(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    # litellm.Timeout and APIConnectionError derive from openai's; match by name so no import is needed here
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"APITimeoutError", "APIConnectionError", "Timeout", "ServiceUnavailableError"})


def retry_after_seconds(exc: BaseException) -> float | None:
    """The wait a provider asked for: `retry-after-ms`, or `retry-after` in seconds or as an HTTP date.

    litellm keeps the provider's response headers in `litellm_response_headers` (its RateLimitError
    rebuilds `response` without them), so that is read first.
    """
    for source in (getattr(exc, "litellm_response_headers", None),
                   getattr(getattr(exc, "response", None), "headers", None), getattr(exc, "headers", None)):
        if not source:
            continue
        headers = {str(k).lower().removeprefix("llm_provider-"): str(v) for k, v in source.items()}
        if "retry-after-ms" in headers:
            try:
                return max(0.0, float(headers["retry-after-ms"]) / 1000)
            except ValueError:
                pass
        if "retry-after" in headers:
            return parse_retry_after(headers["retry-after"])
    return None


def parse_retry_after(value: str) -> float | None:
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
