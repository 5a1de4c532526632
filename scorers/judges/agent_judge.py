"""Agent-as-a-judge: instructions about `{trace}`, answered by a judge that can investigate the trace.

A trace whose rendering is under `inline_tokens` goes into the prompt whole and the judge answers in one
call. A larger one is shown as a skeleton (structure, no payloads) and the judge gets tools to read it
(get_trace_info, list_spans, get_spans, search_trace). It may explore for `max_steps` calls; then one
more call forces its verdict with what it has learnt.

For a span rule's SpanSubject the judge is pointed at the span: `{inputs}` / `{outputs}` are the span's,
`{span}` its header, and when the instructions do not place `{span}` themselves the span (header, inputs,
outputs) leads the message. `{trace}` and the tools still show the whole trace, to investigate around it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from pipeline.contracts import Trace
from scorers.base import Score, ScoreTarget
from scorers.judges.errors import JudgeConfigError, JudgeOutputError
from scorers.judges.llm_judge import JudgeScorer
from scorers.judges.prompts import FIELD_CHARS, field_text, fill, placeholders, span_text, view_of
from scorers.judges.records import JudgmentLog
from scorers.judges.span_tree import render_value
from scorers.judges.tokens import estimate_tokens
from scorers.judges.trace_toolbox import TOOL_SCHEMAS, TraceToolbox
from scorers.judges.trace_view import SKELETON_TOKENS, render_skeleton, render_trace
from scorers.judges.verdicts import (
    AnswerVia,
    CriteriaVerdicts,
    InconclusivePolicy,
    LabelChoice,
    ScaleScore,
    VerdictFormat,
    verdict_arguments,
)

log = logging.getLogger(__name__)

INLINE_TOKENS = 8000
MAX_STEPS = 8
TOOL_CALLS_PER_STEP = 5

EXPLORE_GUIDE = (
    "The trace is too large to show whole: you see its structure only (span ids in brackets, no inputs or "
    "outputs). Investigate with the tools: get_trace_info for an overview, list_spans to page or filter "
    "spans, get_spans to read chosen spans in full, search_trace to find text anywhere in the trace. Read "
    "the spans the instructions are about before you decide; do not guess what a span contains. You have "
    "{steps} tool rounds; give your verdict {how} as soon as you have enough evidence."
)
FORCE_VERDICT = (
    "You have used all your tool rounds. Give your verdict now {how}, based on what you have found; where "
    "the evidence is missing, say so in the reason."
)
NUDGE = "Continue with the tools, or give your verdict {how}."

ToolRunner = Callable[[str, str, int], Awaitable[str]]  # (tool name, JSON arguments, step) -> the result text


class AgentJudge(JudgeScorer):
    """A judge that investigates a trace. Params:

    instructions    what to judge; must contain {trace} (other placeholders as in templates)
    criteria        list of criteria -> per-criterion verdicts (with `inconclusive` as in llm_criteria), or
    labels/passing  one label, or
    threshold       (neither of the above) a 1-10 score passing at threshold, default 7
    inline_tokens   largest estimated size of the rendered trace shown whole (default 8000)
    max_steps       tool rounds before the verdict is forced (default 8)
    skeleton_tokens budget of the skeleton shown for larger traces (default 2000)
    payload_chars   cap of each payload a tool returns (default 3000)
    + JudgeScorer's params (model, api_base, guidelines, ...). `template` is not used: `instructions` is it.
    """

    name = "agent_judge"
    subjects = frozenset({"trace", "span"})
    subject_placeholder: ClassVar[str] = "trace"  # what `instructions` must mention
    # How much one judgement may read and how many model calls it may make are the operator's to set.
    operator_params: ClassVar[frozenset[str]] = JudgeScorer.operator_params | {
        "max_steps", "inline_tokens", "skeleton_tokens", "payload_chars"}

    def __init__(
        self,
        *,
        instructions: str,
        criteria: list[str] | None = None,
        inconclusive: str = "unknown",
        labels: list[str] | None = None,
        passing: list[str] | None = None,
        threshold: float = 7,
        inline_tokens: int = INLINE_TOKENS,
        max_steps: int = MAX_STEPS,
        skeleton_tokens: int = SKELETON_TOKENS,
        payload_chars: int = 3000,
        **judge: Any,
    ) -> None:
        if "template" in judge:
            raise JudgeConfigError(f"{self.name} takes `instructions`, not `template`")
        super().__init__(template=instructions, **judge)
        self._check_template(required=(self.subject_placeholder,))
        if criteria and labels:
            raise JudgeConfigError("give criteria or labels, not both")
        if max_steps < 1 or inline_tokens < 0 or skeleton_tokens < 200 or payload_chars < 100:
            raise JudgeConfigError("max_steps >= 1, inline_tokens >= 0, skeleton_tokens >= 200 and "
                                   "payload_chars >= 100 are required")
        self.format: VerdictFormat
        if criteria:
            self.format = CriteriaVerdicts(tuple(criteria), InconclusivePolicy(inconclusive))
        elif labels:
            self.format = LabelChoice("Follow the instructions in the user message to choose a label.",
                                      tuple(labels), tuple(passing or ()))
        else:
            self.format = ScaleScore("how well what the user message describes meets its instructions.")
            if not 1 <= threshold <= 10:
                raise JudgeConfigError("threshold must be within the 1-10 scale")
            self.threshold = float(threshold)
        self.inline_tokens = inline_tokens
        self.max_steps = max_steps
        self.skeleton_tokens = skeleton_tokens
        self.payload_chars = payload_chars

    async def score(self, target: ScoreTarget) -> Score:
        view = view_of(target)
        record = JudgmentLog(self.model)
        trace = view.trace
        mode, trace_text, full_tokens = self._trace_text(trace)
        instructions = fill(self.template or "",
                            lambda name: trace_text if name == "trace" else field_text(view, name))
        if view.span is not None and "span" not in placeholders(self.template or ""):
            span = view.span
            shown = [f"<span_under_evaluation>\n{span_text(span)}"]
            for label, value in (("inputs", span.inputs), ("outputs", span.outputs)):
                if value is not None:
                    shown.append(f"{label}: {render_value(value, FIELD_CHARS)}")
            shown.append("</span_under_evaluation>\nJudge this span (one step of the run below); the rest of "
                         "the trace is context.")
            instructions = "\n".join(shown) + "\n\n" + instructions
        if mode == "skeleton" and trace is not None:
            score = await self._explore(record, trace, instructions)
        else:
            messages = [{"role": "system", "content": self._system(self.format)},
                        {"role": "user", "content": instructions}]
            score = await self._verdict_call(record, self.format, messages, view.trace_id)
        score.metadata["judge"] = record.metadata()
        score.metadata["trace_view"] = {"mode": mode, "estimated_tokens": full_tokens,
                                        "inline_tokens": self.inline_tokens}
        return score

    def _trace_text(self, trace: Trace | None) -> tuple[str, str, int]:
        """("inline" | "skeleton" | "example", the text for {trace}, estimated tokens of the whole trace)."""
        if trace is None:
            return "example", "(no trace: this is an example sent with async_evaluate)", 0
        whole = render_trace(trace)
        tokens = estimate_tokens(whole)
        if tokens <= self.inline_tokens:
            return "inline", whole, tokens
        return "skeleton", render_skeleton(trace, self.skeleton_tokens), tokens

    async def _explore(self, record: JudgmentLog, trace: Trace, instructions: str) -> Score:
        toolbox = TraceToolbox(trace, payload_chars=self.payload_chars)

        async def run(name: str, arguments: str, step: int) -> str:
            return toolbox.run(name, arguments, step)

        guide = EXPLORE_GUIDE.format(steps=self.max_steps, how=self._how(self.format))
        try:
            return await self._tool_loop(record, self.format, guide, instructions, TOOL_SCHEMAS, run,
                                         f"trace {trace.trace_id}", trace.trace_id)
        finally:
            record.tool_calls.extend(toolbox.calls)

    def _how(self, fmt: VerdictFormat) -> str:
        if self.answer_via is AnswerVia.TOOL:
            return f"by calling `{fmt.tool_name}`"
        return "as the JSON object described below"

    async def _tool_loop(self, record: JudgmentLog, fmt: VerdictFormat, guide: str, instructions: str,
                         schemas: list[dict[str, Any]], run: ToolRunner, subject: str,
                         trace_id: str | None) -> Score:
        """Let the model call `schemas` (run by `run`) for up to max_steps rounds, then force its verdict."""
        via_tool = self.answer_via is AnswerVia.TOOL
        how = self._how(fmt)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self._system(fmt, guide)},
            {"role": "user", "content": instructions},
        ]
        tools = [*schemas, fmt.tool()] if via_tool else list(schemas)
        choice = "required" if via_tool else "auto"  # "required" keeps a tool-calling judge from chatting
        for step in range(1, self.max_steps + 1):
            response = await self._ask(record, messages, tools=tools, tool_choice=choice, trace_id=trace_id)
            verdict = next((c for c in response.tool_calls if c.name == fmt.tool_name), None)
            if verdict is not None:
                return self._parse(fmt, response)
            if not response.tool_calls:
                score = self._score_from_text(fmt, response.text, subject)
                if score is not None:
                    return score
                messages += [{"role": "assistant", "content": response.text or ""},
                             {"role": "user", "content": NUDGE.format(how=how)}]
                continue
            messages.append({"role": "assistant", "content": response.text or None, "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in response.tool_calls]})
            for index, call in enumerate(response.tool_calls):
                if index < TOOL_CALLS_PER_STEP:
                    result = await run(call.name, call.arguments, step)
                else:
                    result = f'{{"error": "not run: at most {TOOL_CALLS_PER_STEP} tool calls per round"}}'
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        log.debug("agent judge on %s used its %d steps; forcing the verdict", subject, self.max_steps)
        messages.append({"role": "user", "content": FORCE_VERDICT.format(how=how)})
        return await self._verdict_call(record, fmt, messages, trace_id, extra_tools=list(schemas))

    def _score_from_text(self, fmt: VerdictFormat, text: str | None, subject: str) -> Score | None:
        """A verdict written as JSON text instead of a tool call still counts; anything else is no verdict."""
        if not text or not text.strip():
            return None
        try:
            arguments, raw = verdict_arguments(fmt, text, [])
            return fmt.to_score(arguments, raw)
        except JudgeOutputError:
            log.debug("agent judge on %s: a text answer that is not a verdict: %s", subject,
                      render_value(text, 200))
            return None
