"""Session scorers the sessions integration test names by dotted path; the worker process imports them."""

from __future__ import annotations

from pipeline.contracts.conversation import Conversation
from scorers.base import Score, Scorer, ScoreTarget


class TranscriptInOrder(Scorer):
    """Passes when the turns' questions come in the order they were asked (q1, q2, ...); reports the
    transcript's question numbers so the test can see what the scorer saw."""

    name = "transcript_in_order"

    async def score(self, target: ScoreTarget) -> Score:
        if not isinstance(target, Conversation):
            raise TypeError("transcript_in_order scores sessions (subject: session)")
        asked = [int(t.input.rsplit("q", 1)[1]) for t in target.turns]
        in_order = asked == sorted(asked)
        first = await target.trace(1)  # the judge side of sessions: any turn's full trace can be opened
        return Score(value=float(len(asked)), passed=in_order, reason=f"asked {asked}",
                     metadata={"asked": asked, "first_trace_spans": len(first.spans), "final": target.final})
