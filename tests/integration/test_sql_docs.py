"""Every query in docs/sql.md runs against data from a real pipeline run, and its result agrees with the
base tables; `evalstream sql`, `traces show` and `traces list` work while the worker runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.example_scorers import ReportsSpend
from tests.integration.harness import WorkerProcess, batch, produce, span

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
N = 40
RULES = f"""
rules:
  - {{name: errors, scorer: error_spans}}
  - {{name: latency, scorer: trace_latency, params: {{max_ms: 100}}, sampling_rate: 0.5}}
  - {{name: judged, scorer: "{ReportsSpend.__module__}:{ReportsSpend.__qualname__}"}}
  - {{name: elsewhere, scorer: error_spans, filter: {{project: somewhere-else}}}}
alerts:
  - {{name: error-alert, rule: errors, condition: failed, cooldown_s: 0, window_s: 1000000000}}
"""


def documented_queries() -> dict[str, str]:
    """Each `### name` heading and the ```sql block under it."""
    queries: dict[str, str] = {}
    name, block = None, None
    for line in DOC.read_text().splitlines():
        if line.startswith("### "):
            name = line[4:].strip()
        elif line.strip() == "```sql" and name:
            block = []
        elif line.strip() == "```" and block is not None:
            assert name not in queries, f"two queries named {name}"
            queries[name], name, block = "\n".join(block), None, None
        elif block is not None:
            block.append(line)
    return queries


def now_span(*args: Any, start_ms: int = 0, dur_ms: int = 5, **kw: Any) -> dict[str, Any]:
    """A span that started just now, so the last-hour rollups see it."""
    start = time.time_ns() - 60 * 10**9 + start_ms * 10**6
    return span(*args, start_ns=start, end_ns=start + dur_ms * 10**6, **kw)


def make_trace(i: int) -> tuple[bytes, bytes]:
    trace_id = f"q{i:03d}"
    agent = "planner" if i % 2 else "support"
    model = "gpt-4o-mini" if i % 3 else "claude-3-5-haiku"
    root = now_span(trace_id, f"{trace_id}-r", None, "handle", dur_ms=40 + (i % 5) * 30, agent_name=agent)
    llm = now_span(trace_id, f"{trace_id}-l", root["span_id"], "chat", start_ms=1, dur_ms=20 + i, span_type="llm",
                   model=model, agent_name=agent, input_tokens=100, output_tokens=20, cost_usd=0.001)
    tool = now_span(trace_id, f"{trace_id}-t", root["span_id"], "search", start_ms=2, dur_ms=10, span_type="tool",
                    status="error" if i % 5 == 0 else "ok", agent_name="researcher")
    return trace_id.encode(), batch(trace_id, [root, llm, tool], final=True)


def as_dicts(worker: WorkerProcess, sql: str) -> list[dict[str, Any]]:
    import json
    import urllib.request

    request = urllib.request.Request(f"{worker.query_url}/query", data=json.dumps({"sql": sql}).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    return [dict(zip(body["columns"], row, strict=True)) for row in body["rows"]]


def cli(worker: WorkerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVALSTREAM_DATA_DIR": str(worker.data_dir), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_every_documented_query_runs_and_agrees_with_the_base_tables(broker: str, tmp_path: Path) -> None:
    queries = documented_queries()
    assert len(queries) >= 15 and "pass-rate-today" in queries, sorted(queries)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    worker = WorkerProcess(tmp_path / "data", broker, rules).start()
    try:
        produce(broker, [make_trace(i) for i in range(N)] + [(b"poison", b"{not json")])
        worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.decisions_current") == 4 * N,
                        what="a decision for every rule and trace")
        worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.decisions_current "
                                              "WHERE outcome = 'queued'") == 0, what="every job scored")
        worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.dead_letters FINAL") == 1,
                        what="the poison message dead-lettered")
        failing = sorted(f"q{i:03d}" for i in range(N) if i % 5 == 0)
        worker.wait_for(lambda: sorted(t for (ids,) in worker.query("SELECT trace_ids FROM evalstream.alerts FINAL")
                                       for t in ids) == failing, what="every failure in an alert message")

        got = {name: as_dicts(worker, sql) for name, sql in queries.items()}  # every query runs
        scores = as_dicts(worker, "SELECT rule, trace_id, agent_name, model, passed, status, source "
                                  "FROM evalstream.scores_current")

        def per_rule(pred: Any) -> dict[str, int]:
            out: dict[str, int] = {}
            for s in scores:
                if pred(s):
                    out[s["rule"]] = out.get(s["rule"], 0) + 1
            return out

        today = {r["rule"]: r for r in got["pass-rate-today"]}
        assert {k: v["results"] for k, v in today.items()} == per_rule(lambda s: True)
        assert {k: v["passed"] for k, v in today.items() if v["passed"]} == per_rule(lambda s: s["passed"] is True)
        assert today["errors"]["failed"] == len(failing) and today["judged"]["passed"] == N
        assert today["errors"]["pass_rate"] == pytest.approx(1 - len(failing) / N, abs=1e-3)
        assert sum(r["results"] for r in got["pass-rate-per-minute"]) == len(scores)

        agents = {(r["agent_name"], r["rule"]): r["failed"] for r in got["failing-agents"]}
        expected_agents: dict[tuple[str, str], int] = {}
        for s in scores:
            if s["passed"] is False:
                key = (s["agent_name"], s["rule"])
                expected_agents[key] = expected_agents.get(key, 0) + 1
        assert agents == expected_agents and ("support", "errors") in agents  # q000, q010, ... are even
        assert sum(r["failed"] for r in got["failures-by-model"]) == sum(expected_agents.values())

        assert sorted(r["trace_id"] for r in got["failing-traces"] if r["rule"] == "errors") == failing
        assert got["scorer-errors"] == []

        latency = {r["name"]: r for r in got["span-latency"]}
        assert {n: latency[n]["spans"] for n in ("handle", "chat", "search")} == {"handle": N, "chat": N, "search": N}
        assert latency["search"]["errors"] == len(failing)
        exact = as_dicts(worker, "SELECT quantile(0.5)(duration_ms) AS p50 FROM evalstream.spans FINAL "
                                 "WHERE name = 'chat'")[0]["p50"]
        assert latency["chat"]["p50_ms"] == pytest.approx(exact, abs=1.0)
        assert got["slowest-traces"][0]["ms"] == max(40 + (i % 5) * 30 for i in range(N))

        (judge,) = got["judge-cost"]
        assert (judge["rule"], judge["judge_model"], judge["judgments"]) == ("judged", "fake", N)
        assert (judge["input_tokens"], judge["output_tokens"]) == (400 * N, 100 * N)
        llm_cost = {(r["agent_name"], r["model"]): r for r in got["agent-llm-cost"]}
        assert sum(r["llm_calls"] for r in llm_cost.values()) == N
        assert sum(r["cost_usd"] for r in llm_cost.values()) == pytest.approx(0.001 * N)

        outcomes = {(r["rule"], r["outcome"]): r["traces"] for r in got["outcomes-per-rule"]}
        sampled = outcomes.get(("latency", "scored"), 0)
        assert sampled + outcomes.get(("latency", "sampled_out"), 0) == N and 0 < sampled < N
        assert outcomes[("elsewhere", "filtered_out")] == N and outcomes[("errors", "scored")] == N
        assert len(got["not-scored"]) == min(50, N + N - sampled)
        assert {(r["rule"], r["source"]): r["scores"] for r in got["live-vs-backfill"]} == {
            ("errors", "live"): N, ("judged", "live"): N, ("latency", "live"): sampled}

        (dead,) = got["dead-letters"]
        assert (dead["stage"], dead["messages"]) == ("assembler", 1)
        (incident,) = got["incidents"]
        assert incident["alert"] == "error-alert" and incident["undelivered"] == 0
        assert sum(r["attempts"] for r in got["delivery-attempts"]) >= 1

        # The CLI reads through the running worker's endpoint.
        out = cli(worker, "sql", queries["pass-rate-today"], "-f", "csv")
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0] == "rule,results,passed,failed,errors,pass_rate"
        shown = cli(worker, "traces", "show", "q010")
        assert shown.returncode == 0, shown.stderr
        assert "handle function · agent support" in shown.stdout and "search tool · agent researcher" in shown.stdout
        assert "◆ errors (error_spans): fail" in shown.stdout, shown.stdout
        assert "◆ judged (tests.integration.example_scorers:ReportsSpend): pass 1 — ok" in shown.stdout, shown.stdout
        listed = cli(worker, "traces", "list", "--failed-rule", "errors", "--agent", "support", "--since", "1h",
                     "-f", "json", "--limit", "100")
        assert listed.returncode == 0, listed.stderr
        import json

        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert sorted(r["trace_id"] for r in rows) == [t for t in failing if int(t[1:]) % 2 == 0]
        assert all("errors" in r["failed_rules"] for r in rows)
        missing = cli(worker, "traces", "show", "nope")
        assert missing.returncode == 1 and "not in storage" in missing.stderr
    finally:
        worker.stop()
