"""Fill what senders leave out, once the trace is whole: agent attribution and LLM cost.

OpenTelemetry instrumentations put `gen_ai.agent.name` on the agent's span only; here every span
under an agent span inherits it (the innermost agent wins), as our SDK does on the caller's side.
Cost comes from a price table (litellm's local cost map in the worker) when the sender gave
model and tokens but no cost.
"""

from __future__ import annotations

from typing import Any, Protocol

from pipeline.contracts.bounds import is_cost


class Prices(Protocol):
    def cost_usd(self, model: str, input_tokens: int, output_tokens: int) -> float | None: ...


def inherit_agents(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id = {s["span_id"]: s for s in spans}
    resolved: dict[str, tuple[str, str | None] | None] = {}

    def agent_of(span_id: str | None) -> tuple[str, str | None] | None:
        path: list[str] = []
        found: tuple[str, str | None] | None = None
        while span_id is not None and span_id in by_id and span_id not in path:  # `path`: bad input may loop
            if span_id in resolved:
                found = resolved[span_id]
                break
            path.append(span_id)
            span = by_id[span_id]
            if span.get("agent_name"):
                found = (span["agent_name"], span.get("agent_id"))
                break
            span_id = span.get("parent_span_id")
        for seen in path:
            resolved[seen] = found
        return found

    out = []
    for span in spans:
        if not span.get("agent_name"):
            inherited = agent_of(span.get("parent_span_id"))
            if inherited is not None:
                span = {**span, "agent_name": inherited[0], "agent_id": inherited[1]}
        out.append(span)
    return out


def fill_costs(spans: list[dict[str, Any]], prices: Prices) -> list[dict[str, Any]]:
    out = []
    for span in spans:
        model, tokens_in, tokens_out = span.get("model"), span.get("input_tokens"), span.get("output_tokens")
        if span.get("cost_usd") is None and model and (tokens_in is not None or tokens_out is not None):
            cost = prices.cost_usd(model, tokens_in or 0, tokens_out or 0)
            if is_cost(cost):  # a price table's odd answer (NaN, negative) is no cost, not a refused trace
                span = {**span, "cost_usd": cost}
        out.append(span)
    return out


def enrich_trace(payload: dict[str, Any], prices: Prices | None) -> dict[str, Any]:
    spans = inherit_agents(payload["spans"])
    if prices is not None:
        spans = fill_costs(spans, prices)
    payload["spans"] = spans
    return payload
