"""Agent-as-a-judge through litellm's real client: inline for small traces, tools and a bounded loop for large."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from pipeline.contracts import Trace
from scorers.judges.agent_judge import AgentJudge
from scorers.judges.client import JudgeClient
from scorers.judges.errors import JudgeConfigError
from scorers.judges.span_tree import SpanTree
from scorers.testing import judge_client
from tests.support.judge_traces import FAILED_URL, FAILURE_MESSAGE, agent_trace
from tests.support.openai_server import OpenAIServer, Reply

MODEL = "openai/gpt-4o-mini"
INSTRUCTIONS = "Look at {trace} and decide whether every tool call the agent made succeeded."
CRITERIA = ["Every tool call succeeded"]


@pytest.fixture
def client() -> JudgeClient:
    return judge_client()  # this test's own: a real litellm client that gives up quickly


@pytest.fixture
def endpoint(openai_server: OpenAIServer, client: JudgeClient) -> dict[str, Any]:
    """A judge's params against the local server, and its client (as a worker's resolver hands it one)."""
    return {"model": MODEL, "api_base": openai_server.base_url, "api_key": "test", "client": client}


@pytest.fixture(scope="module")
def large() -> Trace:
    return agent_trace(300)


def verdict(value: str, reason: str = "seen") -> dict[str, str]:
    args = {"criteria": {"c1": {"reason": reason, "verdict": value}}, "summary": reason}
    return {"name": "submit_verdicts", "arguments": json.dumps(args)}


def tool_results(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m.get("role") == "tool"]


async def test_a_small_trace_goes_inline_in_one_call(openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    judge = AgentJudge(instructions=INSTRUCTIONS, criteria=CRITERIA, **endpoint)
    openai_server.reply_with(tool_calls=[verdict("false", "fetch_page timed out")])
    score = await judge.run(agent_trace(10))
    assert score.passed is False and score.criteria[0].reason == "fetch_page timed out"
    (request,) = openai_server.requests
    body = request.body
    assert [t["function"]["name"] for t in body["tools"]] == ["submit_verdicts"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "submit_verdicts"}}
    user = body["messages"][1]["content"]
    assert user.startswith("Look at Trace ") and FAILURE_MESSAGE in user and "Germany" in user  # payloads inline
    assert score.metadata["trace_view"]["mode"] == "inline"
    assert score.metadata["judge"]["steps"] == 1 and score.metadata["judge"]["tool_calls"] == []


async def test_a_large_trace_is_investigated_with_tools_then_judged(
        openai_server: OpenAIServer, endpoint: dict[str, Any], large: Trace,
        caplog: pytest.LogCaptureFixture) -> None:
    failed = next(s for s in large.spans if s.status == "error")
    short = SpanTree(large).short_id(failed)

    def script(body: dict[str, Any]) -> Reply:
        results = tool_results(body)
        if not results:
            return Reply(tool_calls=[{"name": "search_trace", "arguments": json.dumps({"pattern": "timed out"})}])
        if len(results) == 1:
            return Reply(tool_calls=[{"name": "get_spans", "arguments": json.dumps({"span_ids": [short]})}])
        return Reply(tool_calls=[verdict("false", f"span {short} timed out")])

    openai_server.respond_with(script)
    judge = AgentJudge(instructions=INSTRUCTIONS, criteria=CRITERIA, **endpoint)
    with caplog.at_level(logging.DEBUG, logger="scorers.judges"):
        score = await judge.run(large)
    assert score.passed is False and short in score.criteria[0].reason
    assert len(openai_server.requests) == 3
    first = openai_server.requests[0].body
    skeleton = first["messages"][1]["content"]
    assert "Germany" not in skeleton and "docs.example.com/p/" not in skeleton and f"[{short}] fetch_page" in skeleton
    assert [t["function"]["name"] for t in first["tools"]] == [
        "get_trace_info", "list_spans", "get_spans", "search_trace", "submit_verdicts"]
    assert first["tool_choice"] == "required"
    last = openai_server.requests[-1].body
    searched, fetched = tool_results(last)
    assert f'"span_id":"{short}"' in searched and "[[timed out]]" in searched
    assert FAILED_URL in fetched and '"type":"TimeoutError"' in fetched
    meta = score.metadata["judge"]
    assert meta["steps"] == 3 and [t["name"] for t in meta["tool_calls"]] == ["search_trace", "get_spans"]
    assert meta["tool_calls"][1]["arguments"] == {"span_ids": [short]}
    assert score.metadata["trace_view"]["mode"] == "skeleton"
    assert score.metadata["trace_view"]["estimated_tokens"] > judge.inline_tokens
    tool_logs = [r.getMessage() for r in caplog.records if r.name == "scorers.judges.trace_toolbox"]
    assert len(tool_logs) == 2 and all(large.trace_id in m for m in tool_logs)


async def test_the_loop_is_bounded_and_then_the_verdict_is_forced(
        openai_server: OpenAIServer, endpoint: dict[str, Any], large: Trace) -> None:
    # without a script the server keeps calling the first tool (get_trace_info), as a judge that never decides
    judge = AgentJudge(instructions=INSTRUCTIONS, criteria=CRITERIA, max_steps=3, **endpoint)
    score = await judge.run(large)
    bodies = [r.body for r in openai_server.requests]
    assert len(bodies) == 4
    assert [b["tool_choice"] for b in bodies[:3]] == ["required"] * 3
    assert bodies[3]["tool_choice"] == {"type": "function", "function": {"name": "submit_verdicts"}}
    assert "used all your tool rounds" in bodies[3]["messages"][-1]["content"]
    assert len(tool_results(bodies[3])) == 3
    assert score.criteria[0].verdict == "true"  # the server's schema-valid default answer
    meta = score.metadata["judge"]
    assert meta["steps"] == 4 and [t["step"] for t in meta["tool_calls"]] == [1, 2, 3]


async def test_a_chatty_step_is_nudged_and_a_json_verdict_in_text_is_accepted(
        openai_server: OpenAIServer, endpoint: dict[str, Any], large: Trace) -> None:
    openai_server.reply_with(content="Let me think about this trace.")
    openai_server.reply_with(content=json.dumps({"criteria": {"c1": {"reason": "ok", "verdict": "true"}}}))
    judge = AgentJudge(instructions=INSTRUCTIONS, criteria=CRITERIA, **endpoint)
    score = await judge.run(large)
    assert score.passed is True and len(openai_server.requests) == 2
    assert "submit_verdicts" in openai_server.requests[1].body["messages"][-1]["content"]


async def test_a_judge_without_tool_calling_for_its_verdict_answers_in_json(
        openai_server: OpenAIServer, endpoint: dict[str, Any], large: Trace) -> None:
    openai_server.reply_with(tool_calls=[{"name": "get_trace_info", "arguments": "{}"}])
    openai_server.reply_with(content=json.dumps({"criteria": {"c1": {"reason": "a timeout", "verdict": "false"}}}))
    judge = AgentJudge(instructions=INSTRUCTIONS, criteria=CRITERIA, answer_via="json", max_steps=1, **endpoint)
    score = await judge.run(large)
    explore, forced = (r.body for r in openai_server.requests)
    assert score.passed is False and explore["tool_choice"] == "auto"
    assert "submit_verdicts" not in [t["function"]["name"] for t in explore["tools"]]
    assert forced["tool_choice"] == "none" and len(forced["tools"]) == 4  # declared for the earlier calls only
    assert "JSON object" in forced["messages"][-1]["content"]


async def test_only_five_tool_calls_run_per_round(openai_server: OpenAIServer, endpoint: dict[str, Any],
                                                  large: Trace) -> None:
    openai_server.reply_with(tool_calls=[{"name": "get_trace_info", "arguments": "{}"}] * 7)
    openai_server.reply_with(tool_calls=[verdict("true")])
    judge = AgentJudge(instructions=INSTRUCTIONS, criteria=CRITERIA, **endpoint)
    score = await judge.run(large)
    results = tool_results(openai_server.requests[-1].body)
    assert len(results) == 7 and sum("at most 5 tool calls" in r for r in results) == 2
    assert len(score.metadata["judge"]["tool_calls"]) == 5


async def test_labels_and_scale_outputs(openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    rating = AgentJudge(instructions="Rate the efficiency of {trace}", labels=["optimal", "needs_improvement"],
                        passing=["optimal"], **endpoint)
    openai_server.reply_with(tool_calls=[{"name": "submit_label",
                                          "arguments": '{"reason": "a 30 s timeout", "label": "needs_improvement"}'}])
    score = await rating.run(agent_trace(10))
    assert (score.value, score.passed) == ("needs_improvement", False)
    scale = AgentJudge(instructions="How well did the agent plan? {trace}", threshold=8, **endpoint)
    openai_server.reply_with(tool_calls=[{"name": "submit_score", "arguments": '{"reason": "ok", "score": 8}'}])
    scored = await scale.run(agent_trace(10))
    assert scale.decide(scored, None) == (True, 8.0)


def test_agent_judge_params_are_checked(endpoint: dict[str, Any]) -> None:
    with pytest.raises(JudgeConfigError, match=r"\{trace\}"):
        AgentJudge(instructions="Judge the {outputs}", criteria=CRITERIA, **endpoint)
    with pytest.raises(JudgeConfigError, match="not both"):
        AgentJudge(instructions=INSTRUCTIONS, criteria=CRITERIA, labels=["a", "b"], **endpoint)
    with pytest.raises(JudgeConfigError, match="max_steps"):
        AgentJudge(instructions=INSTRUCTIONS, criteria=CRITERIA, max_steps=0, **endpoint)
    with pytest.raises(JudgeConfigError, match="instructions"):
        AgentJudge(instructions=INSTRUCTIONS, template="{trace}", **endpoint)
