"""Scorers: Python modules that judge a trace or an `async_evaluate` example.

A scorer is a `Scorer` subclass or a function decorated with `@scorer`. It returns a
`Score`; a function scorer may also return a bare float, bool or str. Anything else is
reported as an error row, never dropped. This package never imports Faust, ClickHouse or
slack-sdk.
"""

from scorers.base import Score, Scorer, ScoreTarget, scorer
from scorers.registry import builtin_names, resolve_scorer

__all__ = ["Score", "ScoreTarget", "Scorer", "builtin_names", "resolve_scorer", "scorer"]
