"""OpenTelemetry span -> wire span: the GenAI, OpenInference and evalstream vocabularies, status, caps."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.contracts import Span
from pipeline.otel.mapping import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_UNSET,
    OtelSpan,
    check_span,
    to_wire_span,
)
from pipeline.otel.values import TRUNCATED

TRACE = "0af7651916cd43dd8448eb211c80319c"
ROOT = "b7ad6b7169203331"
CHILD = "00f067aa0ba902b7"


def otel(attributes: dict[str, Any] | None = None, **fields: Any) -> OtelSpan:
    base: dict[str, Any] = {"trace_id": TRACE, "span_id": CHILD, "parent_span_id": ROOT, "name": "step",
                            "start_ns": 1_700_000_000_000_000_000, "end_ns": 1_700_000_000_250_000_000,
                            "attributes": attributes or {}}
    return OtelSpan(**{**base, **fields})


def wire(span: OtelSpan, project: str = "proj", **kwargs: Any) -> dict[str, Any]:
    result = to_wire_span(span, project, **kwargs)
    Span.model_validate(result)  # every mapped span is a valid contract span
    return result


# -- GenAI semantic conventions -------------------------------------------------------------------

@pytest.mark.parametrize(("operation", "span_type"), [
    ("chat", "llm"), ("text_completion", "llm"), ("generate_content", "llm"), ("embeddings", "embedding"),
    ("execute_tool", "tool"), ("invoke_agent", "agent"), ("create_agent", "agent"),
    ("retrieval", "retriever"),
])
def test_genai_operation_sets_the_span_type(operation: str, span_type: str) -> None:
    assert wire(otel({"gen_ai.operation.name": operation}))["span_type"] == span_type


def test_genai_chat_span_maps_model_tokens_messages_agent_and_session() -> None:
    messages_in = [{"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}]
    messages_out = [{"role": "assistant", "parts": [{"type": "text", "content": "Sunny"}]}]
    result = wire(otel({
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.agent.name": "planner",
        "gen_ai.agent.id": "agent-1",
        "gen_ai.conversation.id": "conv-9",
        "gen_ai.input.messages": orjson.dumps(messages_in).decode(),
        "gen_ai.output.messages": orjson.dumps(messages_out).decode(),
        "gen_ai.request.temperature": 0.2,
    }))
    assert result["span_type"] == "llm"
    assert result["model"] == "gpt-4o-2024-08-06"  # the model that answered
    assert (result["input_tokens"], result["output_tokens"], result["total_tokens"]) == (12, 7, 19)
    assert (result["agent_name"], result["agent_id"]) == ("planner", "agent-1")
    assert result["session_id"] == "conv-9"
    assert result["inputs"] == messages_in and result["outputs"] == messages_out
    # consumed attributes are gone; the rest (and the requested model, which did not win) stay
    assert result["attributes"] == {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                    "gen_ai.request.temperature": 0.2}


def test_older_genai_token_and_content_attributes() -> None:
    result = wire(otel({"gen_ai.request.model": "m", "gen_ai.usage.prompt_tokens": 3,
                        "gen_ai.usage.completion_tokens": 4, "gen_ai.prompt": "hi",
                        "gen_ai.completion": "hello"}))
    assert result["span_type"] == "llm"  # a model and no explicit type
    assert (result["input_tokens"], result["output_tokens"], result["total_tokens"]) == (3, 4, 7)
    assert (result["inputs"], result["outputs"]) == ("hi", "hello")


def test_flattened_legacy_genai_prompt_and_content_events() -> None:
    flattened = wire(otel({"gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "be brief",
                           "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "hi",
                           "gen_ai.prompt.name": "greeting"}))
    assert flattened["inputs"] == [{"role": "system", "content": "be brief"},
                                   {"role": "user", "content": "hi"}]
    assert flattened["attributes"] == {"gen_ai.prompt.name": "greeting"}

    from_events = wire(otel(events=[("gen_ai.content.prompt", {"gen_ai.prompt": '[{"role": "user"}]'}),
                                    ("gen_ai.content.completion", {"gen_ai.completion": "ok"})]))
    assert from_events["inputs"] == [{"role": "user"}] and from_events["outputs"] == "ok"
    assert "otel.events" not in from_events.get("attributes", {})


def test_genai_tool_span_arguments_and_result() -> None:
    result = wire(otel({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
                        "gen_ai.tool.call.arguments": '{"query": "paris"}',
                        "gen_ai.tool.call.result": "3 hits"}))
    assert result["span_type"] == "tool"
    assert result["inputs"] == {"query": "paris"} and result["outputs"] == "3 hits"
    assert result["attributes"]["gen_ai.tool.name"] == "search"


# -- OpenInference --------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "span_type"), [
    ("LLM", "llm"), ("TOOL", "tool"), ("AGENT", "agent"), ("CHAIN", "chain"), ("RETRIEVER", "retriever"),
    ("EMBEDDING", "embedding"), ("GUARDRAIL", "guardrail"), ("EVALUATOR", "evaluator"), ("RERANKER", "other"),
])
def test_openinference_kind_sets_the_span_type(kind: str, span_type: str) -> None:
    assert wire(otel({"openinference.span.kind": kind}))["span_type"] == span_type


def test_openinference_llm_span() -> None:
    result = wire(otel({
        "openinference.span.kind": "LLM",
        "llm.model_name": "claude-sonnet",
        "llm.token_count.prompt": 100, "llm.token_count.completion": 20, "llm.token_count.total": 125,
        "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "be nice",
        "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": "hi",
        "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": "hello",
        "input.value": '{"messages": []}', "input.mime_type": "application/json",
        "session.id": "s-1", "agent.name": "helper", "llm.cost.total": 0.0042,
    }))
    assert result["span_type"] == "llm" and result["model"] == "claude-sonnet"
    assert (result["input_tokens"], result["output_tokens"], result["total_tokens"]) == (100, 20, 125)
    assert result["inputs"] == [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]
    assert result["outputs"] == [{"role": "assistant", "content": "hello"}]
    assert (result["session_id"], result["agent_name"], result["cost_usd"]) == ("s-1", "helper", 0.0042)
    # the raw request is kept, not lost, when the messages are the inputs
    assert result["attributes"]["input.value"] == '{"messages": []}'


def test_openinference_input_output_values_follow_their_mime_type() -> None:
    result = wire(otel({"openinference.span.kind": "TOOL", "input.value": '{"city": "Paris"}',
                        "input.mime_type": "application/json", "output.value": '{"not": "parsed"}',
                        "output.mime_type": "text/plain"}))
    assert result["inputs"] == {"city": "Paris"}
    assert result["outputs"] == '{"not": "parsed"}'
    assert result["attributes"] == {"openinference.span.kind": "TOOL"}  # values and mime types consumed


# -- our own attributes, resource, project --------------------------------------------------------

def test_evalstream_attributes_win() -> None:
    result = wire(otel({"evalstream.span_type": "guardrail", "openinference.span.kind": "LLM",
                        "evalstream.project": "billing", "evalstream.agent.name": "mine",
                        "gen_ai.agent.name": "theirs", "evalstream.agent.id": "a-7",
                        "evalstream.session.id": "s", "gen_ai.conversation.id": "c"}))
    assert result["span_type"] == "guardrail" and result["project"] == "billing"
    assert (result["agent_name"], result["agent_id"], result["session_id"]) == ("mine", "a-7", "s")


def test_project_precedence_and_service() -> None:
    resource = {"service.name": "checkout", "evalstream.project": "from-resource", "host.name": "h1"}
    assert wire(otel(resource=resource))["project"] == "from-resource"
    assert wire(otel({"evalstream.project": "from-span"}, resource=resource))["project"] == "from-span"
    plain = wire(otel(resource={"service.name": "checkout"}), project="configured")
    assert plain["project"] == "configured" and plain["service"] == "checkout"
    assert wire(otel(), project="")["project"] == "default"


def test_agent_fields_only_on_spans_that_carry_them() -> None:
    result = wire(otel({"gen_ai.operation.name": "execute_tool"}))
    assert "agent_name" not in result and "agent_id" not in result


def test_plain_span_is_a_function_span_with_its_attributes_and_scope() -> None:
    result = wire(otel({"http.method": "GET", "retries": [1, 2]}, scope="my.module"))
    assert result["span_type"] == "function" and result["status"] == "ok"
    assert result["attributes"] == {"http.method": "GET", "retries": [1, 2], "otel.scope.name": "my.module"}


# -- status and errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("code", [STATUS_UNSET, STATUS_OK])
def test_unset_and_ok_are_ok(code: int) -> None:
    result = wire(otel(status_code=code))
    assert result["status"] == "ok" and "error" not in result


def test_error_status_takes_the_exception_event() -> None:
    result = wire(otel(status_code=STATUS_ERROR, status_message="TimeoutError: slow", events=[
        ("retry", {"attempt": 1}),
        ("exception", {"exception.type": "TimeoutError", "exception.message": "upstream took 30s",
                       "exception.stacktrace": "Traceback ...\nTimeoutError"}),
    ]))
    assert result["status"] == "error"
    assert result["error"] == {"type": "TimeoutError", "message": "upstream took 30s",
                               "stack": "Traceback ...\nTimeoutError"}
    assert result["attributes"]["otel.events"] == [{"name": "retry", "attributes": {"attempt": 1}}]


def test_error_status_without_exception_uses_the_status_message() -> None:
    result = wire(otel({"error.type": "rate_limited"}, status_code=STATUS_ERROR,
                       status_message="429 from API"))
    assert result["error"] == {"type": "rate_limited", "message": "429 from API"}
    bare = wire(otel(status_code=STATUS_ERROR))
    assert bare["error"] == {"type": "Error", "message": ""}


def test_handled_exception_on_an_ok_span_stays_an_event() -> None:
    result = wire(otel(events=[("exception", {"exception.type": "KeyError"})]))
    assert result["status"] == "ok"
    assert result["attributes"]["otel.events"] == [
        {"name": "exception", "attributes": {"exception.type": "KeyError"}}]


# -- roots, values, caps --------------------------------------------------------------------------

def test_root_has_no_parent() -> None:
    root = otel(span_id=ROOT, parent_span_id=None)
    assert root.is_root and not otel().is_root
    assert "parent_span_id" not in wire(root)
    assert wire(otel())["parent_span_id"] == ROOT


@pytest.mark.parametrize("bad", [-1, "many", 1.5, True, 2**40])
def test_unusable_token_counts_stay_in_attributes(bad: Any) -> None:
    result = wire(otel({"gen_ai.usage.input_tokens": bad, "gen_ai.usage.output_tokens": 2}))
    assert "input_tokens" not in result and "total_tokens" not in result
    assert result["attributes"]["gen_ai.usage.input_tokens"] == bad


def test_large_values_are_capped_and_everything_is_json() -> None:
    huge = "x" * 100_000
    result = wire(otel({"gen_ai.prompt": huge, "blob": b"\x00\x01", "nested": {"a": (1, 2)},
                        "nan": float("nan"), "big": ["y" * 1000] * 100, "huge": 2**70}), max_value_bytes=1024)
    assert result["inputs"].endswith(TRUNCATED) and len(result["inputs"]) < 1100
    assert result["attributes"]["blob"] == "AAE="
    assert result["attributes"]["nested"] == {"a": [1, 2]}
    assert result["attributes"]["nan"] == "nan" and result["attributes"]["huge"] == str(2**70)
    assert result["attributes"]["big"].endswith(TRUNCATED)
    orjson.dumps(result)


def test_long_names_are_cut_to_the_contract_limit() -> None:
    assert len(wire(otel(name="n" * 5000))["name"]) == 1024


def test_odd_flattened_keys_do_not_break_mapping() -> None:
    result = wire(otel({"llm.input_messages.0.message": "flat", "llm.input_messages.0.message.role": "user",
                        "llm.input_messages.²": "superscript"}))
    assert isinstance(result["inputs"], list)


# -- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"trace_id": "abc"}, "traceId", "32 hex characters"),
    ({"trace_id": "0" * 32}, "traceId", "not all zero"),
    ({"trace_id": "Z" * 32}, "traceId", "32 hex characters"),
    ({"span_id": "1234"}, "spanId", "16 hex characters"),
    ({"parent_span_id": "xyz"}, "parentSpanId", "empty or 16 hex characters"),
    ({"name": ""}, "name", "must not be empty"),
    ({"start_ns": 0}, "startTimeUnixNano", "must be set"),
    ({"end_ns": 1}, "endTimeUnixNano", "before startTimeUnixNano"),
    ({"status_code": 7}, "status.code", "0 (unset), 1 (ok) or 2 (error)"),
])
def test_check_span_names_the_bad_field(fields: dict[str, Any], field: str, words: str) -> None:
    problem = check_span(otel(**fields))
    assert problem is not None
    assert problem[0] == field and words in problem[1]


def test_check_span_accepts_a_good_span() -> None:
    assert check_span(otel()) is None
    assert check_span(otel(parent_span_id=None)) is None
