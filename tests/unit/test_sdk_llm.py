"""pipeline/sdk/llm: `wrap(client)` through the real openai and litellm clients, against a local server."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import openai
import pytest

from pipeline.sdk import Tracer, bind_context, get_current_span, wrap
from pipeline.sdk.testing import InMemoryExporter, recording_tracer
from tests.support.openai_server import OpenAIServer

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # else litellm fetches its price map at import

ROOT = Path(__file__).resolve().parents[2]
SERVED = "gpt-4o-mini-2024-07-18"  # what the server answers for "gpt-4o-mini"
ASK = [{"role": "user", "content": "Weather in Paris?"}]
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": CITY}}
WEATHER_RESPONSES = {"type": "function", "name": "get_weather", "parameters": CITY}


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVALSTREAM_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("EVALSTREAM_MONITORING", raising=False)


@pytest.fixture
def recorded() -> tuple[Tracer, InMemoryExporter]:
    return recording_tracer("support-bot")


@pytest.fixture
def tracer(recorded: tuple[Tracer, InMemoryExporter]) -> Tracer:
    return recorded[0]


@pytest.fixture
def exp(recorded: tuple[Tracer, InMemoryExporter]) -> InMemoryExporter:
    return recorded[1]


def openai_client(server: OpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)


@pytest.fixture
def client(openai_server: OpenAIServer, tracer: Tracer) -> openai.OpenAI:
    return wrap(openai_client(openai_server), tracer)


@pytest.fixture
def aclient(openai_server: OpenAIServer, tracer: Tracer) -> openai.AsyncOpenAI:
    raw = openai.AsyncOpenAI(base_url=openai_server.base_url, api_key="sk-test", max_retries=0)
    return wrap(raw, tracer)


@pytest.fixture(scope="module")
def litellm() -> Any:
    import litellm

    return litellm


def only_span(exp: InMemoryExporter) -> dict[str, Any]:
    assert len(exp.spans) == 1, exp.names()
    return exp.spans[0]


# -- chat completions -------------------------------------------------------------------------------

def test_a_chat_completion_is_one_llm_span_child_of_the_current_span(client: openai.OpenAI, tracer: Tracer,
                                                                     exp: InMemoryExporter) -> None:
    seen: dict[str, Any] = {}

    @tracer.observe(span_type="agent")
    def answer(question: str) -> str:
        before = get_current_span()
        completion = client.chat.completions.create(model="gpt-4o-mini", temperature=0.2, max_tokens=50,
                                                    messages=[{"role": "user", "content": question}])
        assert get_current_span() is before  # the llm span never became (or stayed) current
        seen["usage"] = completion.usage
        return completion.choices[0].message.content or ""

    assert answer("hi there") == "Echo: hi there"
    llm, agent = exp.spans
    assert (llm["name"], llm["span_type"], llm["status"]) == ("openai.chat.completions", "llm", "ok")
    assert llm["parent_span_id"] == agent["span_id"] and llm["trace_id"] == agent["trace_id"]
    assert llm["model"] == SERVED
    assert llm["inputs"] == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}],
                             "temperature": 0.2, "max_tokens": 50}
    assert llm["outputs"] == {"role": "assistant", "content": "Echo: hi there"}
    assert (llm["input_tokens"], llm["output_tokens"]) == (seen["usage"].prompt_tokens,
                                                           seen["usage"].completion_tokens)
    assert llm["attributes"] == {"finish_reason": "stop"}
    assert llm["cost_usd"] is None  # left to the pipeline's price map
    assert llm["end_ns"] > llm["start_ns"]


def test_wrap_returns_the_same_client_and_snapshots_messages(client: openai.OpenAI, exp: InMemoryExporter,
                                                             openai_server: OpenAIServer) -> None:
    fresh = openai_client(openai_server)
    assert wrap(fresh) is fresh
    messages = list(ASK)
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    messages.append({"role": "assistant", "content": "later turn"})  # what agent loops do next
    assert only_span(exp)["inputs"]["messages"] == ASK


def test_tool_calls_are_recorded_as_output_and_attribute(client: openai.OpenAI, exp: InMemoryExporter,
                                                         openai_server: OpenAIServer) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=[WEATHER],
                                                tool_choice="auto")
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    span = only_span(exp)
    assert span["inputs"]["tools"] == [WEATHER] and span["inputs"]["tool_choice"] == "auto"
    assert span["attributes"]["tool_calls"] == [{"id": call.id, "name": "get_weather",
                                                 "arguments": '{"city": "test"}'}]
    assert span["attributes"]["finish_reason"] == "tool_calls"
    assert span["outputs"] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "test"}'}}]}
    assert openai_server.requests[-1].body["tools"] == [WEATHER]  # the request went out untouched


def test_a_stream_is_recorded_when_consumed(client: openai.OpenAI, exp: InMemoryExporter,
                                            openai_server: OpenAIServer) -> None:
    openai_server.reply_with(content="It is sunny in Paris.",
                             tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"}'}])
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=[WEATHER], stream=True,
                                            stream_options={"include_usage": True})
    chunks = []
    for chunk in stream:
        assert exp.spans == []  # open until the stream ends
        chunks.append(chunk)
    assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
    usage = chunks[-1].usage
    span = only_span(exp)
    assert span["status"] == "ok" and span["model"] == SERVED
    assert span["outputs"]["content"] == "It is sunny in Paris."
    assert span["attributes"]["tool_calls"] == [{"id": span["outputs"]["tool_calls"][0]["id"],
                                                 "name": "get_weather", "arguments": '{"city": "Paris"}'}]
    assert span["attributes"]["finish_reason"] == "tool_calls"
    assert (span["input_tokens"], span["output_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert span["inputs"]["stream"] is True


def test_a_stream_without_usage_still_records_model_and_text(client: openai.OpenAI,
                                                             exp: InMemoryExporter) -> None:
    text = "".join(c.choices[0].delta.content or "" for c in
                   client.chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True) if c.choices)
    span = only_span(exp)
    assert span["outputs"]["content"] == text == "Echo: Weather in Paris?"
    assert span["model"] == SERVED and span["input_tokens"] is None and span["output_tokens"] is None


def test_a_stream_closed_early_ends_its_span(client: openai.OpenAI, exp: InMemoryExporter) -> None:
    with client.chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True) as stream:
        next(stream)
        next(stream)
        assert exp.spans == []
    span = only_span(exp)
    assert span["status"] == "ok" and span["attributes"]["stream_incomplete"] is True
    assert span["outputs"]["content"] == "Echo:"


def test_the_stream_helpers_go_through_the_traced_create(client: openai.OpenAI, exp: InMemoryExporter) -> None:
    with client.chat.completions.stream(model="gpt-4o-mini", messages=ASK) as stream:
        final = stream.get_final_completion()
    with client.responses.stream(model="gpt-4o-mini", input="Hello") as events:
        response = events.get_final_response()
    chat, responses = exp.spans
    assert chat["outputs"]["content"] == final.choices[0].message.content == "Echo: Weather in Paris?"
    assert chat["inputs"] == {"model": "gpt-4o-mini", "messages": ASK, "stream": True}  # no `omit` sentinels
    assert responses["outputs"]["content"] == response.output_text == "Echo: Hello"
    assert responses["output_tokens"] == response.usage.output_tokens  # type: ignore[union-attr]


async def test_async_chat_completion_and_stream(aclient: openai.AsyncOpenAI, tracer: Tracer,
                                                exp: InMemoryExporter) -> None:
    @tracer.observe
    async def turn() -> str:
        completion = await aclient.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=[WEATHER])
        assert completion.choices[0].message.tool_calls
        stream = await aclient.chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True,
                                                       stream_options={"include_usage": True})
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert await turn() == "Echo: Weather in Paris?"
    plain, streamed, outer = exp.spans
    assert plain["parent_span_id"] == streamed["parent_span_id"] == outer["span_id"]
    assert plain["attributes"]["tool_calls"][0]["name"] == "get_weather"
    assert streamed["outputs"]["content"] == "Echo: Weather in Paris?"
    assert streamed["model"] == SERVED and streamed["output_tokens"] > 0


# -- responses --------------------------------------------------------------------------------------

def test_responses_create(client: openai.OpenAI, exp: InMemoryExporter) -> None:
    response = client.responses.create(model="gpt-4o-mini", instructions="Be brief.", input="Hello",
                                       max_output_tokens=100)
    span = only_span(exp)
    assert span["name"] == "openai.responses" and span["status"] == "ok"
    assert span["inputs"] == {"model": "gpt-4o-mini", "instructions": "Be brief.", "input": "Hello",
                              "max_output_tokens": 100}
    assert span["outputs"] == {"role": "assistant", "content": response.output_text} and response.output_text
    assert span["model"] == SERVED
    assert (span["input_tokens"], span["output_tokens"]) == (response.usage.input_tokens,  # type: ignore[union-attr]
                                                             response.usage.output_tokens)  # type: ignore[union-attr]


def test_responses_stream_with_a_function_call(client: openai.OpenAI, exp: InMemoryExporter) -> None:
    events = list(client.responses.create(model="gpt-4o-mini", input=ASK, tools=[WEATHER_RESPONSES], stream=True))
    final = events[-1].response  # type: ignore[union-attr]
    span = only_span(exp)
    call = final.output[0]
    assert span["attributes"]["tool_calls"] == [{"id": call.call_id, "name": "get_weather",  # type: ignore
                                                 "arguments": '{"city": "test"}'}]
    assert span["attributes"]["finish_reason"] == "completed"
    assert (span["input_tokens"], span["output_tokens"]) == (final.usage.input_tokens, final.usage.output_tokens)


async def test_async_responses_stream(aclient: openai.AsyncOpenAI, exp: InMemoryExporter) -> None:
    stream = await aclient.responses.create(model="gpt-4o-mini", input="Hello", stream=True)
    deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
    span = only_span(exp)
    assert span["outputs"]["content"] == "".join(deltas) == "Echo: Hello"
    assert span["status"] == "ok" and span["output_tokens"] > 0


def test_a_failed_responses_stream_is_an_error_span(client: openai.OpenAI, exp: InMemoryExporter) -> None:
    types = [e.type for e in client.responses.create(model="stream-error", input="Hello there", stream=True)]
    assert types[-2:] == ["error", "response.failed"]  # the client itself does not raise
    span = only_span(exp)
    assert span["status"] == "error"
    assert span["error"]["message"] == "The upstream model stopped responding."


# -- errors -----------------------------------------------------------------------------------------

def test_an_api_error_is_recorded_and_reraised_unchanged(client: openai.OpenAI, tracer: Tracer,
                                                         exp: InMemoryExporter) -> None:
    @tracer.observe
    def ask() -> None:
        client.chat.completions.create(model="error-400", messages=ASK)

    with pytest.raises(openai.BadRequestError) as raised:
        ask()
    assert raised.value.status_code == 400 and raised.value.code == "simulated_error"
    llm, outer = exp.spans
    assert llm["status"] == outer["status"] == "error"
    assert llm["error"]["type"] == "BadRequestError" and "Simulated error 400" in llm["error"]["message"]
    assert llm["parent_span_id"] == outer["span_id"]
    assert llm["inputs"]["model"] == "error-400"


async def test_a_server_error_from_the_async_client(aclient: openai.AsyncOpenAI, exp: InMemoryExporter) -> None:
    with pytest.raises(openai.InternalServerError):
        await aclient.responses.create(model="error-500", input="Hello")
    assert only_span(exp)["error"]["type"] == "InternalServerError"


def test_an_error_mid_stream_ends_the_span_with_it(client: openai.OpenAI, exp: InMemoryExporter) -> None:
    stream = client.chat.completions.create(model="stream-error", messages=ASK, stream=True)
    assert next(stream).choices  # the first delta arrives
    with pytest.raises(openai.APIError, match="stopped responding"):
        list(stream)
    span = only_span(exp)
    assert span["status"] == "error" and span["error"]["type"] == "APIError"


def test_a_bug_in_the_recording_code_never_breaks_the_call(tracer: Tracer, exp: InMemoryExporter,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    class Weird:
        @property
        def choices(self) -> Any:
            raise RuntimeError("unexpected response shape")

    class Completions:
        def create(self, **kwargs: Any) -> Weird:
            return Weird()

    class Chat:
        completions = Completions()

    class LookAlike:  # an OpenAI-compatible client: duck-typed
        chat = Chat()

    weird = wrap(LookAlike(), tracer)
    with pytest.raises(RuntimeError, match="unexpected response shape"):  # under pytest, SDK bugs surface
        weird.chat.completions.create(model="m", messages=ASK)
    monkeypatch.setenv("EVALSTREAM_SDK_RERAISE", "0")  # in production they are logged, and the call works
    assert isinstance(weird.chat.completions.create(model="m", messages=ASK), Weird)
    assert [s["status"] for s in exp.spans] == ["ok", "ok"]


# -- wrapping ---------------------------------------------------------------------------------------

def test_wrapping_twice_records_one_span_and_an_explicit_tracer_rebinds(client: openai.OpenAI,
                                                                        exp: InMemoryExporter) -> None:
    assert wrap(wrap(client)) is client
    client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert len(exp.spans) == 1
    other, other_exp = recording_tracer("other")
    wrap(client, other)
    client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert len(exp.spans) == 1 and len(other_exp.spans) == 1


def test_without_a_tracer_the_latest_one_is_used_at_call_time(openai_server: OpenAIServer) -> None:
    client = wrap(openai_client(openai_server))  # wrapped before any tracer of this test exists
    tracer, exp = recording_tracer("late")
    client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert exp.names() == ["openai.chat.completions"]
    assert tracer.enabled


def test_without_a_tracer_the_current_spans_tracer_is_used_in_any_thread(openai_server: OpenAIServer) -> None:
    """The latest tracer is a contextvar, not a module global: a thread started without the caller's context
    sees it only through its own current span (or `bind_context`)."""
    client = wrap(openai_client(openai_server))
    tracer, exp = recording_tracer("threads")
    other, other_exp = recording_tracer("built-later")  # the latest tracer of this context

    def traced_in_a_thread() -> None:
        with tracer.span("handle", "agent"):
            client.chat.completions.create(model="gpt-4o-mini", messages=ASK)

    def untraced_in_a_thread() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=ASK)

    for target in (traced_in_a_thread, untraced_in_a_thread, bind_context(untraced_in_a_thread)):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
    assert exp.names() == ["openai.chat.completions", "handle"]  # the span's tracer, not the latest one
    assert other_exp.names() == ["openai.chat.completions"]  # bound to this context: the latest tracer
    assert len(openai_server.requests) == 3 and other.enabled


def test_tracing_disabled_is_a_pure_pass_through(openai_server: OpenAIServer) -> None:
    client = wrap(openai_client(openai_server), Tracer(enabled=False))
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True)
    assert type(stream) is openai.Stream  # not even a proxy
    stream.close()
    assert len(openai_server.requests) == 2


def test_capture_io_off_keeps_usage_but_not_content(openai_server: OpenAIServer) -> None:
    tracer, exp = recording_tracer("private", capture_io=False)
    client = wrap(openai_client(openai_server), tracer)
    client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=[WEATHER], temperature=0)
    span = only_span(exp)
    assert span["inputs"] == {"model": "gpt-4o-mini", "temperature": 0}
    assert "outputs" not in span and span["output_tokens"] > 0
    assert span["attributes"]["tool_calls"] == [{"id": span["attributes"]["tool_calls"][0]["id"],
                                                 "name": "get_weather"}]


def test_unsupported_objects_come_back_unchanged(tracer: Tracer) -> None:
    thing = object()
    assert wrap(thing, tracer) is thing


# -- litellm ----------------------------------------------------------------------------------------

def test_litellm_completion(litellm: Any, tracer: Tracer, exp: InMemoryExporter,
                            openai_server: OpenAIServer) -> None:
    llm = wrap(litellm, tracer)
    assert llm is not litellm and litellm.completion is not llm.completion  # the module is left alone
    assert llm.get_model_info is litellm.get_model_info  # everything else passes through
    response = llm.completion(model="openai/gpt-4o-mini", messages=ASK, api_base=openai_server.base_url,
                              api_key="sk-test", temperature=0.5)
    assert wrap(llm) is llm
    span = only_span(exp)
    assert span["name"] == "litellm.completion" and span["status"] == "ok"
    assert span["inputs"] == {"model": "openai/gpt-4o-mini", "messages": ASK, "temperature": 0.5}  # no api_key
    assert span["outputs"] == {"role": "assistant", "content": "Echo: Weather in Paris?"}
    assert span["model"] == SERVED
    assert (span["input_tokens"], span["output_tokens"]) == (response.usage.prompt_tokens,
                                                             response.usage.completion_tokens)
    assert span["cost_usd"] == pytest.approx(response._hidden_params["response_cost"]) and span["cost_usd"] > 0


def test_litellm_stream(litellm: Any, tracer: Tracer, exp: InMemoryExporter, openai_server: OpenAIServer) -> None:
    llm = wrap(litellm, tracer)
    chunks = list(llm.completion("openai/gpt-4o-mini", ASK, api_base=openai_server.base_url, api_key="sk-test",
                                 stream=True, stream_options={"include_usage": True}))
    span = only_span(exp)
    assert span["inputs"]["messages"] == ASK  # given positionally
    assert span["outputs"]["content"] == "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert span["outputs"]["content"] == "Echo: Weather in Paris?"
    assert span["input_tokens"] > 0 and span["output_tokens"] > 0


async def test_litellm_acompletion_streaming_and_not(litellm: Any, tracer: Tracer, exp: InMemoryExporter,
                                                     openai_server: OpenAIServer) -> None:
    llm = wrap(litellm, tracer)
    options = {"model": "openai/gpt-4o-mini", "api_base": openai_server.base_url, "api_key": "sk-test"}

    @tracer.observe
    async def both() -> None:
        response = await llm.acompletion(messages=ASK, **options)
        assert response.choices[0].message.content == "Echo: Weather in Paris?"
        stream = await llm.acompletion(messages=[{"role": "user", "content": "again"}], stream=True, **options)
        assert [c async for c in stream]

    await both()
    plain, streamed, outer = exp.spans
    assert plain["name"] == streamed["name"] == "litellm.acompletion"
    assert plain["parent_span_id"] == streamed["parent_span_id"] == outer["span_id"]
    assert plain["output_tokens"] > 0 and plain["cost_usd"] > 0
    assert streamed["outputs"]["content"] == "Echo: again" and streamed["status"] == "ok"


async def test_litellm_errors_are_reraised(litellm: Any, tracer: Tracer, exp: InMemoryExporter,
                                           openai_server: OpenAIServer) -> None:
    llm = wrap(litellm, tracer)
    with pytest.raises(litellm.BadRequestError):
        await llm.acompletion(model="openai/error-400", messages=ASK, api_base=openai_server.base_url,
                              api_key="sk-test")
    span = only_span(exp)
    assert span["status"] == "error" and span["error"]["type"] == "BadRequestError"


def test_a_stream_dropped_half_read_ends_its_span_when_collected(client: openai.OpenAI,
                                                                 exp: InMemoryExporter) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True)
    next(stream)
    assert stream.response.status_code == 200  # other attributes are the openai Stream's
    del stream
    gc.collect()
    span = only_span(exp)
    assert span["status"] == "ok" and span["attributes"]["stream_incomplete"] is True


ISOLATED = textwrap.dedent(
    """
    import sys

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("openai", "litellm"):
                raise ImportError(name)

    sys.meta_path.insert(0, Blocker())
    from pipeline.sdk import wrap
    from pipeline.sdk.testing import recording_tracer

    class Completions:
        def create(self, **kwargs):
            return {"model": "m-1", "choices": [{"message": {"content": "ok"}}], "usage": {"prompt_tokens": 3}}

    class Chat:
        completions = Completions()

    class Client:
        chat = Chat()

    tracer, exp = recording_tracer()
    assert wrap(Client()).chat.completions.create(model="m", messages=[])["model"] == "m-1"
    assert exp.spans[0]["model"] == "m-1" and exp.spans[0]["input_tokens"] == 3
    assert not {m.split(".")[0] for m in sys.modules} & {"openai", "litellm"}
    """
)


def test_wrap_needs_neither_openai_nor_litellm() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("EVALSTREAM_KAFKA_BOOTSTRAP", "PYTEST_CURRENT_TEST")}
    proc = subprocess.run([sys.executable, "-c", ISOLATED], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
