from __future__ import annotations

from collections import Counter

import orjson

from pipeline.contracts import Trace
from scorers.base import Score, Scorer, ScoreTarget


class RepeatedToolCalls(Scorer):
    """Fails a trace in which one tool was called with the same input more than `max_repeats` times.

    Value: the highest number of identical calls. Agents stuck in a loop show up here.
    """

    name = "repeated_tool_calls"
    higher_is_better = False

    def __init__(self, max_repeats: int = 2) -> None:
        if max_repeats < 1:
            raise ValueError("max_repeats must be >= 1")
        self.threshold = float(max_repeats)

    async def score(self, target: ScoreTarget) -> Score:
        if not isinstance(target, Trace):
            raise TypeError("repeated_tool_calls scores traces, not examples")
        calls: Counter[tuple[str, bytes]] = Counter()
        for span in target.spans:
            if span.span_type == "tool":
                calls[(span.name, orjson.dumps(span.inputs, option=orjson.OPT_SORT_KEYS))] += 1
        if not calls:
            return Score(value=0, reason="no tool calls")
        (tool, args), count = calls.most_common(1)[0]
        return Score(value=count, reason=f"{tool} called {count}x with input {args.decode()[:200]}")
