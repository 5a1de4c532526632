"""LLM-as-a-judge scorers: one model call that answers through a strict tool call.

    CriteriaJudge  (llm_criteria)  one verdict per criterion: true / false / inconclusive, with a reason
    ScaleJudge     (llm_scale)     a whole number from 1 to 10 against a pass threshold
    LabelJudge     (llm_label)     one of a list of labels; some of them pass

They take the shared judge params of `JudgeScorer` (model, endpoint, template, guidelines, limits) and
score a Trace (the root's inputs and outputs, retriever outputs as context), a span (a span rule's SpanSubject:
its inputs, outputs, attributes and model, with a bounded summary of its trace) or an `async_evaluate` Example.
"""

from __future__ import annotations

from typing import Any, ClassVar

from scorers.base import Score, Scorer, ScoreTarget
from scorers.judges.client import JudgeClient, JudgeRequest, JudgeResponse
from scorers.judges.errors import JudgeConfigError, JudgeOutputError
from scorers.judges.limits import ModelLimits
from scorers.judges.prompts import (
    STANDARD_FIELDS,
    SYSTEM_ROLE,
    TargetView,
    default_evidence,
    field_text,
    fill,
    placeholders,
    system_prompt,
    view_of,
)
from scorers.judges.records import JudgmentLog
from scorers.judges.verdicts import (
    AnswerVia,
    CriteriaVerdicts,
    InconclusivePolicy,
    LabelChoice,
    ScaleScore,
    VerdictFormat,
    answer_instructions,
    forced_choice,
    verdict_arguments,
)


class JudgeScorer(Scorer):
    """What every judge shares. Rule params:

    model            litellm model string; default: its client's config (EVALSTREAM_JUDGE_MODEL in the pipeline),
                     else openai/gpt-4o-mini
    api_base         endpoint; default: its client's config (EVALSTREAM_JUDGE_API_BASE), else the provider's
    api_key_env      name of the variable holding the key (default: its client's config, EVALSTREAM_JUDGE_API_KEY,
                     else litellm's provider variable, e.g. OPENAI_API_KEY); `api_key` is accepted but keeps a
                     secret in rules
    client           the process's JudgeClient, given by the ScorerResolver that builds the judge (never a
                     rule's); a judge built without one makes its own with the default JudgeConfig
    temperature      0 by default: a judge should be repeatable (and the cache assumes it)
    max_tokens, timeout_s, litellm_params (any other litellm.acompletion kwarg)
    system_prompt    replaces the judge's role paragraph (the answer format is always appended)
    guidelines       extra lines the judge must follow
    template         the user message, with {inputs} {outputs} {expected} {context} {trace} {metadata} or
                     example fields; default: the target's fields, each in a tag
    answer_via       "tool" (a strict, forced tool call; JSON text is still accepted) or "json"
    max_concurrency, requests_per_minute, tokens_per_minute   tighten the shared client's limits for the model
    """

    version = "1"
    takes_judge_client: ClassVar[bool] = True
    operator_params: ClassVar[frozenset[str]] = frozenset({
        "model", "api_base", "api_key", "api_key_env", "litellm_params", "timeout_s", "max_tokens", "temperature",
        "max_concurrency", "requests_per_minute", "tokens_per_minute", "client",
    })

    def __init__(
        self,
        *,
        model: str | None = None,
        api_base: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
        litellm_params: dict[str, Any] | None = None,
        system_prompt: str | None = None,
        guidelines: list[str] | tuple[str, ...] = (),
        template: str | None = None,
        answer_via: str = "tool",
        max_concurrency: int | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        client: JudgeClient | None = None,
    ) -> None:
        self._client = client if client is not None else JudgeClient()
        config = self._client.config
        self.model = model or config.model
        self.api_base = api_base or config.api_base
        self.api_key = api_key or (config.variable(api_key_env) if api_key_env else config.api_key)
        if api_key_env and not self.api_key:
            raise JudgeConfigError(f"api_key_env names {api_key_env!r}, which is not set")
        self.params: dict[str, Any] = {**(litellm_params or {}), "temperature": temperature}
        if max_tokens is not None:
            self.params["max_tokens"] = max_tokens
        self.timeout_s = timeout_s
        self.role = system_prompt or SYSTEM_ROLE
        if isinstance(guidelines, str):
            guidelines = [guidelines]
        self.guidelines = tuple(str(g) for g in guidelines)
        self.template = template
        self.answer_via = AnswerVia(answer_via)
        self.limits = None
        if max_concurrency or requests_per_minute or tokens_per_minute:
            self.limits = ModelLimits(max_concurrency=max_concurrency or 10**6,
                                      requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute)

    @property
    def client(self) -> JudgeClient:
        if self.limits is not None:
            self._client.tighten_limits(self.model, self.limits)
        return self._client

    # -- the pieces subclasses combine ----------------------------------------------------------------
    def _check_template(self, required: tuple[str, ...] = ()) -> None:
        if self.template is None:
            return
        names = placeholders(self.template)
        for name in required:
            if name not in names:
                raise JudgeConfigError(f"the template must contain {{{name}}}")
        if not names:
            raise JudgeConfigError(f"the template has no placeholder; use some of {list(STANDARD_FIELDS)}")

    def _system(self, fmt: VerdictFormat, task: str | None = None) -> str:
        task_text = fmt.instructions() if task is None else f"{task}\n\n{fmt.instructions()}"
        return system_prompt(self.role, task_text, self.guidelines, answer_instructions(fmt, self.answer_via))

    def _user(self, view: TargetView) -> str:
        if self.template is None:
            return default_evidence(view)
        return fill(self.template, lambda name: field_text(view, name))

    async def _ask(self, record: JudgmentLog, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None,
                   tool_choice: Any, trace_id: str | None) -> JudgeResponse:
        request = JudgeRequest(self.model, list(messages), tools, tool_choice, self.api_base, self.api_key,
                               self.params, self.timeout_s, trace_id=trace_id)
        response = await self.client.complete(request)  # a failure carries its recorded call as `exc.call`
        record.calls.append(response.call)
        return response

    async def _verdict_call(self, record: JudgmentLog, fmt: VerdictFormat, messages: list[dict[str, Any]],
                            trace_id: str | None, extra_tools: list[dict[str, Any]] | None = None) -> Score:
        """One call that must end in a verdict: forced tool call (or JSON text), parsed into a Score."""
        if self.answer_via is AnswerVia.TOOL:
            tools = [*(extra_tools or []), fmt.tool()]
            response = await self._ask(record, messages, tools=tools, tool_choice=forced_choice(fmt.tool_name),
                                       trace_id=trace_id)
        else:  # earlier tool calls in the conversation need their tools declared, but none may be called now
            response = await self._ask(record, messages, tools=extra_tools or None,
                                       tool_choice="none" if extra_tools else None, trace_id=trace_id)
        return self._parse(fmt, response)

    def _parse(self, fmt: VerdictFormat, response: JudgeResponse) -> Score:
        try:
            arguments, raw = verdict_arguments(fmt, response.text, response.tool_calls)
            return fmt.to_score(arguments, raw)
        except JudgeOutputError:
            self.client.forget(response)  # a re-scored trace must ask again, not get the same bad answer
            raise


class _SingleCallJudge(JudgeScorer):
    """An LLM judge: the system prompt states the task, the user message carries the evidence (for a span:
    the span, its inputs and outputs, and a summary of its trace as context)."""

    subjects = frozenset({"trace", "span"})

    format: VerdictFormat

    async def score(self, target: ScoreTarget) -> Score:
        view = view_of(target)
        record = JudgmentLog(self.model)
        messages = [{"role": "system", "content": self._system(self.format)},
                    {"role": "user", "content": self._user(view)}]
        score = await self._verdict_call(record, self.format, messages, view.trace_id)
        score.metadata["judge"] = record.metadata()
        return score


class CriteriaJudge(_SingleCallJudge):
    """Per-criterion verdicts. Value: the fraction of criteria met. Passed: every criterion true; any false
    fails; inconclusive verdicts (with no false one) give passed=None unless `inconclusive` is "fail" or
    "pass". A rule `threshold` compares the fraction instead.

    Params: criteria (list of str), inconclusive ("unknown" | "fail" | "pass"), + JudgeScorer's.
    """

    name = "llm_criteria"

    def __init__(self, *, criteria: list[str], inconclusive: str = "unknown", **judge: Any) -> None:
        super().__init__(**judge)
        self.format = CriteriaVerdicts(tuple(criteria), InconclusivePolicy(inconclusive))
        self._check_template()


class ScaleJudge(_SingleCallJudge):
    """A score from 1 to 10. Value: the score; passes at `threshold` (default 7) or above.

    Params: question (what to rate), threshold, + JudgeScorer's (guidelines are the usual extra).
    """

    name = "llm_scale"

    def __init__(self, *, question: str, threshold: float = 7, **judge: Any) -> None:
        super().__init__(**judge)
        self.format = ScaleScore(question)
        if not 1 <= threshold <= 10:
            raise JudgeConfigError("threshold must be within the 1-10 scale")
        self.threshold = float(threshold)
        self._check_template()


class LabelJudge(_SingleCallJudge):
    """One label out of `labels`. Value: the label; passed when it is one of `passing` (None without them).

    Params: question, labels (list of str), passing (list of str), + JudgeScorer's.
    """

    name = "llm_label"

    def __init__(self, *, question: str, labels: list[str], passing: list[str] | None = None, **judge: Any) -> None:
        super().__init__(**judge)
        self.format = LabelChoice(question, tuple(labels), tuple(passing or ()))
        self._check_template()
