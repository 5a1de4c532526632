"""A small multi-agent application instrumented with the SDK: a planner delegating to a
researcher and a task agent, each calling tools. Some runs are slow, fail or loop."""

from __future__ import annotations

import random
import time

from pipeline.sdk import Tracer

TURNS = 6  # requests per conversation


class ToolError(RuntimeError):
    pass


def build(tracer: Tracer):
    @tracer.observe(span_type="tool")
    def web_search(query: str) -> list[str]:
        time.sleep(0.002)
        return [f"result for {query} #{i}" for i in range(3)]

    @tracer.observe(span_type="tool")
    def fetch_page(url: str, fail: bool = False) -> str:
        if fail:
            raise ToolError(f"HTTP 503 from {url}")
        return f"<html>{url}</html>"

    @tracer.observe(span_type="tool")
    def create_ticket(title: str) -> dict:
        return {"id": random.randint(1000, 9999), "title": title}

    @tracer.observe(span_type="llm")
    def call_llm(prompt: str, slow: bool = False) -> str:
        with tracer.span("chat.completions", "llm") as span:
            time.sleep(0.3 if slow else 0.005)
            span.record_llm("gpt-4o-mini", input_tokens=len(prompt) // 4 + 20, output_tokens=42, cost_usd=0.00004)
        return f"answer to: {prompt[:40]}"

    @tracer.agent("researcher")
    def researcher(question: str, fail: bool, loop: bool) -> str:
        hits = web_search(question)
        if loop:
            for _ in range(4):  # stuck agent: the same call again and again
                web_search(question)
        try:
            fetch_page("https://example.com/a", fail=fail)
        except ToolError:
            pass  # the agent swallows the failure and carries on: only the trace shows it
        return call_llm(f"summarize {hits}")

    @tracer.agent("task-agent")
    def task_agent(summary: str) -> dict:
        return create_ticket(summary[:30])

    @tracer.observe(span_type="tool")
    def reply_to_customer(question: str, ticket: dict) -> str:
        # Some replies forget what the customer asked about: the package-inquiry judge catches those.
        response = (f"Your package is on its way; ticket {ticket['id']} tracks it." if ticket["id"] % 3
                    else f"Thanks for reaching out! Ticket {ticket['id']} is open.")
        tracer.async_evaluate("package_inquiry", {"request": question, "response": response}, sampling_rate=0.95)
        return response

    @tracer.agent("planner")
    def planner(question: str, *, slow: bool = False, fail: bool = False, loop: bool = False,
                last_turn: bool = False) -> dict:
        if last_turn:
            tracer.end_session()  # the customer said goodbye: the conversation closes with this turn
        plan = call_llm(f"plan: {question}", slow=slow)
        summary = researcher(question, fail, loop)
        ticket = task_agent(summary)
        return {"plan": plan, "ticket": ticket, "reply": reply_to_customer(question, ticket)}

    return planner


def run_healthy(tracer: Tracer, traces: int, first: int = 0) -> None:
    """The app after the incident: the same requests, and every tool works."""
    planner = build(tracer)
    for i in range(first, first + traces):
        planner(f"customer question {i}: where is my package?")


def run(tracer: Tracer, traces: int, seed: int = 7) -> dict[str, int]:
    """Run the planner `traces` times; returns how many runs of each kind were made."""
    planner = build(tracer)
    rng = random.Random(seed)
    kinds = {"ok": 0, "slow": 0, "tool_error": 0, "loop": 0}
    for i in range(traces):
        kind = rng.choices(list(kinds), weights=[6, 1, 2, 2])[0]
        kinds[kind] += 1
        # Every TURNS requests are the turns of one customer's conversation (a session).
        with tracer.session(f"demo-conversation-{i // TURNS + 1}"):
            planner(f"customer question {i}: where is my package?", slow=kind == "slow", fail=kind == "tool_error",
                    loop=kind == "loop", last_turn=i % TURNS == TURNS - 1 or i == traces - 1)
    # One trace whose root never ends (the process "crashed" mid-request): closed as incomplete.
    root = tracer.start_span("planner", "agent", parent=None)
    tracer.start_span("web_search", "tool", parent=root).end()
    return kinds
