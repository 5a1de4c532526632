"""Sessions in chDB: what the sink stores from the sessions, scores and decisions topics, read back by
`evalstream sessions show | list` and by a session scorer (a worker's Reader), through the query endpoint of
the process that owns chDB (as while the pipeline runs)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
S = 10**9


def turn_trace(n: int, session_id: str, question: str, answer: str, *, end: bool = False) -> Any:
    from pipeline.contracts import Span, Trace

    start = 1_700_000_000 * S + n * 60 * S
    tid = f"{session_id}-t{n}"
    root = Span(trace_id=tid, span_id=f"{tid}-root", name="handle", start_ns=start, end_ns=start + 2 * S,
                status="ok", session_id=session_id, agent_name="support", project="bot",
                inputs={"message": question}, outputs={"answer": answer},
                attributes={"evalstream.session.end": True} if end else {})
    llm = Span(trace_id=tid, span_id=f"{tid}-llm", parent_span_id=root.span_id, name="chat", span_type="llm",
               start_ns=start + S, end_ns=start + S + 500_000_000, model="gpt-4o-mini", cost_usd=0.001,
               project="bot", agent_name="support")
    return Trace(trace_id=tid, version=1, project="bot", status="complete", close_reason="quiet_period",
                 root_span_id=root.span_id, name="handle", start_ns=start, end_ns=start + 2 * S,
                 closed_at_ns=start + 3 * S, spans=[root, llm])


def messages() -> list[tuple[str, bytes]]:
    """chat-1: closed as v1 after two turns (its open snapshots redelivered after the close), then
    re-opened as v2 by a third turn. chat-2: open, a look already failed. chat-3: closed, all good."""
    from pipeline import topics
    from pipeline.contracts import (
        DecisionBatch,
        ScoreResult,
        ScoreResultBatch,
        Session,
        SessionDecision,
        encode,
    )
    from pipeline.contracts.transcript import turn_from_trace

    traces = {
        "chat-1": [turn_trace(1, "chat-1", "I was charged twice", "Let me check."),
                   turn_trace(2, "chat-1", "Any news?", "Still checking."),
                   turn_trace(3, "chat-1", "Hello again?", "Refund issued.")],
        "chat-2": [turn_trace(1, "chat-2", "Reset my password", "I cannot do that.")],
        "chat-3": [turn_trace(1, "chat-3", "Opening hours?", "9 to 5.", end=True)],
    }
    turns = {sid: [turn_from_trace(t) for t in ts] for sid, ts in traces.items()}

    def session(sid: str, version: int, n: int, status: str, reason: str | None = None) -> bytes:
        ts = turns[sid][:n] if version == 1 else turns[sid]
        return encode(Session(session_id=sid, version=version, project="bot", status=status, close_reason=reason,
                              started_ns=ts[0].started_ns, ended_ns=ts[-1].ended_ns,
                              closed_at_ns=ts[-1].ended_ns + S, turns=ts))

    def result(sid: str, rule: str, version: int, turn: int, final: bool, passed: bool | None,
               reason: str, status: str = "scored") -> ScoreResult:
        latest = turns[sid][turn - 1]
        return ScoreResult(
            job_id=f"{sid}-{rule}-{version}-{'final' if final else turn}", rule=rule, scorer="goal_judge",
            trace_id=latest.trace_id, trace_version=1, project="bot", status=status, passed=passed, reason=reason,
            value=None if passed is None else float(passed), session_id=sid, session_version=version, turn=turn,
            final=final, scored_at_ns=latest.ended_ns + 2 * S,
            **({"error_type": "TimeoutError", "error_message": "judge took 30 s"} if status == "error" else {}))

    from pipeline.contracts import TraceBatch

    out = [(topics.TRACES, encode(TraceBatch(traces=[t]))) for ts in traces.values() for t in ts]
    out += [(topics.SESSIONS, session("chat-1", 1, 2, "complete", "idle_timeout")),
            (topics.SESSIONS, session("chat-1", 1, 1, "open")),  # redelivered after the close
            (topics.SESSIONS, session("chat-1", 1, 2, "open")),
            (topics.SESSIONS, session("chat-1", 2, 3, "open")),
            (topics.SESSIONS, session("chat-2", 1, 1, "open")),
            (topics.SESSIONS, session("chat-3", 1, 1, "complete", "end_marker"))]
    looks = [result("chat-1", "goal", 1, 1, False, None, "not resolved yet"),
             result("chat-1", "goal", 1, 2, False, False, "the agent gave up"),
             result("chat-1", "goal", 1, 2, True, False, "never resolved"),
             result("chat-1", "tone", 1, 2, True, True, "polite"),
             result("chat-1", "goal", 2, 3, False, None, "refund issued, waiting"),
             result("chat-2", "goal", 1, 1, False, False, "refused the user"),
             result("chat-3", "goal", 1, 1, True, True, "answered"),
             result("chat-3", "tone", 1, 1, True, None, "", status="error")]
    out += [(topics.SCORES, encode(ScoreResultBatch(results=looks))),
            (topics.SCORES, encode(ScoreResultBatch(results=looks[:3])))]  # redelivered: replaces, adds nothing
    # The session router's decisions. The closing verdicts' scored / failed decisions are not sent: the sink
    # derives them from the results above.
    out.append((topics.DECISIONS, encode(DecisionBatch(sessions=[
        SessionDecision(rule=rule, session_id=sid, session_version=1, outcome=outcome, reason=reason, project="bot")
        for rule, sid, outcome, reason in [
            ("goal", "chat-1", "queued", ""), ("politeness", "chat-3", "sampled_out", "sampling_rate=0.1")]]))))
    # What a scorer older than that still sent beside a result: the derived row's key, so it replaces that row.
    verdict = looks[2]
    out.append((topics.DECISIONS, encode(DecisionBatch(sessions=[SessionDecision(
        rule="goal", session_id="chat-1", session_version=1, outcome="scored", reason=verdict.reason,
        job_id=verdict.job_id, project="bot", turns=2, decided_at_ns=verdict.scored_at_ns + S)]))))
    return out


def serve(data_dir: str) -> None:
    """The sink's part, in its own process (one chDB opener): store the messages, serve queries."""
    from pipeline.runfile import update_run_file
    from pipeline.settings import Settings
    from pipeline.storage.client import dsn_of
    from pipeline.storage.database import Database
    from pipeline.storage.query_server import QueryServer
    from pipeline.storage.sink import _TABLES, rows_for

    async def main() -> None:
        settings = Settings(data_dir=Path(data_dir), clickhouse_dsn=None)
        db = Database(dsn_of(settings), settings.clickhouse_database)
        await db.open(30)
        for topic, raw in messages():
            await db.insert_many(rows_for(topic, raw, 1 << 20), _TABLES)
        server = QueryServer(db, lambda: {"status": "ok"})
        update_run_file(settings.run_file, query_url=await server.start())
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes stdin
        await server.stop()
        await db.close()

    asyncio.run(main())


@pytest.fixture
def owner(tmp_path: Path) -> Any:
    data = tmp_path / "data"
    code = f"from tests.integration.test_session_storage import serve; serve({str(data)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield data
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVALSTREAM_DATA_DIR": str(data), "COLUMNS": "200"}
    env.pop("EVALSTREAM_CLICKHOUSE_DSN", None)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False, cwd=REPO)


def listed(data: Path, *args: str) -> dict[str, dict[str, Any]]:
    out = cli(data, "sessions", "list", "-f", "json", *args)
    assert out.returncode == 0, out.stderr
    return {row["session_id"]: row for row in map(json.loads, out.stdout.splitlines())}


def test_sessions_show_and_list_read_what_the_sink_stored(owner: Path) -> None:
    shown = cli(owner, "sessions", "show", "chat-1", "--version", "1")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    # the closed version, not the open snapshots redelivered after it
    assert "session chat-1 v1 · bot · complete (idle_timeout) · 2 turn(s)" in text, text
    assert "Hello again?" not in text  # turn 3 belongs to v2
    order = [text.index(s) for s in (
        "Turn 1 (trace chat-1-t1 v1 · agents support)", "User: I was charged twice", "Agent: Let me check.",
        "◆ goal (goal_judge): continue — not resolved yet", "Turn 2 (trace chat-1-t2 v1", "Agent: Still checking.",
        "◆ goal (goal_judge): finish: fail 0 — the agent gave up", "Closing verdicts",
        "◆ goal (goal_judge): fail 0 — never resolved", "◆ tone (goal_judge): pass 1 — polite")]
    assert order == sorted(order), text

    latest = cli(owner, "sessions", "show", "chat-1")
    assert latest.returncode == 0, latest.stderr
    assert "session chat-1 v2 · bot · open (running; as of turn 3) · 3 turn(s)" in latest.stdout, latest.stdout
    assert "◆ goal (goal_judge): continue — refund issued, waiting" in latest.stdout
    assert "Closing verdicts (the session is still open)" in latest.stdout and "none yet" in latest.stdout

    chat3 = cli(owner, "sessions", "show", "chat-3").stdout
    assert "complete (end_marker)" in chat3 and "ended the session" in chat3
    assert "◆ tone (goal_judge): error — TimeoutError: judge took 30 s" in chat3
    assert "◆ politeness: sampled_out — sampling_rate=0.1" in chat3

    missing = cli(owner, "sessions", "show", "nope")
    assert missing.returncode == 1 and "not in storage" in missing.stderr

    everything = listed(owner)
    assert list(everything) == ["chat-1", "chat-2", "chat-3"]  # newest update first (chat-1's third turn)
    assert (everything["chat-1"]["status"], everything["chat-1"]["version"], everything["chat-1"]["turns"]) == (
        "open", 2, 3)
    # chat-1's last closing verdict failed; chat-2 is open and a look on it failed; chat-3's tone judge errored
    assert {sid: row["failed_rules"] for sid, row in everything.items()} == {
        "chat-1": "goal", "chat-2": "goal", "chat-3": "tone"}
    assert set(listed(owner, "--rule-failed", "goal")) == {"chat-1", "chat-2"}
    assert set(listed(owner, "--status", "complete")) == {"chat-3"}
    assert set(listed(owner, "--status", "open", "--project", "bot")) == {"chat-1", "chat-2"}
    assert listed(owner, "--project", "elsewhere") == {}
    assert set(listed(owner, "--since", "2023-11-14", "--until", "2100-01-01")) == {"chat-1", "chat-2", "chat-3"}
    csv_out = cli(owner, "sessions", "list", "-f", "csv")
    assert csv_out.stdout.splitlines()[0].startswith("session_id,updated_at,project,status,close_reason,version")
    bad = cli(owner, "sessions", "list", "--status", "closed")
    assert bad.returncode == 2 and "--status must be one of open, complete, incomplete" in bad.stderr


def test_the_views_keep_one_current_row_per_session_and_rule(owner: Path) -> None:
    from pipeline.settings import Settings
    from pipeline.storage.reader import Reader

    reader = Reader(Settings(data_dir=owner, clickhouse_dsn=None))
    try:
        def q(sql: str) -> list[list[Any]]:
            return reader.query(sql).rows

        assert q("SELECT session_id, version, status, turn_count FROM evalstream.sessions_current "
                 "ORDER BY session_id") == [["chat-1", 2, "open", 3], ["chat-2", 1, "open", 1],
                                            ["chat-3", 1, "complete", 1]]
        assert q("SELECT turn, trace_id FROM evalstream.session_turns FINAL WHERE session_id = 'chat-1' "
                 "AND session_version = 1 ORDER BY turn") == [[1, "chat-1-t1"], [2, "chat-1-t2"]]
        assert q("SELECT rule, session_id, passed FROM evalstream.session_scores_current "
                 "ORDER BY session_id, rule") == [["goal", "chat-1", False], ["tone", "chat-1", True],
                                                  ["goal", "chat-3", True], ["tone", "chat-3", None]]
        assert q("SELECT count() FROM evalstream.session_scores FINAL") == [[8]]  # the redelivery replaced
        assert q("SELECT count() FROM evalstream.scores") == [[0]]  # session results stay out of trace scores
        # The closing verdicts' decisions, derived by the sink from the results (chat-3's tone judge errored:
        # failed, with the error as its reason), beside the router's; none from the looks while a session ran.
        assert q("SELECT rule, session_id, outcome, reason, turns FROM evalstream.session_decisions_current "
                 "ORDER BY session_id, rule") == [
            ["goal", "chat-1", "scored", "never resolved", 2], ["tone", "chat-1", "scored", "polite", 2],
            ["goal", "chat-3", "scored", "answered", 1], ["politeness", "chat-3", "sampled_out", "sampling_rate=0.1", 0],
            ["tone", "chat-3", "failed", "TimeoutError: judge took 30 s", 1]]
        # chat-1's goal was decided twice with one key (the derived row, and an older scorer's): one row stays
        assert q("SELECT outcome, count() FROM evalstream.session_decisions FINAL WHERE session_id = 'chat-1' "
                 "AND rule = 'goal' GROUP BY outcome ORDER BY outcome") == [["queued", 1], ["scored", 1]]
    finally:
        reader.close()


def test_a_session_scorer_loads_a_turns_trace_through_the_sinks_endpoint(owner: Path) -> None:
    from pipeline.contracts import Session
    from pipeline.contracts.conversation import Conversation
    from pipeline.contracts.transcript import turn_from_trace
    from pipeline.settings import Settings
    from pipeline.storage.reader import Reader

    expected = turn_trace(2, "chat-1", "Any news?", "Still checking.")
    turns = [turn_from_trace(turn_trace(n, "chat-1", "q", "a")) for n in (1, 2)]
    session = Session(session_id="chat-1", version=1, status="open", turns=turns)

    async def main() -> None:
        reader = Reader.for_workers(Settings(data_dir=owner, clickhouse_dsn=None))
        try:
            conversation = Conversation(session=session, final=False, load_trace=reader.atrace)
            assert await conversation.trace(2) == expected
            assert await reader.atrace("chat-1-t9", 1) is None
        finally:
            reader.close()

    asyncio.run(main())


def documented_queries() -> dict[str, str]:
    """Each `### name` heading of docs/sessions.md and the ```sql block under it."""
    queries: dict[str, str] = {}
    name, block = None, None
    for line in (REPO / "docs" / "sessions.md").read_text().splitlines():
        if line.startswith("### "):
            name = line[4:].strip()
        elif line.strip() == "```sql" and name:
            block = []
        elif line.strip() == "```" and block is not None:
            queries[name], name, block = "\n".join(block), None, None
        elif block is not None:
            block.append(line)
    return queries


def test_every_documented_session_query_runs_and_answers_what_was_stored(owner: Path) -> None:
    from pipeline.settings import Settings
    from pipeline.storage.reader import Reader

    queries = documented_queries()
    assert len(queries) == 7, sorted(queries)
    reader = Reader(Settings(data_dir=owner, clickhouse_dsn=None))
    try:
        got = {}
        for name, sql in queries.items():
            result = reader.query(sql)
            got[name] = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    finally:
        reader.close()
    rate = {r["rule"]: (r["sessions"], r["passes"], r["failures"], r["errors"]) for r in got["session-pass-rate"]}
    assert rate == {"goal": (2, 1, 1, 0), "tone": (2, 1, 0, 1)}
    assert [(r["rule"], r["session_id"], r["first_failed_turn"]) for r in got["first-failing-turn"]] == [
        ("goal", "chat-1", 2), ("goal", "chat-2", 1)]
    assert [(r["rule"], r["turns"], r["sessions"], r["failures"]) for r in got["verdict-by-length"]] == [
        ("goal", 1, 1, 0), ("goal", 2, 1, 1), ("tone", 1, 1, 1), ("tone", 2, 1, 0)]
    assert [(r["session_id"], r["version"]) for r in got["open-sessions"]] == [("chat-2", 1), ("chat-1", 2)]
    assert [(r["turn"], r["input"], r["output"]) for r in got["session-transcript"]] == [
        (1, "I was charged twice", "Let me check."), (2, "Any news?", "Still checking."),
        (3, "Hello again?", "Refund issued.")]
    assert {(r["rule"], r["outcome"]): r["sessions"] for r in got["session-outcomes"]} == {
        ("goal", "scored"): 2, ("tone", "scored"): 1, ("tone", "failed"): 1, ("politeness", "sampled_out"): 1}
    assert [(r["project"], r["sessions"], r["cost_usd"]) for r in got["session-cost"]] == [("bot", 3, 0.005)]
