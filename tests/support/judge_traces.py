"""Deterministic agent traces for judge tests and benches: a planner delegating to a researcher that loops
over llm -> tool calls, with retrieval, realistic payload sizes and (optionally) one failed tool call."""

from __future__ import annotations

import random
from typing import Any

from pipeline.contracts import ErrorInfo, Span, Trace

MS = 1_000_000
FAILED_URL = "https://docs.example.com/refunds/eu"
FAILURE_MESSAGE = "upstream timed out after 30s while fetching " + FAILED_URL


class _Builder:
    def __init__(self, trace_id: str, seed: int) -> None:
        self.trace_id = trace_id
        self.rng = random.Random(seed)
        self.spans: list[Span] = []
        self.clock = 0

    def span(self, name: str, span_type: str, parent: Span | None, *, ms: int, agent: str | None = None,
             inputs: Any = None, outputs: Any = None, **fields: Any) -> Span:
        start = self.clock
        self.clock += ms * MS
        span = Span(trace_id=self.trace_id, span_id=f"{self.rng.getrandbits(64):016x}",
                    parent_span_id=parent.span_id if parent else None, name=name, span_type=span_type,
                    start_ns=start, end_ns=start + ms * MS, status=fields.pop("status", "ok"), agent_name=agent,
                    inputs=inputs, outputs=outputs, project="support-bot", **fields)
        self.spans.append(span)
        return span

    def text(self, chars: int, topic: str) -> str:
        words = ["refund", "policy", "order", "customer", "shipping", "EU", "days", "receipt", "return", topic]
        out: list[str] = []
        size = 0
        while size < chars:
            word = self.rng.choice(words)
            out.append(word)
            size += len(word) + 1
        return " ".join(out)[:chars]


def agent_trace(spans: int = 300, *, payload_chars: int = 600, failed_tool: bool = True, seed: int = 7,
                trace_id: str = "7f3a9c1e5b2d4f60a1b2c3d4e5f60718") -> Trace:
    """A trace of `spans` spans (at least 6): root, plan, retrieval, researcher loop of llm -> tool, answer."""
    b = _Builder(trace_id, seed)
    question = "Can I get a refund on an order shipped to Germany 40 days ago?"
    root = b.span("support_request", "agent", None, ms=0, agent="planner", inputs={"question": question})
    plan = b.span("plan", "llm", root, ms=400, agent="planner", model="gpt-4o-mini", input_tokens=350,
                  output_tokens=60, inputs={"messages": [{"role": "user", "content": question}]},
                  outputs="1. look up the refund policy 2. check the EU rules 3. answer")
    b.span("search_kb", "retriever", root, ms=80, agent="planner", inputs={"query": "refund policy EU"},
           outputs=[{"doc": "refunds.md", "text": "Orders may be refunded within 30 days of delivery. "
                     "EU customers may withdraw within 14 days."}])
    researcher = b.span("research", "agent", root, ms=0, agent="researcher", inputs={"task": plan.outputs})
    remaining = max(1, spans - 5)
    failed_at = (remaining // 2) // 2 * 2 if failed_tool else -1
    for i in range(remaining // 2):
        context = b.text(payload_chars, f"step{i}")
        b.span("call_llm", "llm", researcher, ms=300 + i % 7 * 40, agent="researcher", model="gpt-4o-mini",
               input_tokens=payload_chars // 4, output_tokens=40,
               inputs={"messages": [{"role": "system", "content": "You research refund questions."},
                                    {"role": "user", "content": context}]},
               outputs={"tool_call": {"name": "fetch_page", "arguments": {"url": f"https://docs.example.com/p/{i}"}}})
        if 2 * i == failed_at:
            b.span("fetch_page", "tool", researcher, ms=30_000, agent="researcher", inputs={"url": FAILED_URL},
                   status="error", error=ErrorInfo(type="TimeoutError", message=FAILURE_MESSAGE))
        else:
            b.span("fetch_page", "tool", researcher, ms=50 + i % 5 * 10, agent="researcher",
                   inputs={"url": f"https://docs.example.com/p/{i}"}, outputs=b.text(payload_chars, f"page{i}"))
    if remaining % 2:
        b.span("log_result", "function", researcher, ms=2, agent="researcher", inputs={"pages": remaining // 2})
    answer = "Orders can be refunded within 30 days of delivery, so a 40-day-old order is not eligible."
    b.span("write_answer", "llm", root, ms=500, agent="planner", model="gpt-4o-mini", input_tokens=900,
           output_tokens=80, inputs={"notes": b.text(payload_chars, "notes")}, outputs=answer)
    root_end = b.clock
    spans_out = [s.model_copy(update={"end_ns": root_end}) if s.span_id in (root.span_id, researcher.span_id)
                 else s for s in b.spans]
    rootspan = spans_out[0].model_copy(update={"outputs": {"answer": answer}})
    spans_out[0] = rootspan
    return Trace(trace_id=trace_id, version=1, project="support-bot", status="complete",
                 close_reason="quiet_period", root_span_id=root.span_id, name=root.name, start_ns=0,
                 end_ns=root_end, closed_at_ns=root_end, spans=spans_out)
