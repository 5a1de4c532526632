"""`decisions_current` on a real chDB: a rule's current decisions on a trace are those of its latest version."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipeline.contracts import Decision, DecisionOutcome
from pipeline.storage.client import embedded_dsn
from pipeline.storage.database import Database
from pipeline.storage.rows import DECISION_COLUMNS, decision_row

pytestmark = pytest.mark.integration


def test_a_span_rules_trace_level_decision_is_not_current_once_a_later_version_decided_per_span(tmp_path: Path
                                                                                                 ) -> None:
    db = Database(embedded_dsn(tmp_path / "clickhouse"), "evalstream")
    asyncio.run(db.open(30))
    try:
        def decision(version: int, outcome: DecisionOutcome, span_id: str | None = None, at: int = 1) -> list:
            return decision_row(Decision(rule="llm-json", trace_id="t1", trace_version=version, span_id=span_id,
                                         outcome=outcome, decided_at_ns=1_700_000_000_000_000_000 + at))

        rows = [decision(1, DecisionOutcome.FILTERED_OUT, at=1),  # v1: no span matched
                decision(2, DecisionOutcome.QUEUED, "s1", at=2), decision(2, DecisionOutcome.SCORED, "s1", at=3),
                decision(2, DecisionOutcome.SAMPLED_OUT, "s2", at=2)]
        asyncio.run(db.insert_many({"decisions": rows}, {"decisions": DECISION_COLUMNS}))
        _, _, current = asyncio.run(db.query(
            "SELECT trace_version, span_id, outcome FROM evalstream.decisions_current WHERE trace_id = 't1' "
            "ORDER BY span_id"))
        assert [tuple(r) for r in current] == [(2, "s1", "scored"), (2, "s2", "sampled_out")]
    finally:
        asyncio.run(db.close())
