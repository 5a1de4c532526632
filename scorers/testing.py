"""A test kit for scorer tests, users' and ours: scorers and judges built as a worker builds them, with a
judge client of the test's own, so no provider, broker or module state is involved and nothing is reset.

    from scorers.testing import ScriptedJudgeClient, resolver

    async def test_refund_rule():
        client = ScriptedJudgeClient()
        client.reply(tool_calls=[("submit_verdicts", {"criteria": {"c1": {"verdict": "true", "reason": "ok"}}})])
        judge = resolver(client).build("llm_criteria", {"criteria": ["States the refund window"]})
        score = await judge.run(Example(inputs="How long?", outputs="5 days"))
        assert score.passed and client.requests[0].model == "openai/gpt-4o-mini"

`ScriptedJudgeClient` is the real `JudgeClient` (retries, limits, records of every call) whose model
answers from a script instead of litellm. `judge_client()` is a real client with quick retries, for
tests against a local OpenAI-compatible server. `resolver(client)` resolves and builds scorers by name,
handing every judge that client, as the worker's resolver hands it the process's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint
from types import SimpleNamespace
from typing import Any

import orjson

from scorers.judges.client import JudgeClient, JudgeRequest
from scorers.judges.config import JudgeConfig, RetrySettings
from scorers.registry import ScorerResolver, UploadedScorerSource

QUICK_RETRIES = RetrySettings(max_attempts=2, backoff_s=0.01, max_backoff_s=0.05, timeout_s=10.0)

ToolCall = tuple[str, Mapping[str, Any] | str]  # (tool name, arguments as a dict or as JSON text)
Responder = Callable[[JudgeRequest], Any]  # a reply, an exception to raise, or None for the queue


def judge_client(config: JudgeConfig | None = None, *, retry: RetrySettings = QUICK_RETRIES,
                 **options: Any) -> JudgeClient:
    """A real judge client (litellm) that gives up quickly: for tests against a local server."""
    return JudgeClient(config, retry=retry, **options)


def resolver(client: JudgeClient | None = None, *, uploaded: UploadedScorerSource | None = None,
             entry_points: Mapping[str, EntryPoint] | None = None) -> ScorerResolver:
    """A `ScorerResolver` whose judges share `client` (default: a new `ScriptedJudgeClient`)."""
    return ScorerResolver(judge_client=client if client is not None else ScriptedJudgeClient(),
                          uploaded=uploaded, entry_points=entry_points)


class ScriptedJudgeClient(JudgeClient):
    """A judge client whose model answers from a script. Queue replies with `reply`, errors with `fail`,
    or answer each request with `respond_with(fn)`; a request with nothing scripted raises a
    `JudgeRequestError` saying so.
    `requests` holds every request the model received. The cache is off unless `cache_size` is given."""

    def __init__(self, config: JudgeConfig | None = None, *, retry: RetrySettings = QUICK_RETRIES,
                 cache_size: int = 0, send_spacing_s: float = 0.0, **options: Any) -> None:
        super().__init__(config, retry=retry, cache_size=cache_size, send_spacing_s=send_spacing_s, **options)
        self.requests: list[JudgeRequest] = []
        self._queue: deque[Any] = deque()
        self._responder: Responder | None = None

    def reply(self, text: str | None = None, *, tool_calls: Iterable[ToolCall] = (), input_tokens: int = 10,
              output_tokens: int = 5, cost_usd: float = 0.0) -> None:
        """The next answer: `text`, and/or tool calls as (name, arguments)."""
        self._queue.append(scripted_response(text, tool_calls=tool_calls, input_tokens=input_tokens,
                                             output_tokens=output_tokens, cost_usd=cost_usd))

    def fail(self, exc: BaseException) -> None:
        """The next request raises `exc` (e.g. `TimeoutError()`, retried as a provider timeout)."""
        self._queue.append(exc)

    def respond_with(self, fn: Responder | None) -> None:
        """Ask `fn(request)` first: it returns a reply (`scripted_response`), an exception, or None (the queue)."""
        self._responder = fn

    async def _send(self, request: JudgeRequest, timeout: float) -> Any:
        self.requests.append(request)
        answer = self._responder(request) if self._responder is not None else None
        if answer is None:
            if not self._queue:
                raise AssertionError(f"ScriptedJudgeClient: nothing scripted for request {len(self.requests)} "
                                     f"to {request.model!r}")
            answer = self._queue.popleft()
        if isinstance(answer, BaseException):
            raise answer
        return answer


def scripted_response(text: str | None = None, *, tool_calls: Iterable[ToolCall] = (), input_tokens: int = 10,
                      output_tokens: int = 5, cost_usd: float = 0.0) -> Any:
    """An object shaped like litellm's chat completion, as the judge client reads it."""
    calls = [SimpleNamespace(id=f"call_{i}", function=SimpleNamespace(
                 name=name, arguments=arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()))
             for i, (name, arguments) in enumerate(tool_calls)]
    message = SimpleNamespace(content=text, tool_calls=calls or None)
    return SimpleNamespace(choices=[SimpleNamespace(message=message)],
                           usage=SimpleNamespace(prompt_tokens=input_tokens, completion_tokens=output_tokens),
                           _hidden_params={"response_cost": cost_usd})


__all__ = ["QUICK_RETRIES", "ScriptedJudgeClient", "judge_client", "resolver", "scripted_response"]
