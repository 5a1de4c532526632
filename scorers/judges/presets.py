"""Ready-made judges: thin configurations of the general ones, with prompts we maintain.

    helpfulness      llm_scale: how well the reply serves the user's request, 1-10, passes at 7
    groundedness     llm_criteria: the output is supported by the retrieved context (retriever spans or
                     the example's `context`); without any context it returns no verdict and calls no model
    task_completion  agent_judge: did the agent do what was asked, judged from what it did in the trace;
                     labels completed / partially_completed / not_completed, only `completed` passes

Each takes the shared judge params (model, api_base, guidelines to add, limits, ...).
"""

from __future__ import annotations

from typing import Any

from scorers.base import Score, Scorer, ScoreTarget
from scorers.judges.agent_judge import AgentJudge
from scorers.judges.llm_judge import CriteriaJudge, ScaleJudge
from scorers.judges.prompts import view_of
from scorers.judges.records import JudgmentLog

HELPFULNESS_QUESTION = "how helpful the agent's output is to the person who sent the inputs."
HELPFULNESS_GUIDELINES = (
    "Helpful means it addresses the request that was actually made, not a neighbouring one, and does so early.",
    ("Correctness counts: a fluent answer with a wrong fact or a made-up detail is worth less than a short "
     "correct one. Saying plainly what is not known is fine."),
    "The user can act on it: the steps, values, links or next actions they need are there.",
    "Padding, repetition, needless disclaimers and walls of text lower the score.",
    "Refusing or deflecting a reasonable request is unhelpful; declining a harmful one is correct.",
)

GROUNDEDNESS_CRITERIA = (
    "Every factual claim in the output is supported by the retrieved context.",
    "The output does not contradict the retrieved context.",
    "Names, numbers, dates and quotations in the output match the retrieved context exactly.",
)
GROUNDEDNESS_TEMPLATE = (
    "Check the output against the retrieved context only (not against what you know yourself).\n\n"
    "<retrieved_context>\n{context}\n</retrieved_context>\n\n<inputs>\n{inputs}\n</inputs>\n\n"
    "<output>\n{outputs}\n</output>"
)

TASK_COMPLETION_INSTRUCTIONS = (
    "Decide whether the agent completed the task it was given.\n\n"
    "The request: {inputs}\n\nThe agent's run:\n{trace}\n\n"
    "Judge by what the agent actually did (its tool calls, their results and errors), not only by what its "
    "final output claims. An action the output reports but whose tool call failed or never happened was not "
    "done. `completed`: the final output delivers everything asked. `partially_completed`: some of it, or "
    "all of it with a failure the user must fix. `not_completed`: the main request was not met."
)
TASK_COMPLETION_LABELS = ["completed", "partially_completed", "not_completed"]


class Helpfulness(ScaleJudge):
    name = "helpfulness"

    def __init__(self, *, threshold: float = 7, guidelines: list[str] | tuple[str, ...] = (), **judge: Any) -> None:
        super().__init__(question=HELPFULNESS_QUESTION, threshold=threshold,
                         guidelines=[*HELPFULNESS_GUIDELINES, *guidelines], **judge)


class Groundedness(CriteriaJudge):
    name = "groundedness"

    def __init__(self, *, inconclusive: str = "unknown", **judge: Any) -> None:
        super().__init__(criteria=list(GROUNDEDNESS_CRITERIA), inconclusive=inconclusive,
                         template=GROUNDEDNESS_TEMPLATE, **judge)

    async def score(self, target: ScoreTarget) -> Score:
        if not view_of(target).context:
            return Score(value=None, passed=None, reason="no retrieved context to check the output against",
                         metadata={"judge": JudgmentLog(self.model).metadata()})
        return await super().score(target)


class TaskCompletion(AgentJudge):
    name = "task_completion"

    def __init__(self, **judge: Any) -> None:
        super().__init__(instructions=TASK_COMPLETION_INSTRUCTIONS, labels=TASK_COMPLETION_LABELS,
                         passing=["completed"], **judge)


PRESETS: dict[str, type[Scorer]] = {cls.name: cls for cls in (Helpfulness, Groundedness, TaskCompletion)}
