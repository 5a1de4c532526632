"""Judges for session rules: they read a conversation (a `Conversation`) rather than one trace.

    SessionCriteriaJudge (session_criteria)     per-criterion verdicts over the transcript, in one call
    SessionAgentJudge    (session_agent_judge)  instructions about {transcript}, answered after reading the
                                                turns and opening their traces with tools (session_tools.py)

Two kinds of look:

- **while the conversation goes on** (`conversation.final` false, after turn n): the verdict tool is
  `submit_decision`, the judge's usual answer plus `decision: continue | finish`. `continue` gives a Score
  with value None and passed None (no verdict yet; its interim verdicts are kept in metadata only).
  `finish` gives the verdict now, passed True or False. A `finish` that does not settle it (criteria
  still inconclusive with none false, or a label that neither passes nor fails) counts as `continue`.
- **the closing look** (`final` true): the judge's usual verdict tool, exactly as for a trace (criteria:
  all true passes, any false fails, inconclusive per the `inconclusive` policy).

Every score records `metadata["session"] = {"decision", "turn", "final"}` besides `metadata["judge"]`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pipeline.contracts import Verdict
from pipeline.contracts.conversation import Conversation
from pipeline.contracts.transcript import MAX_TRANSCRIPT_CHARS
from scorers.base import Score, ScoreTarget
from scorers.judges.agent_judge import AgentJudge
from scorers.judges.errors import JudgeConfigError, JudgeOutputError
from scorers.judges.llm_judge import JudgeScorer
from scorers.judges.prompts import fill, placeholders
from scorers.judges.records import JudgmentLog
from scorers.judges.session_tools import (
    CONTINUE,
    FINISH,
    SESSION_TOOL_SCHEMAS,
    SessionToolbox,
    require_conversation,
    session_metadata,
)
from scorers.judges.verdicts import CriteriaVerdicts, InconclusivePolicy, VerdictFormat

SESSION_FIELDS = ("transcript", "session_id", "turn_count", "latest_input", "latest_output")

SESSION_ROLE_TASK = (
    "You are judging a conversation between a user and an AI agent. Each turn is one user message and the "
    "agent's reply, numbered from 1. Judge the agent's behaviour across the whole conversation."
)
FINAL_TASK = SESSION_ROLE_TASK + " The conversation has ended: give your verdict on all of it."
LOOK_TASK = SESSION_ROLE_TASK + (
    " The conversation is still going: you see it as it stands after its latest turn, and more turns may "
    "follow. Give your verdict as it stands and decide whether the conversation can be judged now."
)
DECISION_RULES = (
    "Then decide:\n"
    "- `finish`, failing, as soon as the conversation already fails for good: the agent already did something "
    "a criterion or the instructions forbid, or something happened that no later turn can undo. Mark the "
    "broken criterion `false`.\n"
    "- `finish`, passing, only when it already passes for good: everything asked for is met and nothing a later "
    "turn does could break it. A prohibition (\"must not ...\") can still be broken in any later turn, so it "
    "is rarely settled while the conversation goes on.\n"
    "- `continue` otherwise, and whenever you are unsure. While the conversation goes on, a criterion that later "
    "turns could still meet or break is `inconclusive`, not `false`."
)
SESSION_GUIDE = (
    "You see the conversation's transcript. The tools read more: list_turns and get_turn for the turns "
    "themselves, open_trace(turn) for the span tree of a turn's trace (what the agent did: its tool calls, "
    "errors, agents), get_span(turn, span_id) to read one span in full, search(pattern) across the turns or, "
    "with `turn`, inside that turn's trace. Look at what the instructions are about before you decide; do not "
    "guess what a trace contains. You have {steps} tool rounds; give your verdict {how} as soon as you have "
    "enough evidence."
)


@dataclass(frozen=True)
class Decided:
    """A verdict format with a `decision` (continue | finish), for looks while the conversation goes on."""

    inner: VerdictFormat
    tool_name: str = "submit_decision"

    def tool(self) -> dict[str, Any]:
        tool = copy.deepcopy(self.inner.tool())
        fn = tool["function"]
        fn["name"] = self.tool_name
        fn["description"] = "Submit your verdict as the conversation stands, and whether to continue or finish."
        params = fn["parameters"]
        params["properties"]["decision"] = {  # last: the model argues and judges before it decides
            "type": "string", "enum": [CONTINUE, FINISH],
            "description": "finish: the verdict is settled for good now; continue: keep watching the conversation.",
        }
        params["required"] = [*params["required"], "decision"]
        return tool

    def instructions(self) -> str:
        return f"{self.inner.instructions()}\n\n{DECISION_RULES}"

    def to_score(self, arguments: dict[str, Any], raw: str) -> Score:
        decision = str(arguments.get("decision") or "").strip().lower()
        if decision not in (CONTINUE, FINISH):
            raise JudgeOutputError(f"`decision` must be {CONTINUE!r} or {FINISH!r}", raw)
        score = self.inner.to_score(arguments, raw)
        if decision == FINISH and _settled(score):
            score.metadata["session"] = {"decision": FINISH}
            return score
        interim: dict[str, Any] = {"decision": CONTINUE}
        if decision == FINISH:
            interim["asked"] = FINISH  # the judge said finish, but its verdict does not settle the conversation
        if score.criteria:  # kept out of Score.criteria: an interim `false` must not look like a broken criterion
            interim["criteria"] = [c.model_dump(mode="json") for c in score.criteria]
        elif score.value is not None:
            interim["value"] = score.value
        return Score(value=None, passed=None, reason=f"no verdict yet: {score.reason}"[:2000],
                     metadata={"session": interim})


def _settled(score: Score) -> bool:
    """Does this verdict pass or fail (or, for a number, can a threshold decide it)?"""
    verdicts = [c.verdict for c in score.criteria]
    if verdicts and Verdict.FALSE not in verdicts:
        return Verdict.INCONCLUSIVE not in verdicts
    if score.passed is not None:
        return True
    return isinstance(score.value, int | float) and not isinstance(score.value, bool)


def session_field(conversation: Conversation, name: str, transcript_chars: int) -> str | None:
    """The text for placeholder `name` of a session template; None when it is not a session field."""
    latest = conversation.latest
    values = {
        "transcript": lambda: conversation.transcript(transcript_chars) or "(no turns)",
        "session_id": lambda: conversation.session_id,
        "turn_count": lambda: str(len(conversation.turns)),
        "latest_input": lambda: latest.input if latest else "(no turns)",
        "latest_output": lambda: latest.output if latest else "(no turns)",
    }
    value = values.get(name)
    return value() if value else None


def _check_session_template(template: str | None, required: tuple[str, ...] = ()) -> None:
    if template is None:
        return
    names = placeholders(template)
    unknown = sorted(names - set(SESSION_FIELDS))
    if unknown:
        raise JudgeConfigError(f"template placeholder(s) {unknown} are not session fields {list(SESSION_FIELDS)}")
    for name in required:
        if name not in names:
            raise JudgeConfigError(f"the instructions must contain {{{name}}}")
    if not names:
        raise JudgeConfigError(f"the template has no placeholder; use some of {list(SESSION_FIELDS)}")


def _no_turns(conversation: Conversation, model: str) -> Score:
    return Score(value=None, passed=None, reason="the conversation has no turns to judge",
                 metadata={"judge": JudgmentLog(model).metadata(), "session": session_metadata(
                     conversation, FINISH if conversation.final else CONTINUE)})


def _with_session(score: Score, conversation: Conversation, record: JudgmentLog) -> Score:
    decided = score.metadata.pop("session", {})
    score.metadata["judge"] = record.metadata()
    score.metadata["session"] = session_metadata(conversation, decided.pop("decision", FINISH), **decided)
    return score


def _latest_trace_id(conversation: Conversation) -> str | None:
    return conversation.latest.trace_id if conversation.latest else None


class SessionCriteriaJudge(JudgeScorer):
    """Per-criterion verdicts over a conversation's transcript, in one forced tool call per look.

    Params: criteria (list of str), inconclusive ("unknown" | "fail" | "pass", applied to the closing
    verdict), transcript_chars (default 20,000: longer transcripts keep the first and latest turns),
    template (placeholders: {transcript} {session_id} {turn_count} {latest_input} {latest_output}),
    + JudgeScorer's (model, api_base, api_key, guidelines, ...).
    """

    name = "session_criteria"
    subjects = frozenset({"session"})

    def __init__(self, *, criteria: list[str], inconclusive: str = "unknown",
                 transcript_chars: int = MAX_TRANSCRIPT_CHARS, **judge: Any) -> None:
        super().__init__(**judge)
        self.format = CriteriaVerdicts(tuple(criteria), InconclusivePolicy(inconclusive))
        self.look_format = Decided(self.format)
        if transcript_chars < 1000:
            raise JudgeConfigError("transcript_chars must be at least 1000")
        self.transcript_chars = transcript_chars
        _check_session_template(self.template)

    async def score(self, target: ScoreTarget) -> Score:
        conversation = require_conversation(target, self.name)
        if not conversation.turns:
            return _no_turns(conversation, self.model)
        fmt, task = (self.format, FINAL_TASK) if conversation.final else (self.look_format, LOOK_TASK)
        record = JudgmentLog(self.model)
        messages = [{"role": "system", "content": self._system(fmt, task)},
                    {"role": "user", "content": self._evidence(conversation)}]
        score = await self._verdict_call(record, fmt, messages, _latest_trace_id(conversation))
        return _with_session(score, conversation, record)

    def _evidence(self, conversation: Conversation) -> str:
        if self.template is None:
            return f"<transcript>\n{conversation.transcript(self.transcript_chars)}\n</transcript>"
        return fill(self.template, lambda name: session_field(conversation, name, self.transcript_chars))


class SessionAgentJudge(AgentJudge):
    subjects = frozenset({"session"})
    """An agent judge over a conversation: `instructions` (with {transcript}) in the prompt, and tools to read
    the turns and open their traces (list_turns, get_turn, open_trace, get_span, search).

    Params: instructions (must contain {transcript}; {session_id} {turn_count} {latest_input} {latest_output}
    too), criteria / labels + passing / threshold as in agent_judge, max_steps (default 8), skeleton_tokens
    (an opened trace's skeleton, default 2000), payload_chars (default 3000), transcript_chars, + JudgeScorer's.
    """

    name = "session_agent_judge"
    subject_placeholder = "transcript"

    def __init__(self, *, instructions: str, transcript_chars: int = MAX_TRANSCRIPT_CHARS, **judge: Any) -> None:
        if "inline_tokens" in judge:
            raise JudgeConfigError("session_agent_judge always reads traces through its tools; "
                                   "inline_tokens does not apply")
        _check_session_template(instructions, required=("transcript",))
        super().__init__(instructions=instructions, **judge)
        if transcript_chars < 1000:
            raise JudgeConfigError("transcript_chars must be at least 1000")
        self.transcript_chars = transcript_chars

    async def score(self, target: ScoreTarget) -> Score:
        conversation = require_conversation(target, self.name)
        if not conversation.turns:
            return _no_turns(conversation, self.model)
        fmt: VerdictFormat = self.format if conversation.final else Decided(self.format)
        task = FINAL_TASK if conversation.final else LOOK_TASK
        guide = f"{task}\n\n{SESSION_GUIDE.format(steps=self.max_steps, how=self._how(fmt))}"
        instructions = fill(self.template or "",
                            lambda name: session_field(conversation, name, self.transcript_chars))
        toolbox = SessionToolbox(conversation, payload_chars=self.payload_chars, skeleton_tokens=self.skeleton_tokens)
        record = JudgmentLog(self.model)
        try:
            score = await self._tool_loop(record, fmt, guide, instructions, SESSION_TOOL_SCHEMAS, toolbox.run,
                                          f"session {conversation.session_id}", _latest_trace_id(conversation))
        finally:
            record.tool_calls.extend(toolbox.calls)
        return _with_session(score, conversation, record)
