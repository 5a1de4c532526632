"""A ledger of what was sent, to account for every span, trace, decision and score the pipeline stored.

Build traffic with `Ledger.traffic(...)`: M traces with known span counts (spans shuffled and split over
several messages, some messages sent twice), optionally mixed with poison messages (bad JSON, the wrong
schema, oversized payloads). After the pipeline has run, `ledger.account(query)` compares the store with
what the rules must have produced and returns every discrepancy as a sentence; an empty list means
nothing was lost, duplicated or silently dropped:

- every span stored once, every trace stored with all its spans;
- a decision for every (rule, trace), `scored` exactly for the sampled ones, `sampled_out` for the rest;
- exactly one current score per sampled (rule, trace), and no score for an unsampled one;
- every poison message a dead letter, and nothing else dead-lettered.

`bench/` uses the same class for its larger runs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.sampling import is_sampled
from tests.integration.harness import batch, span

Query = Callable[[str], list[list[Any]]]
POISON_KINDS = ("bad_json", "wrong_schema", "oversized")


@dataclass(frozen=True)
class LedgerRule:
    name: str
    sampling_rate: float = 1.0


@dataclass
class Ledger:
    rules: list[LedgerRule]
    spans: dict[str, int] = field(default_factory=dict)  # trace id -> spans sent
    poison: list[bytes] = field(default_factory=list)  # keys of the poison messages
    messages: list[tuple[bytes, bytes]] = field(default_factory=list)

    @classmethod
    def traffic(cls, rules: list[LedgerRule], traces: int, spans_per_trace: int, *, poison_rate: float = 0.0,
                oversized_bytes: int = 5 * 1024 * 1024, seed: int = 1, prefix: str = "L",
                spans_per_message: int = 500) -> Ledger:
        """`spans_per_message` caps a message as the SDK does for big traces (it splits under the limit)."""
        rng = random.Random(seed)
        ledger = cls(rules)
        groups: list[list[tuple[bytes, bytes]]] = []  # one trace's messages, in sending order
        for i in range(traces):
            trace_id = f"{prefix}{i:06d}"
            root = span(trace_id, f"{trace_id}-r", None, "handle", dur_ms=30)
            kids = [span(trace_id, f"{trace_id}-{j}", root["span_id"], f"tool{j % 3}", start_ms=j, span_type="tool",
                         status="error" if (i % 10 == 0 and j == 0) else "ok")
                    for j in range(spans_per_trace - 1)]
            spans = [root, *kids]
            rng.shuffle(spans)  # out of order: the root may come first or last
            cut = rng.randint(1, min(len(spans) - 1, spans_per_message)) if len(spans) > 1 else 1
            parts = [spans[:cut]] + [spans[k:k + spans_per_message] for k in range(cut, len(spans), spans_per_message)]
            group = [(trace_id.encode(), batch(trace_id, part, final=n == len(parts) - 1))
                     for n, part in enumerate(parts)]
            if rng.random() < 0.1:  # a part delivered twice: its spans must count once
                group.insert(1, group[0])
            groups.append(group)
            ledger.spans[trace_id] = len(spans)
        for k in range(round(traces * poison_rate)):
            kind = POISON_KINDS[k % len(POISON_KINDS)]
            key = f"poison-{kind}-{k}".encode()
            ledger.poison.append(key)
            groups.append([(key, _poison(kind, oversized_bytes))])
        # Traces interleaved at random; one trace's messages stay in sending order, as Kafka keeps them per key.
        while groups:
            pick = rng.randrange(len(groups))
            ledger.messages.append(groups[pick].pop(0))
            if not groups[pick]:
                groups[pick] = groups[-1]
                groups.pop()
        return ledger

    @property
    def total_spans(self) -> int:
        return sum(self.spans.values())

    def sampled(self) -> set[tuple[str, str]]:
        return {(r.name, t) for r in self.rules for t in self.spans if is_sampled(t, r.name, r.sampling_rate)}

    def account(self, query: Query, database: str = "evalstream") -> list[str]:
        """Every way the store differs from the ledger, as sentences; [] when everything is accounted for."""
        problems: list[str] = []
        ids = set(self.spans)

        stored = {t: n for t, n in query(f"SELECT trace_id, count() FROM {database}.spans FINAL GROUP BY trace_id")
                  if t in ids}
        if stored != self.spans:
            missing = {t: (self.spans[t], stored.get(t, 0)) for t in self.spans if stored.get(t, 0) != self.spans[t]}
            problems.append(f"span rows differ for {len(missing)} trace(s), e.g. {_some(missing)} (sent, stored)")
        total = sum(n for t, n in query(f"SELECT trace_id, count() FROM {database}.spans GROUP BY trace_id") if t in ids)
        if total < self.total_spans:
            problems.append(f"{self.total_spans - total} span(s) never stored")

        traces = {t: n for t, n in query(f"SELECT trace_id, span_count FROM {database}.traces_current") if t in ids}
        if traces != self.spans:
            problems.append(f"{len(ids - set(traces))} trace(s) not stored; "
                            f"{sum(1 for t in traces if traces[t] != self.spans[t])} with a wrong span count")

        sampled = self.sampled()
        decisions = {(r, t): o for r, t, o in query(f"SELECT rule, trace_id, outcome FROM {database}.decisions_current")
                     if t in ids}
        for rule in self.rules:
            for trace_id in ids:
                want = "scored" if (rule.name, trace_id) in sampled else "sampled_out"
                got = decisions.get((rule.name, trace_id))
                if got != want:
                    problems.append(f"decision for ({rule.name}, {trace_id}) is {got}, not {want}")
                    break  # one example per rule is enough to read

        scores = query(f"SELECT rule, trace_id, count() FROM {database}.scores_current GROUP BY rule, trace_id")
        current = {(r, t): n for r, t, n in scores if t in ids}
        if set(current) != sampled:
            problems.append(f"{len(sampled - set(current))} sampled (rule, trace) without a score, "
                            f"{len(set(current) - sampled)} unsampled with one")
        doubled = {k: n for k, n in current.items() if n != 1}
        if doubled:
            problems.append(f"{len(doubled)} (rule, trace) with more than one current score, e.g. {_some(doubled)}")
        errors = query(f"SELECT count() FROM {database}.scores_current WHERE status != 'scored'")[0][0]
        if errors:
            problems.append(f"{errors} score(s) are errors")

        letters = [k for (k,) in query(f"SELECT key FROM {database}.dead_letters FINAL")]
        poison = {k.decode() for k in self.poison}
        if set(letters) != poison or len(letters) != len(poison):
            problems.append(f"dead letters: {len(poison - set(letters))} poison message(s) not dead-lettered, "
                            f"{len([k for k in letters if k not in poison])} other dead letter(s): "
                            f"{sorted(set(letters) - poison)[:5]}")
        return problems


def _poison(kind: str, oversized_bytes: int) -> bytes:
    """Bad JSON; JSON that is not a SpanBatch; or a well-formed batch whose one span carries a payload over
    the message limit the test sets (EVALSTREAM_MAX_MESSAGE_BYTES)."""
    if kind == "bad_json":
        return b"\xff{not json"
    if kind == "wrong_schema":
        return orjson.dumps({"v": 1, "kind": "spans", "trace_id": "x", "spans": "nope"})
    huge = span("huge", "huge-r", None, "handle", inputs={"document": "x" * oversized_bytes})
    return batch("huge", [huge], final=True)


def _some(mapping: dict[Any, Any], n: int = 3) -> str:
    return ", ".join(f"{k}: {v}" for k, v in list(mapping.items())[:n])
