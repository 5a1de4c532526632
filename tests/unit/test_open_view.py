"""pipeline/assembly/open_view.py and a worker's GET /traces/open/<id>: what `why` says about a trace the
assembler still holds: what it waits for, until when, and how it will close."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from pipeline import topics
from pipeline.assembly import AssemblyConfig, close_trace, merge_spans
from pipeline.assembly.open_view import MAX_CALLS_SHOWN, lines, open_view
from pipeline.assembly.state import DueAction, compact
from pipeline.contracts.bounds import LOOKUP_TRACE_ID
from pipeline.metrics import Counters
from pipeline.worker.assembler import Assembler
from pipeline.worker.metrics_service import MetricsServer
from tests.unit.test_assembly_remote import CALL, CALLEE_ROOT, ROOT, span
from tests.unit.test_metrics import scrape

CFG = AssemblyConfig(quiet_period_s=2.0, idle_timeout_s=300.0, reopen_window_s=900.0, remote_wait_s=10.0)
T0 = 1_000.0


def text(view: dict[str, Any]) -> str:
    return "\n".join(lines(view, "host:1"))


def test_a_trace_without_its_root_waits_for_it_and_would_close_incomplete() -> None:
    state, _ = merge_spans(None, "t-1", 3, [span("a"), span("b")], False, T0)
    view = open_view(state, T0 + 10, CFG)
    assert view["open"] and view["spans"] == 2 and view["partition"] == 3
    assert view["waiting_for"] == [{"what": "root", "until_s": T0 + 300}]
    assert view["closes_at_s"] == T0 + 300 and view["closes_as"].startswith("incomplete")
    said = text(view)
    assert "is OPEN: 2 spans" in said and "root span" in said
    assert "closes in 290.0 s as incomplete" in said


def test_a_trace_with_a_root_waits_out_the_quiet_period() -> None:
    state, _ = merge_spans(None, "t-1", 0, [ROOT], False, T0)
    view = open_view(state, T0 + 0.5, CFG)
    assert view["waiting_for"] == [{"what": "quiet", "until_s": T0 + 2}]
    assert view["closes_as"].startswith("complete (quiet")
    assert "quiet period after its last span: in 1.5 s" in text(view)


def test_an_unanswered_remote_call_is_named_with_how_long_it_may_still_wait() -> None:
    state, _ = merge_spans(None, "t-1", 0, [CALL, ROOT], True, T0)  # final, but the callee has not sent
    view = open_view(state, T0 + 4, CFG)
    assert [w["what"] for w in view["waiting_for"]] == ["call"]
    (call,) = view["waiting_for"]
    assert call["span_id"] == "call" and call["name"] == "POST inventory" and call["until_s"] == T0 + 10
    assert view["closes_as"] == "complete, with a remote call unanswered"
    said = text(view)
    assert "remote call call (POST inventory), sent 4.0 s ago: at most in 6.0 s" in said

    state, _ = merge_spans(state, "t-1", 0, [CALLEE_ROOT], False, T0 + 5)  # answered: closes at once
    view = open_view(state, T0 + 5, CFG)
    assert view["waiting_for"] == [] and view["closes_as"].startswith("complete (its root's process")
    assert "now (due on the next tick)" in text(view)


def test_a_root_that_ended_with_its_process_still_busy_waits_for_final() -> None:
    root = {**ROOT, "spans_still_open": 2}
    state, _ = merge_spans(None, "t-1", 0, [root], False, T0)
    assert {"what": "final", "until_s": T0 + 10} in open_view(state, T0, CFG)["waiting_for"]


def test_calls_shown_are_bounded_and_the_rest_counted() -> None:
    calls = [span(f"c{i}", kind="client", name=f"call {i}", attributes={"server.address": f"svc{i}"})
             for i in range(MAX_CALLS_SHOWN + 5)]
    state, _ = merge_spans(None, "t-1", 0, [ROOT, *calls], True, T0)
    view = open_view(state, T0, CFG)
    assert len([w for w in view["waiting_for"] if w["what"] == "call"]) == MAX_CALLS_SHOWN
    assert view["calls_not_shown"] == 5 and "and 5 more remote calls" in text(view)


def test_a_closed_state_says_until_when_a_late_span_reopens_it() -> None:
    state, _ = merge_spans(None, "t-1", 0, [ROOT], True, T0)
    close_trace(state, DueAction.CLOSE_FINAL, T0 + 1)
    view = open_view(state, T0 + 11, CFG)
    assert not view["open"] and view["forget_at_s"] == T0 + 901
    assert "closed 10.0 s ago with 1 spans; a late span re-opens it as version 2 until in 890.0 s" in text(view)


def test_the_view_carries_no_span_content() -> None:
    secret = span("s", name="lookup", attributes={"secret": "hunter2"}, input={"q": "hunter2"})
    state, _ = merge_spans(None, "t-1", 0, [secret], False, T0)
    assert "hunter2" not in json.dumps(open_view(state, T0, CFG))


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("assembler", [True, False])
async def test_the_worker_endpoint_answers_for_what_it_holds_and_refuses_bad_ids(assembler: bool) -> None:
    state, _ = merge_spans(None, "t-1", 0, [span("a")], False, T0)
    held = {"t-1": open_view(state, T0, CFG)}
    server = MetricsServer(Counters(), port=0, open_trace=held.get if assembler else None)
    url = (await server.start()).removesuffix("/metrics")
    try:
        status, body = await asyncio.to_thread(_get, f"{url}/traces/open/t-1")
        if assembler:
            assert status == 200 and body["held"] and body["spans"] == 1 and body["worker"]
        else:
            assert status == 404 and body == {"held": False, "assembler": False}
        assert await asyncio.to_thread(_get, f"{url}/traces/open/t-2") == (404, {"held": False,
                                                                                 "assembler": assembler})
        status, body = await asyncio.to_thread(_get, f"{url}/traces/open/t%27%20OR%201=1")
        assert status == 400 and body == {"error": "not a trace id"}
    finally:
        await server.stop()


def test_the_assembler_answers_only_for_partitions_it_owns() -> None:
    owned = {TP(topics.SPANS, 2), TP(topics.JOBS, 1)}
    ctx = SimpleNamespace(assembly=CFG, app=SimpleNamespace(assignor=SimpleNamespace(assigned_actives=lambda: owned)))
    table = {"mine": merge_spans(None, "mine", 2, [span("a")], False, T0)[0],
             "standby": merge_spans(None, "standby", 1, [span("b")], False, T0)[0]}
    assembler = Assembler(ctx, table)  # type: ignore[arg-type]
    view = assembler.open_trace("mine")
    assert view is not None and view["trace_id"] == "mine" and view["open"]
    assert assembler.open_trace("standby") is None  # another worker's partition: its copy here may be behind
    assert assembler.open_trace("unknown") is None


def test_a_reopened_compact_state_counts_its_stored_spans_and_waits_for_storage() -> None:
    state, _ = merge_spans(None, "t-1", 0, [ROOT, span("a")], True, T0)
    close_trace(state, DueAction.CLOSE_FINAL, T0 + 1)
    compact(state)  # storage holds version 1's spans; the state keeps their ids
    state, _ = merge_spans(state, "t-1", 0, [span("late")], False, T0 + 5)
    view = open_view(state, T0 + 5, CFG)
    assert view["open"] and view["version"] == 2 and view["spans"] == 3  # two stored, one new
    assert {"what": "storage"} in view["waiting_for"] and view["closes_after_storage"]
    assert "closes once storage answers" in text(view)


def test_only_a_whole_trace_id_is_looked_up() -> None:
    assert LOOKUP_TRACE_ID.match("4bf92f3577b34da6a3ce929d0e0e4736")
    for bad in ("abc\n", "a b", "x' OR '1'='1", "", "a" * 129, "../etc"):
        assert not LOOKUP_TRACE_ID.match(bad), bad


def test_the_assembler_reports_what_it_holds_on_its_own_partitions() -> None:
    ctx = SimpleNamespace(assembly=CFG, counters=Counters(), app=SimpleNamespace(assignor=SimpleNamespace(
        assigned_actives=lambda: {TP(topics.SPANS, 2)})))
    old, _ = merge_spans(None, "old", 2, [span("a")], False, T0)
    closed, _ = merge_spans(None, "closed", 2, [ROOT], True, T0)
    close_trace(closed, DueAction.CLOSE_FINAL, T0 + 1)
    table = {"old": old, "new": merge_spans(None, "new", 2, [span("b")], False, time.time())[0], "closed": closed,
             "standby": merge_spans(None, "standby", 1, [span("c")], False, T0 - 100)[0]}
    Assembler(ctx, table).report_held()  # type: ignore[arg-type]
    got = scrape(ctx.counters)
    assert got["evalstream_assembly_open_traces"] == {(): 2}  # not the standby copy of partition 1
    assert got["evalstream_assembly_closed_kept"] == {(): 1}
    assert abs(got["evalstream_assembly_oldest_open_seconds"][()] - (time.time() - T0)) < 5  # "old", not standby
