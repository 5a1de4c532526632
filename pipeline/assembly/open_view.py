"""What a trace the assembler still holds is waiting for: a bounded summary of its state (no span content, only
ids, names and times), served by the worker that holds it (`GET /traces/open/<id>`) and put in words by
`evalstream why` (`lines`)."""

from __future__ import annotations

from typing import Any

from pipeline.assembly.state import AssemblyConfig, DueAction, State, deadline, due_action

MAX_CALLS_SHOWN = 20

_CLOSES_AS = {
    DueAction.CLOSE_COMPLETE: "complete (quiet period over)",
    DueAction.CLOSE_FINAL: "complete (its root's process said final)",
    DueAction.CLOSE_INCOMPLETE: "incomplete (no root span by then)",
    DueAction.CLOSE_REMOTE_WAIT: "complete, with a remote call unanswered",
}


def open_view(state: State, now: float, cfg: AssemblyConfig) -> dict[str, Any]:
    """The state in fields a client can show: what it holds, what it waits for and until when, and how it will
    close if nothing more arrives. Times are Unix seconds."""
    view: dict[str, Any] = {
        "trace_id": state["trace_id"], "version": state["version"], "partition": state.get("partition"),
        "open": bool(state["open"]), "spans": len(state["spans"].keys() | set(state.get("span_ids", ()))),
        "first_seen_s": state.get("first_seen_s"), "last_seen_s": state.get("last_seen_s"), "now_s": now,
    }
    if state.get("reopened_by"):
        view["reopened_by"] = dict(state["reopened_by"])
    at = deadline(state, cfg)
    if not state["open"]:
        view.update(closed_at_s=state.get("closed_at_s"), forget_at_s=at)
        return view
    waiting: list[dict[str, Any]] = []
    if not state["root_ended"]:
        waiting.append({"what": "root", "until_s": at})
    else:
        if not state["final"]:
            waiting.append({"what": "quiet", "until_s": state["last_seen_s"] + cfg.quiet_period_s})
        if "awaiting_final_s" in state:
            waiting.append({"what": "final", "until_s": state["awaiting_final_s"] + cfg.remote_wait_s})
        calls = state.get("calls") or {}
        for span_id, since in sorted(calls.items(), key=lambda item: item[1])[:MAX_CALLS_SHOWN]:
            span = state["spans"].get(span_id) or {}
            waiting.append({"what": "call", "span_id": span_id, "name": span.get("name", ""), "since_s": since,
                            "until_s": since + cfg.remote_wait_s})
        if len(calls) > MAX_CALLS_SHOWN:
            view["calls_not_shown"] = len(calls) - MAX_CALLS_SHOWN
    if state.get("stored_spans_of") or state.get("needs_history"):
        waiting.append({"what": "storage"})
    action = due_action(state, at, cfg)
    view.update(waiting_for=waiting, closes_at_s=at, closes_after_storage=bool(
        state.get("stored_spans_of") or state.get("needs_history")),
        closes_as=_CLOSES_AS.get(action, "") if action is not None else "")
    return view


def lines(view: dict[str, Any], worker: str) -> list[str]:
    """The view in words, relative to when it was taken."""
    now = float(view.get("now_s") or 0)

    def ago(t: Any) -> str:
        return f"{max(0.0, now - float(t)):.1f} s ago"

    def within(t: Any) -> str:
        left = float(t) - now
        return f"in {left:.1f} s" if left > 0 else "now (due on the next tick)"

    head = f"Held by worker {worker}, partition {view.get('partition')}: version {view['version']}"
    if not view["open"]:
        return [(f"{head}, closed {ago(view['closed_at_s'])} with {view['spans']} spans; a late span re-opens "
                f"it as version {view['version'] + 1} until {within(view['forget_at_s'])}.")]
    out = [(f"{head} is OPEN: {view['spans']} spans, first {ago(view['first_seen_s'])}, "
           f"last {ago(view['last_seen_s'])}.")]
    if view.get("reopened_by"):
        late = view["reopened_by"]
        out.append(f"  re-opened by span {late.get('span_id')} ({late.get('name') or '?'})")
    for wait in view.get("waiting_for", []):
        what = wait["what"]
        if what == "root":
            out.append("  waiting for its root span (a span without a parent): none has arrived; without it, it "
                       "closes as incomplete once no span came for the idle timeout")
        elif what == "quiet":
            out.append(f"  waiting out the quiet period after its last span: {within(wait['until_s'])}")
        elif what == "final":
            out.append(f"  waiting for the root's process to finish its other spans: at most "
                       f"{within(wait['until_s'])}")
        elif what == "call":
            out.append(f"  waiting for the callee's spans of remote call {wait['span_id']} "
                       f"({wait.get('name') or '?'}), sent {ago(wait['since_s'])}: at most {within(wait['until_s'])}")
        elif what == "storage":
            out.append("  reading its earlier version back from storage before it closes; while storage does "
                       "not answer it is asked again every few seconds, then closes with what it has")
    if view.get("calls_not_shown"):
        out.append(f"  and {view['calls_not_shown']} more remote calls")
    if view.get("closes_as"):
        when = "once storage answers" if view.get("closes_after_storage") else within(view["closes_at_s"])
        out.append(f"  closes {when} as {view['closes_as']}, unless more spans arrive.")
    return out
