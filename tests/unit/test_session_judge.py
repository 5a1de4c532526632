"""Session judges through litellm's real client against the local server: looks while a conversation goes on
(continue / finish), the closing verdict, malformed answers, and the agent judge opening a turn's trace."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pipeline.contracts import Example, Trace, Verdict
from pipeline.contracts.conversation import Conversation
from pipeline.contracts.sessions import Session, Turn
from scorers.judges.client import JudgeClient
from scorers.judges.errors import JudgeConfigError, JudgeOutputError
from scorers.judges.session_judge import SessionAgentJudge, SessionCriteriaJudge
from scorers.judges.session_tools import SessionToolbox
from scorers.testing import judge_client, resolver
from tests.support.judge_traces import FAILURE_MESSAGE, agent_trace
from tests.support.openai_server import OpenAIServer, Reply

MODEL = "openai/gpt-4o-mini"
NO_PROMISE = "The agent must not promise a refund before the order has been verified"
POLITE = "The agent stays polite"
CRITERIA = [NO_PROMISE, POLITE]
OFFENDING = "I promise you a full refund today"  # what the agent says in turn 3
CLEAN_REPLY = "Let me check order {n} for you; could you confirm the email on the account?"
TRACE_IDS = [f"{n:02d}{'a' * 30}" for n in range(1, 11)]
DECISION_CHOICE = {"type": "function", "function": {"name": "submit_decision"}}


@pytest.fixture
def client() -> JudgeClient:
    return judge_client()  # this test's own: a real litellm client that gives up quickly


@pytest.fixture
def endpoint(openai_server: OpenAIServer, client: JudgeClient) -> dict[str, Any]:
    """A judge's params against the local server, and its client (as a worker's resolver hands it one)."""
    return {"model": MODEL, "api_base": openai_server.base_url, "api_key": "test", "client": client}


def turns(count: int, *, broken_at: int | None = 3, **by_turn: dict[str, Any]) -> list[Turn]:
    out = []
    for n in range(1, count + 1):
        reply = OFFENDING + "." if n == broken_at else CLEAN_REPLY.format(n=n)
        out.append(Turn(session_id="conv-7", trace_id=TRACE_IDS[n - 1], started_ns=n * 1_000, ended_ns=n * 1_000 + 500,
                        input=f"Question {n} about my refund", output=reply, **by_turn.get(f"t{n}", {})))
    return out


def conversation(count: int, *, final: bool = False, broken_at: int | None = 3, loader: Any = None) -> Conversation:
    closed = {"status": "complete", "close_reason": "idle_timeout"} if final else {"status": "open"}
    session = Session(session_id="conv-7", version=1, turns=turns(count, broken_at=broken_at), **closed)
    return Conversation(session, final=final, load_trace=loader)


def criteria_args(c1: str, c2: str = "true", decision: str | None = None, reason: str = "seen") -> str:
    args: dict[str, Any] = {"criteria": {"c1": {"reason": reason, "verdict": c1},
                                         "c2": {"reason": "courteous", "verdict": c2}}, "summary": reason}
    if decision is not None:
        args["decision"] = decision
    return json.dumps(args)


def user_text(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def honest_judge(body: dict[str, Any]) -> Reply:
    """A judge that reads the transcript it is sent: the promise breaks criterion 1 for good; until it is made,
    criterion 1 cannot be settled while the conversation goes on (and is met once it has ended)."""
    transcript = user_text(body)
    broken = OFFENDING in transcript
    where = re.search(r"Turn (\d+) \([^)]*\):\nUser: [^\n]*\nAgent: " + re.escape(OFFENDING), transcript)
    reason = f"turn {where.group(1)} promised a refund" if where else "no refund promised"
    if body["tool_choice"] == DECISION_CHOICE:
        args = criteria_args("false", decision="finish", reason=reason) if broken else \
            criteria_args("inconclusive", decision="continue", reason=reason)
        return Reply(tool_calls=[{"name": "submit_decision", "arguments": args}])
    return Reply(tool_calls=[{"name": "submit_verdicts", "arguments": criteria_args("false" if broken else "true",
                                                                                    reason=reason)}])


# -- session_criteria: looks while the conversation goes on ---------------------------------------------

async def test_looks_continue_until_the_must_not_is_broken_then_finish_failing(
        openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    openai_server.respond_with(honest_judge)
    judge = SessionCriteriaJudge(criteria=CRITERIA, **endpoint)
    looks = [await judge.run(conversation(n)) for n in (1, 2, 3)]

    for n, score in enumerate(looks[:2], start=1):
        assert (score.passed, score.value, score.criteria) == (None, None, [])
        assert judge.decide(score, None) == (None, None) and judge.decide(score, 0.5) == (None, 0.5)
        assert score.metadata["session"]["decision"] == "continue"
        assert (score.metadata["session"]["turn"], score.metadata["session"]["final"]) == (n, False)
        interim = score.metadata["session"]["criteria"]  # kept out of Score.criteria: no verdict_false alert
        assert [c["verdict"] for c in interim] == ["inconclusive", "true"]
        assert score.reason.startswith("no verdict yet:")

    third = looks[2]
    assert third.passed is False and third.value == 0.5 and judge.decide(third, None) == (False, None)
    assert third.metadata["session"] == {"decision": "finish", "turn": 3, "final": False}
    assert f"not met: {NO_PROMISE}" in third.reason and "turn 3 promised a refund" in third.reason
    failing = [c for c in third.criteria if c.verdict is Verdict.FALSE]
    assert [c.criterion for c in failing] == [NO_PROMISE] and failing[0].reason == "turn 3 promised a refund"
    assert third.metadata["judge"]["steps"] == 1

    bodies = [r.body for r in openai_server.requests]
    assert len(bodies) == 3
    assert "Turn 2 (" in user_text(bodies[1]) and "Turn 3 (" not in user_text(bodies[1])  # it saw 2 turns only
    assert OFFENDING in user_text(bodies[2])
    body = bodies[2]
    (tool,) = body["tools"]
    fn = tool["function"]
    assert fn["name"] == "submit_decision" and fn["strict"] is True and body["tool_choice"] == DECISION_CHOICE
    params = fn["parameters"]
    assert params["required"] == ["criteria", "summary", "decision"] and params["additionalProperties"] is False
    assert params["properties"]["decision"]["enum"] == ["continue", "finish"]
    assert params["properties"]["criteria"]["properties"]["c1"]["description"] == NO_PROMISE
    system = body["messages"][0]["content"]
    assert "still going" in system and "`continue` otherwise" in system and f"c1. {NO_PROMISE}" in system
    assert user_text(body).startswith("<transcript>\nTurn 1 (trace " + TRACE_IDS[0])


async def test_the_closing_look_gives_the_verdict_over_the_whole_conversation(
        openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    openai_server.respond_with(honest_judge)
    judge = SessionCriteriaJudge(criteria=CRITERIA, **endpoint)
    final = await judge.run(conversation(10, final=True))
    assert final.passed is False and final.value == 0.5 and "turn 3 promised a refund" in final.reason
    assert final.metadata["session"] == {"decision": "finish", "turn": 10, "final": True}
    clean = await judge.run(conversation(10, final=True, broken_at=None))
    assert clean.passed is True and clean.value == 1.0 and clean.metadata["session"]["decision"] == "finish"
    body = openai_server.requests[-1].body
    assert [t["function"]["name"] for t in body["tools"]] == ["submit_verdicts"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "submit_verdicts"}}
    assert "has ended" in body["messages"][0]["content"] and "Turn 10 (" in user_text(body)


@pytest.mark.parametrize(("policy", "passed"), [("unknown", None), ("fail", False), ("pass", True)])
async def test_the_inconclusive_policy_applies_to_the_closing_verdict(
        openai_server: OpenAIServer, endpoint: dict[str, Any], policy: str, passed: bool | None) -> None:
    judge = SessionCriteriaJudge(criteria=CRITERIA, inconclusive=policy, **endpoint)
    openai_server.reply_with(tool_calls=[{"name": "submit_verdicts", "arguments": criteria_args("inconclusive")}])
    score = await judge.run(conversation(4, final=True, broken_at=None))
    assert score.passed is passed and score.metadata["session"]["decision"] == "finish"


@pytest.mark.parametrize("policy", ["unknown", "fail", "pass"])
async def test_a_finish_that_settles_nothing_counts_as_continue(
        openai_server: OpenAIServer, endpoint: dict[str, Any], policy: str) -> None:
    judge = SessionCriteriaJudge(criteria=CRITERIA, inconclusive=policy, **endpoint)
    openai_server.reply_with(tool_calls=[{"name": "submit_decision",
                                          "arguments": criteria_args("inconclusive", decision="finish")}])
    score = await judge.run(conversation(2, broken_at=None))
    assert (score.passed, score.value) == (None, None)
    assert score.metadata["session"]["decision"] == "continue" and score.metadata["session"]["asked"] == "finish"


async def test_an_early_success_needs_every_criterion_true(openai_server: OpenAIServer,
                                                         endpoint: dict[str, Any]) -> None:
    judge = SessionCriteriaJudge(criteria=CRITERIA, **endpoint)
    openai_server.reply_with(tool_calls=[{"name": "submit_decision", "arguments": criteria_args("true",
                                                                                              decision="finish")}])
    score = await judge.run(conversation(2, broken_at=None))
    assert (score.passed, score.value) == (True, 1.0) and score.metadata["session"]["decision"] == "finish"
    openai_server.reply_with(tool_calls=[{"name": "submit_decision", "arguments": criteria_args("true",
                                                                                              decision="continue")}])
    score = await judge.run(conversation(3, broken_at=None))  # the judge chose to keep watching: no verdict
    assert score.passed is None and score.metadata["session"]["decision"] == "continue"


@pytest.mark.parametrize(("final", "reply", "problem"), [
    (False, {"tool_calls": [{"name": "submit_decision", "arguments": criteria_args("false", decision="maybe")}]},
     "`decision` must be"),
    (False, {"tool_calls": [{"name": "submit_decision", "arguments": criteria_args("false")}]}, "`decision` must be"),
    (False, {"tool_calls": [{"name": "submit_decision", "arguments": '{"criteria": {"c1": '}]}, "invalid JSON"),
    (False, {"content": "Looks fine so far, keep going."}, "no submit_decision call"),
    (True, {"tool_calls": [{"name": "submit_verdicts",
                            "arguments": '{"criteria": {"c1": {"verdict": "nope"}}, "summary": ""}'}]}, "criterion c1"),
    (True, {"tool_calls": [{"name": "submit_decision", "arguments": "{}"}]},
     "called submit_decision instead of submit_verdicts"),
])
async def test_a_malformed_answer_is_an_error_that_carries_the_raw_text(
        openai_server: OpenAIServer, endpoint: dict[str, Any], client: JudgeClient, final: bool,
        reply: dict[str, Any], problem: str) -> None:
    judge = SessionCriteriaJudge(criteria=CRITERIA, **endpoint)
    openai_server.reply_with(**reply)
    with pytest.raises(JudgeOutputError, match=problem) as caught:
        await judge.run(conversation(3, final=final))
    raw = reply.get("content") or reply["tool_calls"][0]["arguments"]
    assert raw in caught.value.raw and "malformed judge answer" in str(caught.value)
    openai_server.respond_with(honest_judge)  # not cached: the next job for this look asks the model again
    assert (await judge.run(conversation(3, final=final))).passed is False
    assert len(openai_server.requests) == 2


async def test_a_template_takes_session_fields(openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    template = "Session {session_id}, {turn_count} turns.\nLast: {latest_input} -> {latest_output}\n{transcript}"
    judge = SessionCriteriaJudge(criteria=CRITERIA, template=template, **endpoint)
    openai_server.respond_with(honest_judge)
    await judge.run(conversation(2))
    text = user_text(openai_server.requests[-1].body)
    assert text.startswith("Session conv-7, 2 turns.\nLast: Question 2 about my refund -> Let me check order 2")
    assert "Turn 1 (trace" in text
    with pytest.raises(JudgeConfigError, match=r"\['trace'\] are not session fields"):
        SessionCriteriaJudge(criteria=CRITERIA, template="{trace}", **endpoint)


async def test_wrong_targets_and_empty_conversations(openai_server: OpenAIServer, client: JudgeClient) -> None:
    judge = resolver(client).build("session_criteria", {"criteria": CRITERIA, "model": MODEL,
                                                        "api_base": openai_server.base_url, "api_key": "test"})
    assert judge.client is client
    assert isinstance(judge, SessionCriteriaJudge)
    for target in (Example(inputs="q", outputs="a"), agent_trace(10)):
        with pytest.raises(TypeError, match="session_criteria scores conversations: use it in a rule with "
                                            "`subject: session`"):
            await judge.run(target)
    empty = Conversation(Session(session_id="s", version=1, status="complete", close_reason="idle_timeout"), True)
    score = await judge.run(empty)
    assert score.passed is None and "no turns" in score.reason and openai_server.requests == []


# -- session_agent_judge --------------------------------------------------------------------------------

AGENT_INSTRUCTIONS = "Did every tool call the agent made in this conversation succeed?\n{transcript}"


class Loader:
    """A fake trace store: turn 3's trace is a large agent trace with one failed tool call."""

    def __init__(self, traces: dict[str, Trace]) -> None:
        self.traces = traces
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, trace_id: str, version: int) -> Trace | None:
        self.asked.append((trace_id, version))
        return self.traces.get(trace_id)


def tool_results(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m.get("role") == "tool"]


def call(name: str, **arguments: Any) -> Reply:
    return Reply(tool_calls=[{"name": name, "arguments": json.dumps(arguments)}])


def investigating_judge(verdict_tool: str) -> Any:
    """Lists the turns, opens the trace of the first turn with errors, reads the span its skeleton marks ERROR,
    and fails the criterion only when that span's text shows the failure."""

    def script(body: dict[str, Any]) -> Reply:
        results = tool_results(body)
        if not results:
            return call("list_turns")
        if len(results) == 1:
            listed = json.loads(results[0])["turns"]
            return call("open_trace", turn=next(t["turn"] for t in listed if t["errors"]))
        if len(results) == 2:
            opened = json.loads(results[1])
            failed = re.search(r"\[(\w+)\] fetch_page · tool · [^\n]* ERROR", opened["skeleton"])
            assert failed is not None
            return call("get_span", turn=opened["turn"], span_id=failed.group(1))
        span = json.loads(results[2])
        failed = FAILURE_MESSAGE in json.dumps(span)
        args = {"criteria": {"c1": {"reason": f"turn {span['turn']}: span {span['span']['span_id']} timed out",
                                    "verdict": "false" if failed else "true"}}, "summary": "checked"}
        if verdict_tool == "submit_decision":
            args["decision"] = "finish" if failed else "continue"
        return Reply(tool_calls=[{"name": verdict_tool, "arguments": json.dumps(args)}])

    return script


def traced_conversation(final: bool, loader: Loader | None) -> Conversation:
    session = Session(session_id="conv-7", version=1, turns=turns(5, broken_at=None, t3={"errors": 1}),
                      **({"status": "complete", "close_reason": "end_marker"} if final else {"status": "open"}))
    return Conversation(session, final=final, load_trace=loader, store_wait_s=0.3)


@pytest.mark.parametrize(("final", "verdict_tool"), [(True, "submit_verdicts"), (False, "submit_decision")])
async def test_the_agent_judge_opens_a_turns_trace_through_the_loader(
        openai_server: OpenAIServer, endpoint: dict[str, Any], final: bool, verdict_tool: str) -> None:
    loader = Loader({TRACE_IDS[2]: agent_trace(300, trace_id=TRACE_IDS[2])})
    openai_server.respond_with(investigating_judge(verdict_tool))
    judge = SessionAgentJudge(instructions=AGENT_INSTRUCTIONS, criteria=["Every tool call succeeded"], **endpoint)
    score = await judge.run(traced_conversation(final, loader))

    assert score.passed is False and "turn 3: span" in score.criteria[0].reason
    assert score.metadata["session"] == {"decision": "finish", "turn": 5, "final": final}
    assert loader.asked == [(TRACE_IDS[2], 1)]
    meta = score.metadata["judge"]
    assert meta["steps"] == 4 and [t["name"] for t in meta["tool_calls"]] == ["list_turns", "open_trace", "get_span"]
    first = openai_server.requests[0].body
    assert [t["function"]["name"] for t in first["tools"]] == [
        "list_turns", "get_turn", "open_trace", "get_span", "search", verdict_tool]
    assert first["tool_choice"] == "required"
    assert user_text(first).startswith("Did every tool call") and "Turn 5 (trace" in user_text(first)
    listed, opened, span = tool_results(openai_server.requests[-1].body)
    assert '"errors":1' in listed and "Spans in error" in opened and "Germany" not in opened  # a skeleton
    assert FAILURE_MESSAGE in span and '"type":"TimeoutError"' in span


async def test_a_trace_that_cannot_be_loaded_is_a_tool_error_the_judge_can_read(
        openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    openai_server.reply_with(**vars(call("open_trace", turn=3)))
    openai_server.reply_with(**vars(call("get_span", turn=3, span_id="abc")))
    openai_server.reply_with(tool_calls=[{"name": "submit_verdicts", "arguments": json.dumps(
        {"criteria": {"c1": {"reason": "trace missing", "verdict": "inconclusive"}}, "summary": "no trace"})}])
    judge = SessionAgentJudge(instructions=AGENT_INSTRUCTIONS, criteria=["Every tool call succeeded"], **endpoint)
    score = await judge.run(traced_conversation(True, Loader({})))
    assert score.passed is None
    opened, again = tool_results(openai_server.requests[-1].body)
    assert f"trace {TRACE_IDS[2]} v1 of turn 3 is not stored after 0.3 s" in json.loads(opened)["error"]
    assert "cannot be opened" in json.loads(again)["error"]
    assert [t["error"] is not None for t in score.metadata["judge"]["tool_calls"]] == [True, True]


async def test_the_session_toolbox_reads_turns_and_searches() -> None:
    trace = agent_trace(40, trace_id=TRACE_IDS[1])
    box = SessionToolbox(conversation(4, loader=Loader({TRACE_IDS[1]: trace})))
    listed = json.loads(await box.run("list_turns", '{"offset": 1, "limit": 2}', 1))
    assert [t["turn"] for t in listed["turns"]] == [2, 3] and listed["next_offset"] == 3 and listed["total"] == 4
    turn = json.loads(await box.run("get_turn", '{"turn": 3}', 1))
    assert turn["output"] == OFFENDING + "." and turn["trace_id"] == TRACE_IDS[2]
    found = json.loads(await box.run("search", json.dumps({"pattern": "promise[sd]? you"}), 1))
    assert [(m["turn"], m["side"]) for m in found["matches"]] == [(3, "agent")]
    inside = json.loads(await box.run("search", json.dumps({"pattern": "timed out", "turn": 2}), 1))
    assert inside["turn"] == 2 and inside["matches"] and inside["matches"][0]["field"] == "error"
    no_storage = SessionToolbox(conversation(2))
    assert "no trace storage" in json.loads(await no_storage.run("open_trace", '{"turn": 1}', 1))["error"]
    for name, arguments, error in [
        ("get_turn", '{"turn": 9}', "turn 9 does not exist"),
        ("get_turn", '{"turn": "two"}', "turn must be an integer"),
        ("get_turn", "{}", "turn (an integer) is required"),
        ("list_turns", '{"page": 2}', "unknown argument"),
        ("search", '{"pattern": "("}', "invalid regular expression"),
        ("get_span", '{"turn": 2, "span_id": "ffffffffffff"}', "no span with id"),
        ("peek", "{}", "unknown tool 'peek'"),
        ("open_trace", "[1]", "arguments must be a JSON object"),
    ]:
        assert error in json.loads(await box.run(name, arguments, 2))["error"], name


async def test_agent_judge_params_are_checked(endpoint: dict[str, Any]) -> None:
    with pytest.raises(JudgeConfigError, match=r"must contain \{transcript\}"):
        SessionAgentJudge(instructions="Judge {session_id}", criteria=["a"], **endpoint)
    with pytest.raises(JudgeConfigError, match="not session fields"):
        SessionAgentJudge(instructions="{transcript} {trace}", criteria=["a"], **endpoint)
    with pytest.raises(JudgeConfigError, match="inline_tokens does not apply"):
        SessionAgentJudge(instructions="{transcript}", criteria=["a"], inline_tokens=10, **endpoint)
    with pytest.raises(JudgeConfigError, match="takes `instructions`, not `template`"):
        SessionAgentJudge(instructions="{transcript}", template="{transcript}", **endpoint)
    with pytest.raises(TypeError, match="session_agent_judge scores conversations"):
        await SessionAgentJudge(instructions="{transcript}", **endpoint).run(agent_trace(10))


async def test_a_look_without_tool_calling_asks_for_the_decision_in_json(
        openai_server: OpenAIServer, endpoint: dict[str, Any]) -> None:
    judge = SessionCriteriaJudge(criteria=CRITERIA, answer_via="json", **endpoint)
    openai_server.reply_with(content=criteria_args("false", decision="finish", reason="turn 3 promised"))
    score = await judge.run(conversation(3))
    assert score.passed is False and score.metadata["session"]["decision"] == "finish"
    body = openai_server.requests[-1].body
    assert "tools" not in body and '"decision":{"type":"string","enum":["continue","finish"]' in \
        body["messages"][0]["content"]
