"""pipeline/assembly/enrich: agent attribution for spans that did not carry it, and LLM cost."""

from __future__ import annotations

from typing import Any

from pipeline.assembly.enrich import enrich_trace, fill_costs, inherit_agents
from pipeline.pricing import LiteLLMPrices


def span(span_id: str, parent: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"span_id": span_id, "parent_span_id": parent, "name": span_id, **extra}


def test_spans_inherit_the_nearest_agent_above_them() -> None:
    spans = [span("root", agent_name="planner", agent_id="p1"), span("plan-llm", "root"),
             span("research", "root", agent_name="researcher", agent_id="r1"), span("search", "research"),
             span("fetch", "search"), span("orphan", "missing"), span("own", "research", agent_name="critic")]
    by_name = {s["name"]: s for s in inherit_agents(spans)}
    assert (by_name["plan-llm"]["agent_name"], by_name["plan-llm"]["agent_id"]) == ("planner", "p1")
    assert (by_name["fetch"]["agent_name"], by_name["fetch"]["agent_id"]) == ("researcher", "r1")
    assert by_name["own"]["agent_name"] == "critic"
    assert "agent_name" not in by_name["orphan"]
    assert "agent_name" not in spans[1]  # the input is not modified


def test_a_parent_cycle_in_bad_input_does_not_hang() -> None:
    assert inherit_agents([span("a", "b"), span("b", "a")])[0].get("agent_name") is None


class FixedPrices:
    def cost_usd(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        return None if model == "mystery" else input_tokens * 1e-6 + output_tokens * 2e-6


def test_costs_are_filled_only_where_missing() -> None:
    spans = [span("a", model="gpt", input_tokens=100, output_tokens=10),
             span("b", model="gpt", input_tokens=1, output_tokens=1, cost_usd=0.5),
             span("c", model="mystery", input_tokens=1, output_tokens=1), span("d")]
    out = {s["span_id"]: s.get("cost_usd") for s in fill_costs(spans, FixedPrices())}
    assert out == {"a": 100 * 1e-6 + 10 * 2e-6, "b": 0.5, "c": None, "d": None}


def test_litellm_prices_come_from_the_local_cost_map() -> None:
    prices = LiteLLMPrices()
    cost = prices.cost_usd("gpt-4o-mini", 1_000_000, 0)
    assert cost is not None and 0.01 < cost < 10
    assert prices.cost_usd("no-such-model-xyz", 10, 10) is None


def test_enrich_trace_applies_both() -> None:
    payload = {"spans": [span("r", agent_name="a"), span("l", "r", model="gpt", input_tokens=1, output_tokens=0)]}
    out = enrich_trace(payload, FixedPrices())["spans"]
    assert out[1]["agent_name"] == "a" and out[1]["cost_usd"] == 1e-6
