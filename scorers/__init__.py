"""Scorers: Python modules that judge a trace, one span of it (`SpanSubject`) or an `async_evaluate` example.

A scorer is a `Scorer` subclass or a function decorated with `@scorer`. It returns a
`Score`; a function scorer may also return a bare float, bool or str. Anything else is
reported as an error row, never dropped. A `ScorerResolver` finds scorers by name and builds them;
`scorers.testing` builds them for tests. This package never imports Faust, ClickHouse or slack-sdk,
and of the pipeline only its leaves (`pipeline.contracts`, `pipeline.errors`).
"""

from pipeline.contracts.subjects import SpanSubject
from scorers.base import Score, Scorer, ScoreTarget, scorer
from scorers.registry import ScorerResolver, builtin_names

__all__ = ["Score", "ScoreTarget", "Scorer", "ScorerResolver", "SpanSubject", "builtin_names", "scorer"]
