"""LLM-as-a-judge and agent-as-a-judge scorers, and the judge client they share (one per process, built
from a `JudgeConfig` by the composition root and handed to judges by the `ScorerResolver`).

Importing this package does not import litellm: the client imports it on its first call.
"""

from scorers.base import Scorer
from scorers.judges.agent_judge import AgentJudge
from scorers.judges.client import JudgeClient
from scorers.judges.config import JudgeConfig
from scorers.judges.limits import ModelLimits
from scorers.judges.llm_judge import CriteriaJudge, JudgeScorer, LabelJudge, ScaleJudge
from scorers.judges.presets import PRESETS, Groundedness, Helpfulness, TaskCompletion
from scorers.judges.session_judge import SessionAgentJudge, SessionCriteriaJudge

# Every judge by scorer name: the general ones, the presets, and the session judges (subject: session).
JUDGES: dict[str, type[Scorer]] = {
    **{cls.name: cls for cls in (CriteriaJudge, ScaleJudge, LabelJudge, AgentJudge)},
    **PRESETS,
    **{cls.name: cls for cls in (SessionCriteriaJudge, SessionAgentJudge)},
}

__all__ = [
    "JUDGES", "PRESETS", "AgentJudge", "CriteriaJudge", "Groundedness", "Helpfulness", "JudgeClient", "JudgeConfig",
    "JudgeScorer", "LabelJudge", "ModelLimits", "ScaleJudge", "SessionAgentJudge", "SessionCriteriaJudge",
    "TaskCompletion",
]
