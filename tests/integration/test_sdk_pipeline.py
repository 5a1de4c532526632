"""The SDK against the real pipeline: a multi-agent app's trace lands in ClickHouse with every span
attributed to the right agent, and async_evaluate requests are scored by the workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.sampling import is_sampled, sdk_rule
from pipeline.sdk import Tracer
from tests.integration.example_scorers import MentionsPackage
from tests.integration.harness import WorkerProcess

pytestmark = pytest.mark.integration

SCORER_REF = f"{MentionsPackage.__module__}:{MentionsPackage.__qualname__}"
# A span may name an import path only because the operator listed it here.
RULES = f"""
rules:
  - name: errors
    scorer: error_spans
    filter: {{project: multi-agent}}
sdk_evaluations:
  scorers:
    - name: "{SCORER_REF}"
"""


def build_app(tracer: Tracer):
    class ResearchAgent:
        def __init__(self, agent_id: str) -> None:
            self.id = agent_id

        @tracer.observe(span_type="tool")
        def web_search(self, query: str) -> list[str]:
            return [f"{query} result"]

        @tracer.agent(identifier="id")
        @tracer.observe()
        def invoke_agent(self, topic: str) -> str:
            return self.web_search(topic)[0]

    class TaskAgent:
        def __init__(self, agent_id: str) -> None:
            self.id = agent_id

        @tracer.observe(span_type="tool")
        def create_ticket(self, title: str) -> dict:
            if "fail" in title:
                raise RuntimeError("ticket service down")
            return {"id": 1, "title": title}

        @tracer.agent(identifier="id")
        @tracer.observe()
        def invoke_agent(self, task: str) -> str:
            try:
                self.create_ticket(task)
            except RuntimeError:
                return "could not file a ticket"
            response = f"Your package ticket for {task!r} is filed"
            tracer.async_evaluate(SCORER_REF, {"request": task, "response": response}, sampling_rate=0.5)
            return response

    class PlanningAgent:
        def __init__(self, agent_id: str) -> None:
            self.id = agent_id

        @tracer.observe(span_type="tool")
        def make_plan(self, goal: str) -> list[str]:
            return ["research", "act"]

        @tracer.agent(identifier="id")
        @tracer.observe()
        def invoke_agent(self, goal: str) -> str:
            self.make_plan(goal)
            notes = ResearchAgent("Researcher1").invoke_agent(goal)
            return TaskAgent("Tasker1").invoke_agent(notes)

    return PlanningAgent


def test_a_multi_agent_trace_is_stored_with_each_tool_span_naming_its_agent(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    worker = WorkerProcess(tmp_path / "data", broker, rules).start()
    try:
        tracer = Tracer("multi-agent", bootstrap_servers=broker, service="planner-svc", flush_interval_s=0.05)
        planner_cls = build_app(tracer)
        goals = [f"where is my package {i}" for i in range(12)] + ["please fail this one"]
        for goal in goals:
            planner_cls("planner-1").invoke_agent(goal)
        assert tracer.flush(timeout_s=30), tracer.stats()
        assert tracer.stats()["sent"] == 6 * len(goals) and tracer.dropped == 0

        worker.wait_for(lambda: worker.scalar(
            "SELECT count() FROM evalstream.traces_current WHERE project = 'multi-agent'") == len(goals),
            what="one trace per run")
        rows = worker.query(
            "SELECT trace_id, name, span_type, agent_name, agent_id, status, service FROM evalstream.spans FINAL "
            "WHERE project = 'multi-agent' ORDER BY trace_id, start_time")
        traces: dict[str, list[list]] = {}
        for row in rows:
            traces.setdefault(row[0], []).append(row[1:])
        assert len(traces) == len(goals)
        expected_agents = {("make_plan", "tool"): ("PlanningAgent", "planner-1"),
                           ("web_search", "tool"): ("ResearchAgent", "Researcher1"),
                           ("create_ticket", "tool"): ("TaskAgent", "Tasker1")}
        for spans in traces.values():
            assert len(spans) == 6
            for name, span_type, agent_name, agent_id, status, service in spans:
                assert service == "planner-svc"
                if span_type == "tool":
                    assert (agent_name, agent_id) == expected_agents[(name, span_type)]
                else:
                    assert name == "invoke_agent" and span_type == "agent"
            assert {(a, i) for _, t, a, i, _, _ in spans if t == "agent"} == {
                ("PlanningAgent", "planner-1"), ("ResearchAgent", "Researcher1"), ("TaskAgent", "Tasker1")}

        # Every trace closed on the SDK's final marker, not the quiet period.
        assert worker.query("SELECT DISTINCT close_reason FROM evalstream.traces_current "
                            "WHERE project = 'multi-agent'") == [["final_marker"]]

        # async_evaluate: sampled exactly as the pure function says, scored by the imported scorer.
        evaluated = worker.query("SELECT DISTINCT trace_id FROM evalstream.spans FINAL WHERE project = 'multi-agent' "
                                 "AND name = 'invoke_agent' AND agent_name = 'TaskAgent' AND status = 'ok' "
                                 "AND trace_id IN (SELECT trace_id FROM evalstream.spans FINAL "
                                 "WHERE name = 'create_ticket' AND status = 'ok')")
        rule = sdk_rule(SCORER_REF)
        expected = {t for (t,) in evaluated if is_sampled(t, rule, 0.5)}
        assert 0 < len(expected) < len(evaluated)
        worker.wait_for(lambda: worker.scalar(f"SELECT count() FROM evalstream.decisions_current "
                                              f"WHERE rule = '{rule}'") == len(evaluated),
                        what="a decision per evaluation request")
        worker.wait_for(lambda: worker.scalar(f"SELECT count() FROM evalstream.scores_current "
                                              f"WHERE rule = '{rule}'") == len(expected),
                        what="scores for the sampled requests")
        scored = worker.query(f"SELECT trace_id, passed, agent_name FROM evalstream.scores_current "
                              f"WHERE rule = '{rule}'")
        assert {t for t, _, _ in scored} == expected
        assert all(passed for _, passed, _ in scored)
        outcomes = dict(worker.query(f"SELECT outcome, count() FROM evalstream.decisions_current "
                                     f"WHERE rule = '{rule}' GROUP BY outcome"))
        assert outcomes.get("sampled_out") == len(evaluated) - len(expected)

        # The failing run: the tool span is an error with the exception recorded; the rule caught it.
        failed = worker.query("SELECT s.trace_id, s.error_type, s.error_message FROM evalstream.spans AS s FINAL "
                              "WHERE s.project = 'multi-agent' AND s.status = 'error'")
        assert [(row[1], row[2]) for row in failed] == [("RuntimeError", "ticket service down")]
        worker.wait_for(lambda: worker.query(f"SELECT passed FROM evalstream.scores_current WHERE rule = 'errors' "
                                             f"AND trace_id = '{failed[0][0]}'") == [[False]],
                        what="the error rule to fail the broken run")
        tracer.shutdown()
    finally:
        worker.stop()
