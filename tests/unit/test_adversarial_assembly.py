"""The assembly state machine under adversarial delivery: shuffled, duplicated and late spans, roots that
never arrive, hour-long traces. Driven the way the assembler drives it (worker/assembler.py): merge, set
the deadline in a DeadlineIndex, and on every tick pop what is due and ask `due_action`.
test_assembly.py has the single transitions; these tests run whole streams.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.assembly import AssemblyConfig, DeadlineIndex, close_trace, due_action, merge_spans
from pipeline.assembly.state import DueAction, State, deadline
from pipeline.contracts import Span, Trace

CFG = AssemblyConfig(quiet_period_s=2.0, idle_timeout_s=300.0, reopen_window_s=900.0)
T0 = 10_000.0


def make_span(span_id: str, parent: str | None, start: int) -> dict[str, Any]:
    model = Span(trace_id="t", span_id=span_id, parent_span_id=parent, name=f"op-{span_id}", start_ns=start,
                 end_ns=start + 5, project="bot")
    return model.model_dump(mode="json", exclude_none=True)


@dataclass
class Assembler:
    """One trace on one partition, with the assembler's loop around the pure functions."""

    cfg: AssemblyConfig = CFG
    state: State | None = None
    index: DeadlineIndex = field(default_factory=DeadlineIndex)
    emitted: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def receive(self, spans: list[dict[str, Any]], now: float, final: bool = False) -> None:
        self.state, _ = merge_spans(self.state, "t", 0, spans, final, now)
        self.index.set(0, "t", deadline(self.state, self.cfg))

    def tick(self, now: float) -> None:
        for trace_id in self.index.pop_due(0, now):
            assert self.state is not None and trace_id == "t"
            action = due_action(self.state, now, self.cfg)
            if action is None:
                self.index.set(0, "t", deadline(self.state, self.cfg))
            elif action == DueAction.FORGET:
                self.state = None
            else:
                self.emitted.append((now, close_trace(self.state, action, now)))
                self.index.set(0, "t", deadline(self.state, self.cfg))

    def traces(self) -> list[Trace]:
        return [Trace.model_validate(payload) for _, payload in self.emitted]


# -- a random trace, delivered shuffled, duplicated, in random batches, on time -------------------

@st.composite
def trees(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A root and up to 30 descendants, each child's parent drawn among the spans before it."""
    count = draw(st.integers(0, 30))
    spans = [make_span("root", None, 0)]
    for i in range(count):
        parent = spans[draw(st.integers(0, len(spans) - 1))]["span_id"]
        spans.append(make_span(f"s{i}", parent, draw(st.integers(0, 10**9))))
    return spans


@st.composite
def deliveries(draw: st.DrawFn, spans: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Every span at least once, some up to three times, shuffled, cut into batches."""
    copies = [s for s in spans for _ in range(draw(st.integers(1, 3)))]
    order = draw(st.permutations(copies))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=len(order))))
    return [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True) if order[a:b]]


@st.composite
def on_time_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[tuple[float, list[dict[str, Any]]]],
                                              list[list[float]]]:
    spans = draw(trees())
    batches = draw(deliveries(spans))
    # On time: each batch comes within the quiet period (once the root is in) or the idle timeout (before)
    # of the last batch that brought a new span; a batch of duplicates only does not count.
    arrivals: list[tuple[float, list[dict[str, Any]]]] = []
    ticks: list[list[float]] = []  # ticks in the gap before each arrival
    now = last_new = T0
    seen: set[str] = set()
    for i, batch in enumerate(batches):
        limit = CFG.quiet_period_s if "root" in seen else CFG.idle_timeout_s
        at = now if i == 0 else draw(st.floats(now, last_new + limit * 0.999))
        ticks.append([now + (at - now) * f for f in sorted(draw(st.lists(st.floats(0.0, 1.0), max_size=3)))])
        now = at
        arrivals.append((now, batch))
        if {s["span_id"] for s in batch} - seen:
            last_new = now
            seen |= {s["span_id"] for s in batch}
    return spans, arrivals, ticks


def last_new_arrival(arrivals: list[tuple[float, list[dict[str, Any]]]]) -> float:
    seen: set[str] = set()
    last = arrivals[0][0]
    for at, batch in arrivals:
        if {s["span_id"] for s in batch} - seen:
            last = at
            seen |= {s["span_id"] for s in batch}
    return last


@given(on_time_streams())
def test_any_order_and_duplication_closes_once_with_each_span_once(stream: Any) -> None:
    spans, arrivals, ticks = stream
    assembler = Assembler()
    for (at, batch), before in zip(arrivals, ticks, strict=True):
        for tick in before:
            assembler.tick(tick)
        assert assembler.emitted == [], "closed before the last on-time span"
        assembler.receive(batch, at)
    last = last_new_arrival(arrivals)  # the last on-time span: later batches held only duplicates
    assembler.tick(last + CFG.quiet_period_s * 0.999)
    assert assembler.emitted == []
    assembler.tick(max(last + CFG.quiet_period_s, arrivals[-1][0]))
    [trace] = assembler.traces()
    assert trace.version == 1 and trace.status == "complete" and trace.close_reason == "quiet_period"
    counts = Counter(s.span_id for s in trace.spans)
    assert counts == Counter(s["span_id"] for s in spans)  # every distinct span, exactly once
    assert max(counts.values()) == 1
    assert trace.root_span_id == "root"
    assert [s.start_ns for s in trace.spans] == sorted(s.start_ns for s in trace.spans)


@given(on_time_streams())
def test_a_final_marker_on_the_last_batch_closes_at_once_with_every_span(stream: Any) -> None:
    spans, arrivals, _ = stream
    assembler = Assembler()
    for i, (at, batch) in enumerate(arrivals):
        assembler.receive(batch, at, final=i == len(arrivals) - 1)
        if i < len(arrivals) - 1:
            assembler.tick(at)
            assert assembler.emitted == []
    assembler.tick(arrivals[-1][0])
    [trace] = assembler.traces()
    assert trace.close_reason == "final_marker"
    assert sorted(s.span_id for s in trace.spans) == sorted(s["span_id"] for s in spans)


@given(on_time_streams(), st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=4), min_size=1,
                                   max_size=4))
def test_late_spans_reopen_as_the_next_version_with_all_spans(stream: Any, waves: list[list[int]]) -> None:
    """After the close, waves of spans arrive (each wave after the previous version closed): a wave with a
    new span id reopens the trace as version + 1 holding every span so far; a wave of duplicates does not."""
    spans, arrivals, _ = stream
    assembler = Assembler()
    for at, batch in arrivals:
        assembler.receive(batch, at)
    now = arrivals[-1][0] + CFG.quiet_period_s
    assembler.tick(now)
    known = {s["span_id"] for s in spans}
    by_id = {s["span_id"]: s for s in spans}
    version = 1
    for wave in waves:
        now += 60.0  # well inside the reopen window
        batch = [by_id.get(f"s{n}") or make_span(f"late{n}", "root", 10**9 + n) for n in wave]
        new = {s["span_id"] for s in batch} - known
        assembler.receive(batch, now)
        now += CFG.quiet_period_s
        assembler.tick(now)
        if new:
            version += 1
            known |= new
        trace = assembler.traces()[-1]
        assert trace.version == version and len(assembler.emitted) == version
        assert sorted(s.span_id for s in trace.spans) == sorted(known)
    versions = [t.version for t in assembler.traces()]
    assert versions == list(range(1, version + 1))


# -- long and broken traces -----------------------------------------------------------------------

def test_a_root_that_never_arrives_closes_incomplete_only_after_the_idle_timeout() -> None:
    """Children arrive for eight hours, each within the idle timeout of the last: no close, then one
    incomplete close exactly idle_timeout_s after the last child, with every child."""
    assembler = Assembler()
    now = T0
    for i in range(100):
        assembler.receive([make_span(f"c{i}", "root", i)], now)
        assembler.tick(now + CFG.quiet_period_s)  # the quiet period does not apply without a root
        assembler.tick(now + CFG.idle_timeout_s - 1)
        assert assembler.emitted == []
        now += CFG.idle_timeout_s - 1
    last = now - (CFG.idle_timeout_s - 1)
    assert now - T0 > 8 * 3600
    assembler.tick(last + CFG.idle_timeout_s - 0.001)
    assert assembler.emitted == []
    assembler.tick(last + CFG.idle_timeout_s)
    [(closed_at, _)] = assembler.emitted
    [trace] = assembler.traces()
    assert closed_at == last + CFG.idle_timeout_s
    assert trace.status == "incomplete" and trace.close_reason == "idle_timeout" and trace.root_span_id is None
    assert len(trace.spans) == 100


def test_an_hour_long_trace_with_the_root_first_stays_open_while_spans_keep_coming() -> None:
    """The root arrives first (out of order), then a child every 1.5 s for an hour: never closed while
    they keep coming within the quiet period, closed once after the last, holding all of them."""
    assembler = Assembler()
    assembler.receive([make_span("root", None, 0)], T0)
    now = T0
    for i in range(2400):
        now += 1.5
        assembler.tick(now - 0.001)  # the tick just before each span is the closest call
        assembler.receive([make_span(f"c{i}", "root", i + 1)], now)
    assert now - T0 == 3600.0 and assembler.emitted == []
    assembler.tick(now + CFG.quiet_period_s - 0.001)
    assert assembler.emitted == []
    assembler.tick(now + CFG.quiet_period_s)
    [trace] = assembler.traces()
    assert trace.status == "complete" and len(trace.spans) == 2401 and trace.version == 1


def test_an_hour_long_trace_with_the_root_last_is_not_closed_early() -> None:
    """The usual order for a long agent run: children for an hour (gaps under the idle timeout, far over
    the quiet period), the root when the run ends."""
    assembler = Assembler()
    now = T0
    for i in range(30):
        assembler.receive([make_span(f"c{i}", "root", i + 1)], now)
        assembler.tick(now + 100)
        now += 120.0
    assembler.receive([make_span("root", None, 0)], now)
    assembler.tick(now + 1.0)
    assert assembler.emitted == []
    assembler.tick(now + CFG.quiet_period_s)
    [trace] = assembler.traces()
    assert trace.status == "complete" and len(trace.spans) == 31 and trace.start_ns == 0


def test_duplicates_alone_never_keep_a_trace_open() -> None:
    """A sender retrying the same batch every second does not postpone the close (a span id counts once)."""
    assembler = Assembler()
    batch = [make_span("root", None, 0), make_span("a", "root", 1)]
    assembler.receive(batch, T0)
    for i in range(1, 10):
        assembler.receive(batch, T0 + i * 0.25)
        assembler.tick(T0 + i * 0.25)
    [(closed_at, _)] = assembler.emitted
    assert closed_at == T0 + CFG.quiet_period_s  # while the retries were still coming
    [trace] = assembler.traces()
    assert len(trace.spans) == 2 and trace.version == 1
