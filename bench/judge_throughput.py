"""Judges: sustained judgments/s at a given concurrency, and what the agent judge sends for a large trace.

    .venv/bin/python bench/judge_throughput.py [--concurrency 32] [--judgments 640] [--latency 0.5]
                                               [--spans 500]

(a) Throughput. The local OpenAI-compatible server runs in its own process and answers every request after
    `--latency` seconds. This process runs `--judgments` llm_criteria jobs through the pipeline's own
    `run_job` (asyncio tasks, at most `--concurrency` at once, as the scorer worker does) with litellm's real
    client. Ideal: concurrency / latency judgments/s. Target: >= 0.9x the ideal.
(b) Tokens. The agent judge on a `--spans`-span trace, investigating it the way a judge model would
    (overview, a regex search, reading the failed span and its caller, then the verdict). Tokens sent =
    every call's messages plus tool schemas (4 chars per token), against the tokens of the whole trace
    rendered inline. Target: <= 15%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.contracts import Example, ScoreJob, ScoreStatus, Trace
from pipeline.embedded import free_port
from pipeline.scoring.runner import RetryPolicy, ScorerCache, run_job
from scorers.judges.agent_judge import AgentJudge
from scorers.judges.client import JudgeClient
from scorers.judges.config import SEND_SPACING_S
from scorers.judges.limits import ModelLimits
from scorers.judges.span_tree import SpanTree
from scorers.judges.tokens import estimate_request_tokens, estimate_tokens
from scorers.judges.trace_toolbox import TOOL_SCHEMAS
from scorers.judges.trace_view import render_skeleton, render_trace
from scorers.registry import ScorerResolver
from tests.support.judge_traces import agent_trace
from tests.support.openai_server import OpenAIServer, Reply

MODEL = "openai/gpt-4o-mini"
CRITERIA = ["The reply answers the question", "The reply is polite", "The reply states no invented facts"]


def start_server(latency: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.openai_server", "--port", str(port),
                             "--latency", str(latency)], cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the test server did not start")


async def throughput(base_url: str, concurrency: int, judgments: int, spacing_s: float) -> tuple[float, float, int]:
    """(judgments/s, CPU seconds of this process, failed jobs) for `judgments` jobs at `concurrency`."""
    client = JudgeClient(default_limits=ModelLimits(max_concurrency=concurrency), send_spacing_s=spacing_s)
    params = {"criteria": CRITERIA, "model": MODEL, "api_base": base_url, "api_key": "test"}
    trace = Trace(trace_id="bench", version=1, status="complete", close_reason="quiet_period")
    cache = ScorerCache(ScorerResolver(judge_client=client))  # every judge it builds shares the client
    policy = RetryPolicy(timeout_s=60)

    def job(i: int) -> ScoreJob:
        # distinct examples: the judge client's cache must not answer for the server
        return ScoreJob(job_id=f"j{i}", rule="bench", scorer="scorers.judges.llm_judge:CriteriaJudge",
                        params=params, trace_id=trace.trace_id, trace_version=1,
                        example=Example(inputs=f"Question {i}: how long do refunds take?",
                                        outputs=f"Answer {i}: five business days."))

    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> bool:
        async with gate:
            outcome = await run_job(job(i), trace, cache, policy)
        return outcome.result.status is ScoreStatus.SCORED

    await asyncio.gather(*(one(-1 - i) for i in range(concurrency)))  # warm-up: imports, connections
    cpu, started = time.process_time(), time.perf_counter()
    ok = await asyncio.gather(*(one(i) for i in range(judgments)))
    elapsed = time.perf_counter() - started
    return judgments / elapsed, time.process_time() - cpu, ok.count(False)


def investigation(trace: Trace) -> Any:
    """What a judge model would do with the skeleton: overview, search, read the failure and its caller."""
    tree = SpanTree(trace)
    failed = next(s for s in trace.spans if s.status == "error")
    siblings = tree.children_of(failed.parent_span_id or "")
    caller = siblings[siblings.index(failed) - 1]
    steps = [
        ("get_trace_info", {}),
        ("search_trace", {"pattern": "timed out|error|exception", "max_matches": 10}),
        ("get_spans", {"span_ids": [tree.short_id(caller), tree.short_id(failed)]}),
    ]

    def respond(body: dict[str, Any]) -> Reply:
        done = sum(1 for m in body["messages"] if m.get("role") == "tool")
        if done < len(steps):
            name, args = steps[done]
            return Reply(tool_calls=[{"name": name, "arguments": json.dumps(args)}])
        verdict = {"criteria": {"c1": {"reason": f"fetch_page {tree.short_id(failed)} timed out", "verdict": "false"}},
                   "summary": "one tool call failed"}
        return Reply(tool_calls=[{"name": "submit_verdicts", "arguments": json.dumps(verdict)}])

    return respond


def without_repeats(trace: Trace) -> Trace:
    """The same trace with every span name made unique, so the skeleton can fold nothing (the worst case)."""
    return trace.model_copy(update={"spans": [
        s.model_copy(update={"name": f"{s.name}_{i}"}) for i, s in enumerate(trace.spans)]})


async def agent_tokens(trace: Trace) -> dict[str, Any]:
    client = JudgeClient()
    with OpenAIServer() as server:
        server.respond_with(investigation(trace))
        judge = AgentJudge(instructions="Did every tool call in {trace} succeed, and did the agent handle failures?",
                           criteria=["Every tool call succeeded"], model=MODEL, api_base=server.base_url,
                           api_key="test", client=client)
        score = await judge.run(trace)
        served_prompt = sum(c["input_tokens"] for c in score.metadata["judge"]["calls"])
    calls = list(client.history)  # whole messages (the score's metadata caps them)
    schemas = [*TOOL_SCHEMAS, judge.format.tool()]
    sent = sum(estimate_request_tokens(c.messages, schemas) for c in calls)
    inline = estimate_tokens(render_trace(trace))
    return {"inline_tokens": inline, "skeleton_tokens": estimate_tokens(
        render_skeleton(trace)), "calls": len(calls), "sent_tokens": sent, "served_prompt_tokens": served_prompt,
        "verdict": score.passed, "mode": score.metadata["trace_view"]["mode"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--judgments", type=int, default=640)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--spans", type=int, default=500)
    parser.add_argument("--spacing-ms", type=float, nargs="*", default=[SEND_SPACING_S * 1000, 0.0],
                        help="the judge client's send spacing; each value is one throughput run")
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    proc, base_url = start_server(args.latency)
    runs = []
    try:
        for spacing_ms in args.spacing_ms:
            runs.append((spacing_ms, *asyncio.run(throughput(base_url, args.concurrency, args.judgments,
                                                             spacing_ms / 1000))))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    ideal = args.concurrency / args.latency
    trace = agent_trace(args.spans)
    variants = [("agent loop", asyncio.run(agent_tokens(trace))),
                ("no repeats", asyncio.run(agent_tokens(without_repeats(trace))))]

    print(f"(a) throughput: {args.judgments} llm_criteria judgments per run, concurrency {args.concurrency}, "
          f"server latency {args.latency * 1000:.0f} ms")
    for spacing_ms, rate, cpu, failed in runs:
        print(f"    send spacing {spacing_ms:4.1f} ms: sustained {rate:6.1f} judgments/s | ideal {ideal:6.1f} | "
              f"ratio {rate / ideal:.3f} (target >= 0.9) | CPU {cpu / (args.judgments / rate) * 100:.0f}% of a core"
              f" | {failed} failed")
    print(f"(b) agent judge on a {len(trace.spans)}-span trace: tokens sent over all calls (messages + tool "
          f"schemas) against the whole trace inline")
    for name, tokens in variants:
        print(f"    {name:10s}: {tokens['mode']}, {tokens['calls']} calls, skeleton {tokens['skeleton_tokens']:5d} | "
              f"sent {tokens['sent_tokens']:6d} | inline {tokens['inline_tokens']:6d} | "
              f"ratio {tokens['sent_tokens'] / tokens['inline_tokens']:.3f} (target <= 0.15) | "
              f"server-counted prompt tokens {tokens['served_prompt_tokens']} | passed={tokens['verdict']}")


if __name__ == "__main__":
    main()
