"""LLM-as-a-judge scorers through litellm's real client against the local server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.contracts import Example, ScoreJob, ScoreStatus, Trace, Verdict
from pipeline.scoring.runner import RetryPolicy, ScorerCache, run_job
from scorers.judges.client import JudgeClient
from scorers.judges.errors import JudgeConfigError, JudgeOutputError
from scorers.judges.llm_judge import CriteriaJudge, LabelJudge, ScaleJudge
from scorers.testing import judge_client, resolver
from tests.support.judge_traces import agent_trace
from tests.support.openai_server import OpenAIServer

MODEL = "openai/gpt-4o-mini"
EXAMPLE = Example(inputs="How long do refunds take?", outputs="Refunds take 5 business days.",
                  expected="5 business days", context=["Refunds are paid within 5 business days."])
JUDGE_KEYS = {"model", "input_tokens", "output_tokens", "cost_usd", "latency_ms", "calls", "tool_calls", "steps"}


@pytest.fixture
def client() -> JudgeClient:
    return judge_client()  # this test's own: a real litellm client that gives up quickly


@pytest.fixture
def endpoint(openai_server: OpenAIServer, client: JudgeClient) -> dict[str, Any]:
    """A judge's params against the local server, and its client (as a worker's resolver hands it one)."""
    return {"model": MODEL, "api_base": openai_server.base_url, "api_key": "test", "client": client}


def verdicts(**by_key: str) -> dict[str, str]:
    args = {"criteria": {k: {"reason": f"because {k}", "verdict": v} for k, v in by_key.items()},
            "summary": "overall"}
    return {"name": "submit_verdicts", "arguments": json.dumps(args)}


def request_body(server: OpenAIServer, index: int = -1) -> dict[str, Any]:
    return server.requests[index].body


# -- criteria ---------------------------------------------------------------------------------------

async def test_criteria_get_one_verdict_each_through_a_strict_forced_tool_call(
        openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    judge = CriteriaJudge(criteria=["Answers the question", "Is polite"], **endpoint)
    openai_server.reply_with(tool_calls=[verdicts(c1="true", c2="true")])
    score = await judge.run(EXAMPLE)
    assert score.passed is True and score.value == 1.0
    assert [(c.criterion, c.verdict, c.reason) for c in score.criteria] == [
        ("Answers the question", Verdict.TRUE, "because c1"), ("Is polite", Verdict.TRUE, "because c2")]
    body = request_body(openai_server)
    (tool,) = body["tools"]
    fn = tool["function"]
    assert fn["name"] == "submit_verdicts" and fn["strict"] is True
    assert body["tool_choice"] == {"type": "function", "function": {"name": "submit_verdicts"}}
    per = fn["parameters"]["properties"]["criteria"]
    assert per["required"] == ["c1", "c2"] and per["additionalProperties"] is False
    assert per["properties"]["c2"]["description"] == "Is polite"
    assert per["properties"]["c1"]["properties"]["verdict"]["enum"] == ["true", "false", "inconclusive"]
    system, user = body["messages"]
    assert "c1. Answers the question" in system["content"] and "submit_verdicts" in system["content"]
    assert "<outputs>\nRefunds take 5 business days.\n</outputs>" in user["content"]


async def test_a_false_criterion_fails_and_is_named_in_the_reason(
        openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    judge = CriteriaJudge(criteria=["Answers the question", "Cites a source"], **endpoint)
    openai_server.reply_with(tool_calls=[verdicts(c1="true", c2="false")])
    score = await judge.run(EXAMPLE)
    assert score.passed is False and score.value == 0.5
    assert "1/2 criteria met" in score.reason and "not met: Cites a source" in score.reason
    assert judge.decide(score, rule_threshold=0.5) == (True, 0.5)  # a rule threshold compares the fraction


@pytest.mark.parametrize(("policy", "passed"), [("unknown", None), ("fail", False), ("pass", True)])
async def test_inconclusive_is_neither_pass_nor_fail_unless_the_rule_says(
        openai_server: OpenAIServer, endpoint: dict[str, Any], policy: str, passed: bool | None) -> None:
    judge = CriteriaJudge(criteria=["Answers", "Matches the refund policy"], inconclusive=policy, **endpoint)
    openai_server.reply_with(tool_calls=[verdicts(c1="true", c2="inconclusive")])
    score = await judge.run(EXAMPLE)
    assert score.passed is passed and score.criteria[1].verdict is Verdict.INCONCLUSIVE
    assert "1 inconclusive" in score.reason
    assert judge.decide(score, None) == (passed, None)


async def test_a_false_verdict_outweighs_inconclusive_ones(openai_server: OpenAIServer,
                                                           endpoint: dict[str, Any]) -> None:
    judge = CriteriaJudge(criteria=["a", "b"], inconclusive="pass", **endpoint)
    openai_server.reply_with(tool_calls=[verdicts(c1="false", c2="inconclusive")])
    assert (await judge.run(EXAMPLE)).passed is False


async def test_a_json_answer_in_the_text_is_the_fallback(openai_server: OpenAIServer,
                                                         endpoint: dict[str, Any]) -> None:
    judge = CriteriaJudge(criteria=["a"], **endpoint)
    args = {"criteria": {"c1": {"reason": "seen", "verdict": "FALSE"}}, "summary": "no"}
    openai_server.reply_with(content=f"Here you go:\n```json\n{json.dumps(args)}\n```")
    score = await judge.run(EXAMPLE)
    assert score.passed is False and score.criteria[0].reason == "seen"


async def test_answer_via_json_sends_no_tools_and_asks_for_the_schema(
        openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    judge = CriteriaJudge(criteria=["a"], answer_via="json", **endpoint)
    openai_server.reply_with(content=json.dumps({"criteria": {"c1": "true"}, "summary": ""}))
    score = await judge.run(EXAMPLE)
    assert score.passed is True
    body = request_body(openai_server)
    assert "tools" not in body and '"enum":["true","false","inconclusive"]' in body["messages"][0]["content"]


@pytest.mark.parametrize("reply", [
    {"tool_calls": [{"name": "submit_verdicts", "arguments": '{"criteria": {"c1": {"verdict": "maybe"}}}'}]},
    {"tool_calls": [{"name": "submit_verdicts", "arguments": '{"criteria": {"c1": '}]},
    {"content": "I think the answer is fine overall."},
    {"tool_calls": [{"name": "something_else", "arguments": "{}"}]},
])
async def test_a_malformed_answer_is_an_error_that_carries_the_raw_text(
        openai_server: OpenAIServer, endpoint: dict[str, Any], reply: dict[str, Any]) -> None:
    judge = CriteriaJudge(criteria=["a"], **endpoint)
    openai_server.reply_with(**reply)
    with pytest.raises(JudgeOutputError) as caught:
        await judge.run(EXAMPLE)
    raw = reply.get("content") or reply["tool_calls"][0]["arguments"]
    assert raw in caught.value.raw and raw in str(caught.value) and "malformed judge answer" in str(caught.value)


async def test_through_the_runner_a_malformed_answer_is_an_error_row_and_is_not_cached(
        openai_server: OpenAIServer, client: JudgeClient) -> None:
    trace = Trace(trace_id="t-bad", version=1, status="complete", close_reason="quiet_period")
    params = {"criteria": ["a"], "model": MODEL, "api_base": openai_server.base_url, "api_key": "test"}
    job = ScoreJob(job_id="j1", rule="answers", scorer="scorers.judges.llm_judge:CriteriaJudge",
                   params=params, trace_id="t-bad", trace_version=1, example=EXAMPLE)
    cache = ScorerCache(resolver(client))
    openai_server.reply_with(content="Sure! Everything looks great.")
    outcome = await run_job(job, trace, cache, RetryPolicy(max_attempts=3))
    result = outcome.result
    assert result.status is ScoreStatus.ERROR and result.error_type == "JudgeOutputError"
    assert "Sure! Everything looks great." in (result.error_message or "")
    assert result.attempts == 1 and not outcome.dead_letter  # deterministic: not retried, not dead-lettered
    openai_server.reply_with(tool_calls=[verdicts(c1="true")])
    again = await run_job(job, trace, cache, RetryPolicy())
    assert again.result.status is ScoreStatus.SCORED and len(openai_server.requests) == 2


# -- scale and labels -------------------------------------------------------------------------------

async def test_a_scale_score_passes_at_the_threshold(openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    judge = ScaleJudge(question="how clear the answer is", threshold=7, guidelines=["Penalize jargon."], **endpoint)
    openai_server.reply_with(tool_calls=[{"name": "submit_score", "arguments": '{"reason": "clear", "score": 7}'}])
    score = await judge.run(EXAMPLE)
    assert score.value == 7 and score.reason == "clear" and judge.decide(score, None) == (True, 7.0)
    body = request_body(openai_server)
    assert body["tools"][0]["function"]["parameters"]["properties"]["score"]["enum"] == list(range(1, 11))
    assert "Guidelines:\n- Penalize jargon." in body["messages"][0]["content"]
    openai_server.reply_with(tool_calls=[{"name": "submit_score", "arguments": '{"reason": "meh", "score": 6}'}])
    assert judge.decide(await judge.run(Example(inputs="other")), None) == (False, 7.0)
    openai_server.reply_with(tool_calls=[{"name": "submit_score", "arguments": '{"reason": "", "score": 11}'}])
    with pytest.raises(JudgeOutputError, match="from 1 to 10"):
        await judge.run(Example(inputs="third"))


async def test_a_label_judge_passes_on_the_passing_labels(openai_server: OpenAIServer,
                                                          endpoint: dict[str, Any]) -> None:
    judge = LabelJudge(question="What is the tone?", labels=["friendly", "neutral", "rude"],
                       passing=["friendly", "neutral"], **endpoint)
    openai_server.reply_with(tool_calls=[{"name": "submit_label", "arguments": '{"reason": "r", "label": "Rude"}'}])
    score = await judge.run(EXAMPLE)
    assert (score.value, score.passed) == ("rude", False)
    assert request_body(openai_server)["tools"][0]["function"]["parameters"]["properties"]["label"]["enum"] == [
        "friendly", "neutral", "rude"]
    openai_server.reply_with(tool_calls=[{"name": "submit_label", "arguments": '{"reason": "r", "label": "calm"}'}])
    with pytest.raises(JudgeOutputError, match="must be one of"):
        await judge.run(Example(inputs="again"))
    no_pass = LabelJudge(question="Topic?", labels=["billing", "shipping"], **endpoint)
    openai_server.reply_with(tool_calls=[{"name": "submit_label", "arguments": '{"reason": "", "label": "billing"}'}])
    assert (await no_pass.run(EXAMPLE)).passed is None


# -- templates and targets --------------------------------------------------------------------------

async def test_a_template_fills_standard_and_example_fields(openai_server: OpenAIServer,
                                                            endpoint: dict[str, Any]) -> None:
    template = ('Q: {inputs}\nA: {outputs}\nGold: {expected}\nDocs: {context}\nTicket: {ticket}\n'
                'Trace: {trace}\nJSON stays: {"a": 1}')
    judge = CriteriaJudge(criteria=["a"], template=template, **endpoint)
    openai_server.reply_with(tool_calls=[verdicts(c1="true")])
    await judge.run(Example(**EXAMPLE.model_dump(), ticket={"id": 42}))
    user = request_body(openai_server)["messages"][1]["content"]
    assert user == ('Q: How long do refunds take?\nA: Refunds take 5 business days.\nGold: 5 business days\n'
                    'Docs: ["Refunds are paid within 5 business days."]\nTicket: {"id":42}\n'
                    'Trace: (no trace: this is an example sent with async_evaluate)\nJSON stays: {"a": 1}')


async def test_a_placeholder_the_example_lacks_is_a_clear_error(endpoint: dict[str, Any]) -> None:
    judge = CriteriaJudge(criteria=["a"], template="{inputs} {ticket}", **endpoint)
    with pytest.raises(JudgeConfigError, match=r"\['ticket'\]"):
        await judge.run(EXAMPLE)


def test_bad_params_fail_when_the_rules_load(endpoint: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        CriteriaJudge(criteria=["a"], colour="red", **endpoint)  # type: ignore[call-arg]
    with pytest.raises(JudgeConfigError, match="no placeholder"):
        CriteriaJudge(criteria=["a"], template="judge it", **endpoint)
    with pytest.raises(ValueError):
        CriteriaJudge(criteria=[], **endpoint)
    with pytest.raises(ValueError):
        CriteriaJudge(criteria=["a"], inconclusive="maybe", **endpoint)
    with pytest.raises(ValueError):
        ScaleJudge(question="q", threshold=11, **endpoint)
    with pytest.raises(ValueError, match="not among the labels"):
        LabelJudge(question="q", labels=["a", "b"], passing=["c"], **endpoint)
    with pytest.raises(JudgeConfigError, match="NO_SUCH_KEY"):
        CriteriaJudge(criteria=["a"], model=MODEL, api_key_env="NO_SUCH_KEY")


async def test_a_trace_is_judged_by_its_root_io_with_retrieved_context(
        openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    trace = agent_trace(12)
    judge = CriteriaJudge(criteria=["a"], **endpoint)
    openai_server.reply_with(tool_calls=[verdicts(c1="true")])
    await judge.run(trace)
    user = request_body(openai_server)["messages"][1]["content"]
    assert "Germany 40 days ago" in user and "a 40-day-old order is not eligible" in user
    assert "<context>" in user and "Orders may be refunded within 30 days" in user
    with_trace = CriteriaJudge(criteria=["a"], template="{trace}", **endpoint)
    openai_server.reply_with(tool_calls=[verdicts(c1="true")])
    await with_trace.run(trace)
    assert "ERROR TimeoutError" in request_body(openai_server)["messages"][1]["content"]


async def test_the_score_carries_the_judge_metadata(openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    judge = CriteriaJudge(criteria=["a"], **endpoint)
    openai_server.reply_with(tool_calls=[verdicts(c1="true")])
    meta = (await judge.run(EXAMPLE)).metadata["judge"]
    assert set(meta) == JUDGE_KEYS
    assert meta["model"] == MODEL and meta["steps"] == 1 and meta["tool_calls"] == []
    (call,) = meta["calls"]
    assert meta["input_tokens"] == call["input_tokens"] > 0 and meta["output_tokens"] == call["output_tokens"] > 0
    assert meta["cost_usd"] == call["cost_usd"] > 0 and meta["latency_ms"] >= call["latency_ms"] > 0
    assert call["tool_calls"][0]["name"] == "submit_verdicts" and call["attempts"] == 1 and not call["cached"]
    assert [m["role"] for m in call["messages"]] == ["system", "user"]
    json.dumps(meta)  # it must travel in a ScoreResult


async def test_a_cached_judgment_costs_nothing(openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    judge = CriteriaJudge(criteria=["a"], **endpoint)
    openai_server.reply_with(tool_calls=[verdicts(c1="false")])
    first = await judge.run(EXAMPLE)
    second = await judge.run(EXAMPLE)
    assert len(openai_server.requests) == 1 and second.passed is False
    meta = second.metadata["judge"]
    assert meta["calls"][0]["cached"] and (meta["input_tokens"], meta["output_tokens"], meta["cost_usd"]) == (0, 0, 0)
    assert first.metadata["judge"]["input_tokens"] > 0
