"""pipeline/sdk: the Tracer's decorators, with no broker (no-op) and with the in-memory test kit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline.contracts import Span, SpanBatch
from pipeline.sdk import Tracer
from pipeline.sdk.testing import InMemoryExporter, recording_tracer

MAX_FIELD_BYTES = 32 * 1024


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVALSTREAM_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("EVALSTREAM_MONITORING", raising=False)


@pytest.fixture
def recorded() -> tuple[Tracer, InMemoryExporter]:
    return recording_tracer("support-bot", service="api")


@pytest.fixture
def tracer(recorded: tuple[Tracer, InMemoryExporter]) -> Tracer:
    return recorded[0]


@pytest.fixture
def exp(recorded: tuple[Tracer, InMemoryExporter]) -> InMemoryExporter:
    return recorded[1]


def ended(exp: InMemoryExporter) -> list[tuple[dict[str, Any], bool]]:
    """(span, ends_trace) in the order spans ended."""
    finals = list(exp.final_traces)
    out = []
    for span in exp.spans:
        is_root = span["parent_span_id"] is None
        out.append((span, is_root and span["trace_id"] in finals))
    return out


# -- no broker: a no-op -----------------------------------------------------------------------------

class Boom(Exception):
    pass


def test_without_bootstrap_the_tracer_is_a_noop() -> None:
    t = Tracer(project="p")
    assert not t.enabled and t.exporter is None
    assert t.flush() is True and t.dropped == 0
    t.shutdown()

    @t.observe(span_type="tool")
    def add(a: int, b: int = 1) -> int:
        return a + b

    @t.agent()
    def fails() -> None:
        raise Boom("kept")

    assert add(2, b=3) == 5
    assert add.__name__ == "add"  # functools.wraps
    with pytest.raises(Boom) as info:
        fails()
    assert str(info.value) == "kept"
    with t.span("manual") as handle:  # the context manager works too, and sends nothing
        handle.set_attribute("k", 1)


async def test_without_bootstrap_async_functions_are_unchanged() -> None:
    t = Tracer()
    err = Boom("async")

    @t.observe()
    async def twice(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    @t.observe()
    async def fails() -> None:
        raise err

    assert await twice(21) == 42
    with pytest.raises(Boom) as info:
        await fails()
    assert info.value is err


def test_disabled_by_argument_or_env_even_with_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Tracer(bootstrap_servers="localhost:1", enabled=False).exporter is None
    monkeypatch.setenv("EVALSTREAM_MONITORING", "off")
    t = Tracer(bootstrap_servers="localhost:1")
    assert not t.enabled and t.exporter is None


# -- with a recording exporter ----------------------------------------------------------------------

def test_nested_spans_share_a_trace_and_link_to_their_parent(tracer: Tracer, exp: InMemoryExporter) -> None:
    @tracer.observe(span_type="llm")
    def llm(prompt: str) -> str:
        return prompt.upper()

    @tracer.observe(span_type="tool", name="web_search")
    def search(query: str, limit: int = 3) -> list[str]:
        return [llm(query)]

    @tracer.agent("planner")
    def plan(question: str) -> str:
        return search(question)[0] + llm("done")

    assert plan("refund?") == "REFUND?DONE"
    names = [s["name"] for s, _ in ended(exp)]
    assert names == ["llm", "web_search", "llm", "planner"]  # a span is emitted when it ends
    spans = [s for s, _ in ended(exp)]
    root = spans[-1]
    assert len({s["trace_id"] for s in spans}) == 1 and len(root["trace_id"]) == 32
    assert len({s["span_id"] for s in spans}) == 4
    assert root["parent_span_id"] is None and root["span_type"] == "agent"
    search_span = spans[1]
    assert search_span["parent_span_id"] == root["span_id"] and search_span["span_type"] == "tool"
    assert spans[0]["parent_span_id"] == search_span["span_id"]
    assert spans[2]["parent_span_id"] == root["span_id"]
    assert [flag for _, flag in ended(exp)] == [False, False, False, True]  # root_ended only for the root
    for s in spans:
        assert s["project"] == "support-bot" and s["service"] == "api" and s["status"] == "ok"
        assert s["agent_name"] == "planner" and s["agent_id"] == root["agent_id"]
        assert s["start_ns"] <= s["end_ns"]
        Span.model_validate(s)  # what the SDK sends is the wire contract
    assert search_span["inputs"] == {"query": "refund?"}
    assert search_span["outputs"] == ["REFUND?"]
    assert root["outputs"] == "REFUND?DONE"
    SpanBatch.model_validate({"trace_id": root["trace_id"], "spans": spans, "final": True})


def test_separate_calls_are_separate_traces(tracer: Tracer, exp: InMemoryExporter) -> None:
    @tracer.observe()
    def step() -> None:
        return None

    step()
    step()
    (a, ra), (b, rb) = ended(exp)
    assert a["trace_id"] != b["trace_id"] and ra and rb
    assert a["outputs"] is None


def test_innermost_agent_wins(tracer: Tracer, exp: InMemoryExporter) -> None:
    @tracer.observe(span_type="tool")
    def tool(tag: str) -> str:
        return tag

    @tracer.agent("researcher")
    def research() -> str:
        return tool("inside-researcher")

    @tracer.agent("supervisor")
    def supervise() -> None:
        tool("before")
        research()
        tool("after")

    supervise()
    spans = [s for s, _ in ended(exp)]
    tool_agent = {s["inputs"]["tag"]: s["agent_name"] for s in spans if s["name"] == "tool"}
    assert tool_agent == {"before": "supervisor", "inside-researcher": "researcher",
                          "after": "supervisor"}  # attribution is restored when the inner agent returns
    by_name = exp.by_name()
    assert by_name["researcher"]["agent_name"] == "researcher"
    assert by_name["researcher"]["parent_span_id"] == by_name["supervisor"]["span_id"]
    assert by_name["researcher"]["agent_id"] != by_name["supervisor"]["agent_id"]


def test_exceptions_mark_spans_as_errors_and_propagate_unchanged(tracer: Tracer, exp: InMemoryExporter) -> None:
    err = Boom("tool exploded")

    @tracer.observe(span_type="tool")
    def tool() -> None:
        raise err

    @tracer.agent("planner")
    def plan() -> None:
        tool()

    with pytest.raises(Boom) as info:
        plan()
    assert info.value is err
    spans = exp.by_name()
    for name in ("tool", "planner"):
        s = spans[name]
        assert s["status"] == "error"
        assert s["error"]["type"] == "Boom" and s["error"]["message"] == "tool exploded"
        assert "Boom: tool exploded" in s["error"]["stack"]
        assert "outputs" not in s
    assert {s['name']: f for s, f in ended(exp)} == {"tool": False, "planner": True}


def test_a_caught_exception_only_fails_the_inner_span(tracer: Tracer, exp: InMemoryExporter) -> None:
    @tracer.observe()
    def flaky() -> None:
        raise KeyError("missing")

    @tracer.observe()
    def handler() -> str:
        try:
            flaky()
        except KeyError:
            return "recovered"
        return "no"

    assert handler() == "recovered"
    spans = exp.by_name()
    assert spans["flaky"]["status"] == "error" and spans["flaky"]["error"]["type"] == "KeyError"
    assert spans["handler"]["status"] == "ok" and "error" not in spans["handler"]


async def test_async_functions_nest_and_keep_parents_across_tasks(tracer: Tracer, exp: InMemoryExporter) -> None:
    @tracer.observe(span_type="tool")
    async def fetch(url: str) -> str:
        await asyncio.sleep(0.001)
        return f"<{url}>"

    @tracer.agent("crawler")
    async def crawl(urls: list[str]) -> list[str]:
        return list(await asyncio.gather(*(fetch(u) for u in urls)))

    assert await crawl(["a", "b", "c"]) == ["<a>", "<b>", "<c>"]
    spans = [s for s, _ in ended(exp)]
    root = next(s for s in spans if s["name"] == "crawler")
    fetches = [s for s in spans if s["name"] == "fetch"]
    assert len(fetches) == 3
    assert {s["trace_id"] for s in spans} == {root["trace_id"]}
    assert all(s["parent_span_id"] == root["span_id"] and s["agent_name"] == "crawler" for s in fetches)
    assert sorted(s["inputs"]["url"] for s in fetches) == ["a", "b", "c"]
    assert [flag for s, flag in ended(exp) if s["name"] == "fetch"] == [False, False, False]
    assert {s['name']: f for s, f in ended(exp)}["crawler"] is True


async def test_async_exception_marks_error_and_propagates(tracer: Tracer, exp: InMemoryExporter) -> None:
    @tracer.observe()
    async def fails() -> None:
        await asyncio.sleep(0)
        raise Boom("async boom")

    with pytest.raises(Boom, match="async boom"):
        await fails()
    ((span, root_ended),) = ended(exp)
    assert span["status"] == "error" and span["error"]["type"] == "Boom" and root_ended


def test_method_inputs_skip_self_and_values_stay_json(tracer: Tracer, exp: InMemoryExporter) -> None:
    class Bot:
        @tracer.observe()
        def answer(self, question: str, context: object = None) -> dict:
            return {"q": question}

    Bot().answer("hi", context=object())
    (span, _), = ended(exp)
    assert set(span["inputs"]) == {"question", "context"}
    assert span["inputs"]["question"] == "hi" and "object" in span["inputs"]["context"]


def test_oversized_output_is_truncated(tracer: Tracer, exp: InMemoryExporter) -> None:
    @tracer.observe()
    def big() -> str:
        return "x" * (MAX_FIELD_BYTES * 2)

    assert len(big()) == MAX_FIELD_BYTES * 2  # the caller still gets everything
    (span, _), = ended(exp)
    assert span["outputs"].endswith("…[truncated]") and len(span["outputs"]) <= MAX_FIELD_BYTES + 20
