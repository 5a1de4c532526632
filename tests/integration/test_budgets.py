"""A rule with a spend budget: jobs over budget are deferred with a reason, then scored when the
budget refills, and none is dropped."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.example_scorers import ReportsSpend
from tests.integration.harness import WorkerProcess, batch, produce, span

pytestmark = pytest.mark.integration

N_TRACES = 10
RULES = f"""
rules:
  - name: judged
    scorer: {ReportsSpend.__module__}:{ReportsSpend.__qualname__}
    budget: {{tokens_per_hour: 1000}}
  - name: errors
    scorer: error_spans
"""


def budgeted_worker(broker: str, tmp_path: Path, rules_text: str) -> WorkerProcess:
    """A worker whose budgets count over 3 s, running one budgeted trace at a time."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text)
    return WorkerProcess(tmp_path / "data", broker, rules, {"EVALSTREAM_BUDGET_WINDOW_S": "3",
                                                            "EVALSTREAM_SCORER_CONCURRENCY": "1"}).start()


def one_span_traces(prefix: str, **root: Any) -> list[tuple[bytes, bytes]]:
    messages = []
    for i in range(N_TRACES):
        trace_id = f"{prefix}{i:03d}"
        messages.append((trace_id.encode(), batch(trace_id, [span(trace_id, f"{trace_id}-r", None, "handle", **root)],
                                                  final=True)))
    return messages


def test_jobs_over_budget_are_deferred_then_scored(broker: str, tmp_path: Path) -> None:
    worker = budgeted_worker(broker, tmp_path, RULES)
    try:
        produce(broker, one_span_traces("b"))
        worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.scores_current "
                                              "WHERE rule = 'judged'") == N_TRACES,
                        timeout_s=90, what="every judged trace scored once the budget refilled")
        deferred = worker.query("SELECT trace_id, reason FROM evalstream.decisions FINAL "
                                "WHERE rule = 'judged' AND outcome = 'deferred'")
        assert len(deferred) >= N_TRACES // 2  # 2 jobs per 3 s window: most had to wait
        # A job is deferred when what the window holds plus its estimate passes the cap. The estimate is the
        # largest job settled in the window (500) or, when none is left in it, the default (capped at 1000),
        # so what the reason reports as held can be below the cap; it is never nothing.
        held = [re.fullmatch(r"budget spent in the last 3 s by all scorers: (\d+)/1000 tokens.*", reason)
                for _, reason in deferred]
        assert all(held), deferred[:3]
        assert all(int(m.group(1)) > 0 for m in held if m), deferred[:3]
        assert any(m.group(1) == "1000" for m in held if m), deferred[:3]
        assert worker.query("SELECT DISTINCT outcome FROM evalstream.decisions_current "
                            "WHERE rule = 'judged'") == [["scored"]]
        # The rule without a budget was never held back.
        assert worker.scalar("SELECT count() FROM evalstream.decisions FINAL "
                             "WHERE rule = 'errors' AND outcome = 'deferred'") == 0
        assert worker.scalar("SELECT count() FROM evalstream.scores_current WHERE rule = 'errors'") == N_TRACES
    finally:
        worker.stop()


SDK_RULES = f"""
rules:
  - name: errors
    scorer: error_spans
sdk_evaluations:
  scorers:
    - name: spendy
      scorer: {ReportsSpend.__module__}:{ReportsSpend.__qualname__}
      budget: {{tokens_per_hour: 1000}}
"""


def test_async_evaluate_requests_of_a_budgeted_sdk_scorer_wait_for_its_budget(broker: str, tmp_path: Path) -> None:
    """Spans are untrusted: a flood of async_evaluate requests naming a listed judge spends no more than the
    operator's budget for it; the rest wait, and none is dropped."""
    worker = budgeted_worker(broker, tmp_path, SDK_RULES)
    try:
        request = {"scorer": "spendy", "params": {}, "example": {"inputs": "q", "outputs": "a"}}
        produce(broker, one_span_traces("s", evaluations=[request]))
        worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.scores_current "
                                              "WHERE rule = 'sdk:spendy' AND status = 'scored'") == N_TRACES,
                        timeout_s=90, what="every request scored once the budget refilled")
        deferred = worker.query("SELECT trace_id, reason FROM evalstream.decisions FINAL "
                                "WHERE rule = 'sdk:spendy' AND outcome = 'deferred'")
        assert len(deferred) >= N_TRACES // 2, deferred  # 2 requests per 3 s window
        assert all(re.fullmatch(r"budget spent in the last 3 s by all scorers: \d+/1000 tokens.*", reason)
                   for _, reason in deferred), deferred[:3]
        assert worker.query("SELECT DISTINCT outcome FROM evalstream.decisions_current "
                            "WHERE rule = 'sdk:spendy'") == [["scored"]]
    finally:
        worker.stop()
