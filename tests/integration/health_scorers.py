"""Scorers for tests/integration/test_rule_health.py, named in its rules by dotted path."""

from __future__ import annotations

from pipeline.contracts import Trace
from scorers.base import Score, Scorer


class Refused(Scorer):
    """Every call refused, as a judge whose provider rejects the key would be."""

    name = "refused"

    def score(self, target: Trace) -> Score:
        raise PermissionError("AuthenticationError: Error code: 401 - invalid api key")
