"""pipeline/sdk: generators, agents on methods, threads, traceparent, async_evaluate, switches, redaction."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pipeline.contracts import Span
from pipeline.errors import ConfigError
from pipeline.sampling import is_sampled
from pipeline.sdk import EMAIL, Tracer, bind_context, continue_trace, inject, redact_patterns
from pipeline.sdk.propagation import parse_traceparent
from pipeline.sdk.testing import FakeClock, InMemoryExporter, SequentialIds, recording_tracer


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EVALSTREAM_KAFKA_BOOTSTRAP", "EVALSTREAM_MONITORING", "EVALSTREAM_EVALUATIONS",
                 "EVALSTREAM_PROJECT", "EVALSTREAM_SDK_MAX_FIELD_BYTES"):
        monkeypatch.delenv(name, raising=False)


# -- generators --------------------------------------------------------------------------------------

def test_a_generator_span_covers_the_whole_iteration_and_its_body_sees_the_span() -> None:
    tracer, exp = recording_tracer()

    @tracer.observe(span_type="tool")
    def lookup(key: str) -> str:
        return key.upper()

    @tracer.observe(span_type="retriever")
    def stream(keys: list[str]):
        for key in keys:
            yield lookup(key)

    @tracer.observe()
    def outer() -> list[str]:
        out = []
        for item in stream(["a", "b"]):
            tracer.current_span().set_attribute("seen", item)  # the caller's own span, not the generator's
            out.append(item)
        return out

    assert outer() == ["A", "B"]
    spans = exp.by_name()
    assert exp.names() == ["lookup", "lookup", "stream", "outer"]
    assert spans["stream"]["outputs"] == ["A", "B"] and spans["stream"]["inputs"] == {"keys": ["a", "b"]}
    assert spans["stream"]["parent_span_id"] == spans["outer"]["span_id"]
    assert all(s["parent_span_id"] == spans["stream"]["span_id"] for s in exp.spans if s["name"] == "lookup")
    assert spans["outer"]["attributes"] == {"seen": "B"}


def test_a_generator_that_raises_or_is_abandoned_is_recorded_correctly() -> None:
    tracer, exp = recording_tracer()

    @tracer.observe()
    def broken():
        yield 1
        raise ValueError("bad row")

    @tracer.observe()
    def endless():
        n = 0
        while True:
            yield n
            n += 1

    with pytest.raises(ValueError, match="bad row"):
        list(broken())
    gen = endless()
    assert [next(gen), next(gen), next(gen)] == [0, 1, 2]
    gen.close()
    spans = exp.by_name()
    assert spans["broken"]["status"] == "error" and spans["broken"]["error"]["type"] == "ValueError"
    assert spans["endless"]["status"] == "ok" and spans["endless"]["outputs"] == [0, 1, 2]


def test_values_thrown_into_a_generator_reach_its_body() -> None:
    tracer, exp = recording_tracer()

    @tracer.observe()
    def resilient():
        while True:
            try:
                yield "ok"
            except KeyError:
                yield "recovered"
                return

    gen = resilient()
    assert next(gen) == "ok"
    assert gen.throw(KeyError("x")) == "recovered"
    with pytest.raises(StopIteration):
        next(gen)
    assert exp.by_name()["resilient"]["outputs"] == ["ok", "recovered"]


async def test_async_generators_are_spans_too() -> None:
    tracer, exp = recording_tracer()

    @tracer.observe(span_type="tool")
    async def fetch(i: int) -> int:
        await asyncio.sleep(0)
        return i * 10

    @tracer.observe(span_type="chain")
    async def pages(n: int):
        for i in range(n):
            yield await fetch(i)

    assert [x async for x in pages(3)] == [0, 10, 20]
    spans = exp.by_name()
    assert spans["pages"]["outputs"] == [0, 10, 20] and spans["pages"]["span_type"] == "chain"
    assert all(s["parent_span_id"] == spans["pages"]["span_id"] for s in exp.spans if s["name"] == "fetch")


# -- agents ------------------------------------------------------------------------------------------

def test_agent_over_observe_on_methods_names_class_and_instance() -> None:
    tracer, exp = recording_tracer()

    class Researcher:
        def __init__(self, agent_id: str) -> None:
            self.id = agent_id

        @tracer.agent(identifier="id")
        @tracer.observe()
        def invoke_agent(self, topic: str) -> str:
            return self.search(topic)

        @tracer.observe(span_type="tool")
        def search(self, topic: str) -> str:
            return f"notes on {topic}"

    class Planner:
        @tracer.observe(span_type="tool")
        def random_tool(self) -> None:
            return None

        @tracer.agent()
        @tracer.observe()
        def invoke_agent(self, goal: str) -> str:
            self.random_tool()
            return Researcher("Researcher1").invoke_agent(goal)

    Planner().invoke_agent("ship it")
    spans = exp.spans
    assert exp.names() == ["random_tool", "search", "invoke_agent", "invoke_agent"]
    by_agent = [(s["name"], s["agent_name"], s["span_type"]) for s in spans]
    assert by_agent == [("random_tool", "Planner", "tool"), ("search", "Researcher", "tool"),
                        ("invoke_agent", "Researcher", "agent"), ("invoke_agent", "Planner", "agent")]
    assert spans[1]["agent_id"] == "Researcher1" and spans[2]["agent_id"] == "Researcher1"
    assert spans[0]["agent_id"] == spans[3]["agent_id"] != "Researcher1"
    assert len({s["trace_id"] for s in spans}) == 1  # one span per decorated call, not two


def test_observe_over_agent_also_makes_one_span() -> None:
    tracer, exp = recording_tracer()

    @tracer.observe(name="entry")
    @tracer.agent(name="triage")
    def run() -> str:
        return "done"

    run()
    (span,) = exp.spans
    assert (span["name"], span["agent_name"], span["span_type"]) == ("entry", "triage", "agent")


# -- context across threads, tasks and services ------------------------------------------------------

def test_threads_keep_the_parent_with_bind_context() -> None:
    tracer, exp = recording_tracer()

    @tracer.observe(span_type="tool")
    def work(i: int) -> int:
        return i + 1

    @tracer.observe()
    def fan_out() -> list[int]:
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(bind_context(work), range(4)))

    assert fan_out() == [1, 2, 3, 4]
    root = exp.by_name()["fan_out"]
    workers = [s for s in exp.spans if s["name"] == "work"]
    assert len(workers) == 4 and all(s["parent_span_id"] == root["span_id"] for s in workers)


def test_spans_in_a_plain_thread_without_the_context_start_their_own_trace() -> None:
    tracer, exp = recording_tracer()

    @tracer.observe()
    def child() -> None:
        return None

    @tracer.observe()
    def parent() -> None:
        thread = threading.Thread(target=child)
        thread.start()
        thread.join()

    parent()
    spans = exp.by_name()
    assert spans["child"]["trace_id"] != spans["parent"]["trace_id"]


def test_traceparent_carries_a_trace_across_services_without_closing_it_early() -> None:
    caller, caller_exp = recording_tracer("frontend")
    callee, callee_exp = recording_tracer("backend", id_generator=SequentialIds())

    @callee.observe()
    def handle_request(headers: dict[str, str]) -> str:
        return "ok"

    def server(headers: dict[str, str]) -> str:
        with continue_trace(headers):
            return handle_request(headers)

    @caller.observe()
    def call_backend() -> str:
        headers = inject({})
        assert headers["traceparent"].startswith("00-") and headers["traceparent"].endswith("-01")
        return server(headers)

    call_backend()
    (outer,) = caller_exp.spans
    (inner,) = callee_exp.spans
    assert inner["trace_id"] == outer["trace_id"] and inner["parent_span_id"] == outer["span_id"]
    assert callee_exp.final_traces == []  # the callee's local root does not end the trace
    assert caller_exp.final_traces == [outer["trace_id"]]
    # The caller's span is a remote call (the pipeline waits for the callee's spans); the callee's answers it.
    assert outer["kind"] == "client" and inner["kind"] == "server"


def test_work_that_outlives_its_root_keeps_the_trace_open_until_it_ends() -> None:
    tracer, exp = recording_tracer("app")
    with tracer.span("request") as root:
        background = tracer.start_span("send-email", parent=root)
    assert exp.final_traces == []  # the root ended, but its process still has a span of the trace running
    assert exp.by_name()["request"]["spans_still_open"] == 1
    background.end()
    assert exp.final_traces == [exp.by_name()["send-email"]["trace_id"]]
    assert "spans_still_open" not in exp.by_name()["send-email"]


@pytest.mark.parametrize("header", ["", "garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
                                    "ff-" + "a" * 32 + "-" + "b" * 16 + "-01", "00-" + "a" * 32 + "-" + "b" * 15 + "-01"])
def test_invalid_traceparents_are_ignored(header: str) -> None:
    assert parse_traceparent(header) is None
    tracer, exp = recording_tracer()
    with continue_trace({"traceparent": header}), tracer.span("fresh"):
        pass
    assert exp.spans[0]["parent_span_id"] is None


# -- async_evaluate ----------------------------------------------------------------------------------

def test_async_evaluate_attaches_requests_sampled_like_server_side_rules() -> None:
    tracer, exp = recording_tracer()
    decisions: list[bool] = []

    @tracer.observe(span_type="tool")
    def answer(question: str) -> str:
        response = f"re: {question}"
        decisions.append(tracer.async_evaluate("answer_relevance", {"inputs": question, "outputs": response},
                                               sampling_rate=0.5, threshold=0.7))
        return response

    for i in range(40):
        answer(f"q{i}")
    assert 5 < sum(decisions) < 35
    for span, sampled in zip(exp.spans, decisions, strict=True):
        (request,) = span["evaluations"]
        assert sampled == is_sampled(span["trace_id"], "sdk:answer_relevance", 0.5)
        assert request["scorer"] == "answer_relevance" and request["threshold"] == 0.7
        assert ("example" in request) == sampled  # unsampled requests travel without their example
        Span.model_validate(span)


def test_async_evaluate_outside_a_span_is_not_lost() -> None:
    tracer, exp = recording_tracer()
    assert tracer.async_evaluate("error_spans", {"inputs": "x"}) is True
    (span,) = exp.spans
    assert span["name"] == "async_evaluate" and span["evaluations"][0]["scorer"] == "error_spans"


def test_scorer_classes_are_sent_by_their_registered_name_or_import_path() -> None:
    from scorers.builtin import BUILTINS

    class Unnamed:
        name = ""

    tracer, exp = recording_tracer()
    latency = BUILTINS["trace_latency"]
    with tracer.span("s"):
        tracer.async_evaluate(latency(), {"inputs": 1}, params={"max_ms": 5})
        tracer.async_evaluate(InMemoryExporter, {"inputs": 1})  # no `name`: its import path
        with pytest.raises(ValueError, match="has no name"):
            tracer.async_evaluate(Unnamed, {})  # under pytest the SDK re-raises its errors
    first, second = exp.spans[0]["evaluations"]
    assert first["scorer"] == "trace_latency" and first["params"] == {"max_ms": 5}
    assert second["scorer"] == "pipeline.sdk.testing:InMemoryExporter"


def test_evaluations_switch_drops_requests_but_keeps_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALSTREAM_EVALUATIONS", "false")
    tracer, exp = recording_tracer()
    with tracer.span("s"):
        assert tracer.async_evaluate("error_spans", {"inputs": 1}) is False
    assert "evaluations" not in exp.spans[0] and tracer.stats()["evaluations_dropped"] == 1


def test_monitoring_switch_turns_everything_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALSTREAM_MONITORING", "false")
    exp = InMemoryExporter()
    tracer = Tracer(exporter=exp)
    assert not tracer.enabled

    @tracer.observe()
    def f() -> int:
        return 1

    with tracer.span("manual") as span:
        span.set_attribute("k", 1)
    assert f() == 1 and tracer.async_evaluate("x", {}) is False and exp.spans == []


def test_arguments_beat_env_vars_which_beat_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALSTREAM_PROJECT", "from-env")
    monkeypatch.setenv("EVALSTREAM_MONITORING", "false")
    assert Tracer().project == "from-env" and not Tracer(exporter=InMemoryExporter()).enabled
    assert Tracer("explicit", enabled=True, exporter=InMemoryExporter()).project == "explicit"
    monkeypatch.delenv("EVALSTREAM_PROJECT")
    assert Tracer().project == "default"


@pytest.mark.parametrize(("name", "value"), [("EVALSTREAM_MONITORING", "maybe"),
                                             ("EVALSTREAM_SDK_MAX_QUEUE_SIZE", "lots"),
                                             ("EVALSTREAM_SDK_MAX_FIELD_BYTES", "3")])
def test_bad_configuration_fails_at_construction_naming_the_variable(monkeypatch: pytest.MonkeyPatch, name: str,
                                                                     value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        Tracer()


def test_configure_turns_an_unconfigured_tracer_on() -> None:
    tracer = Tracer("late")

    @tracer.observe()
    def f() -> int:
        return 1

    f()  # a no-op: nothing configured yet
    exp = InMemoryExporter()
    tracer.configure(project="late", exporter=exp)
    f()
    assert exp.names() == ["f"]


# -- capture: redaction and caps ---------------------------------------------------------------------

def test_secrets_are_masked_and_the_redact_hook_runs_before_sending() -> None:
    tracer, exp = recording_tracer(redact=redact_patterns(EMAIL))

    @tracer.observe()
    def login(user: str, password: str, headers: dict[str, str]) -> dict[str, Any]:
        return {"api_key": "sk-live", "max_tokens": 5, "note": f"mail {user}"}

    login("ann@example.com", "hunter2", {"Authorization": "Bearer x", "Accept": "json"})
    span = exp.spans[0]
    assert span["inputs"] == {"user": "[REDACTED]", "password": "[REDACTED]",
                              "headers": {"Authorization": "[REDACTED]", "Accept": "json"}}
    assert span["outputs"] == {"api_key": "[REDACTED]", "max_tokens": 5, "note": "mail [REDACTED]"}


def test_a_failing_redact_hook_withholds_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALSTREAM_SDK_RERAISE", "0")  # behave as in production

    def broken(value: Any) -> Any:
        raise RuntimeError("bug in redactor")

    tracer, exp = recording_tracer(redact=broken)
    with tracer.span("s", inputs={"card": "4111 1111 1111 1111"}):
        pass
    assert exp.spans[0]["inputs"] == "[withheld: redact hook failed]"


def test_capture_io_off_records_structure_without_payloads() -> None:
    tracer, exp = recording_tracer(capture_io=False)

    @tracer.observe()
    def private(ssn: str) -> str:
        return ssn

    private("123-45-6789")
    assert "inputs" not in exp.spans[0] and exp.spans[0].get("outputs") is None


def test_objects_that_are_not_json_become_readable_text() -> None:
    tracer, exp = recording_tracer()

    class Doc:
        def __repr__(self) -> str:
            return "Doc(7)"

    with tracer.span("s", inputs={"doc": Doc(), "tags": {"a"}, "blob": b"\x00\x01"}):
        pass
    assert exp.spans[0]["inputs"] == {"doc": "Doc(7)", "tags": ["a"], "blob": "<2 bytes>"}


def test_fake_clock_and_sequential_ids_make_spans_predictable() -> None:
    tracer, exp = recording_tracer(clock=FakeClock(start_ns=1000, step_ns=5))
    with tracer.span("a"), tracer.span("b"):
        pass
    b, a = exp.spans
    assert (a["trace_id"], a["span_id"], b["span_id"]) == ("0" * 31 + "1", "0" * 15 + "1", "0" * 15 + "2")
    assert (a["start_ns"], b["start_ns"], b["end_ns"], a["end_ns"]) == (1000, 1005, 1010, 1015)
