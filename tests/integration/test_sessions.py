"""Sessions end to end: interleaved 10-turn conversations are assembled from their turns' traces,
closed by the idle timeout, judged once per sampled session, and re-opened as version 2 by a late turn."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pipeline.sampling import is_sampled
from tests.integration.harness import WorkerProcess, batch, produce, span

pytestmark = pytest.mark.integration

SESSIONS = [f"conv-{i}" for i in range(6)]
TURNS = 10
RULES = """
rules:
  - {name: latency, scorer: trace_latency, params: {max_ms: 1000}}
  - name: conversation-order
    subject: session
    scorer: tests.integration.session_scorers:TranscriptInOrder
    sampling_rate: 0.5
"""


def turn(session_id: str, n: int) -> tuple[bytes, bytes]:
    """Turn n of a conversation: its own trace, with the user's question and the agent's answer on the root."""
    trace_id = f"{session_id}-t{n:02d}"
    root = span(trace_id, f"{trace_id}-r", None, "chat", start_ms=n * 1000, dur_ms=20, session_id=session_id,
                agent_name="support-bot", inputs={"message": f"{session_id} q{n}"},
                outputs={"output": f"{session_id} a{n}"})
    tool = span(trace_id, f"{trace_id}-s", root["span_id"], "search", start_ms=n * 1000 + 2, span_type="tool")
    return trace_id.encode(), batch(trace_id, [root, tool], final=True)


def test_interleaved_sessions_are_judged_once_and_reopened_by_a_late_turn(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    worker = WorkerProcess(tmp_path / "data", broker, rules, {
        "EVALSTREAM_SESSION_IDLE_TIMEOUT_S": "4", "EVALSTREAM_SESSION_REOPEN_WINDOW_S": "120"}).start()
    try:
        # Turns of six conversations interleaved, each conversation's turns in shuffled order.
        order = [(s, n) for n in range(1, TURNS + 1) for s in SESSIONS]
        random.Random(7).shuffle(order)
        produce(broker, [turn(s, n) for s, n in order])
        worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.sessions_current "
                                              "WHERE status = 'complete'") == len(SESSIONS),
                        timeout_s=90, what="every session closed by the idle timeout")
        assert worker.query("SELECT DISTINCT version, turn_count, close_reason FROM evalstream.sessions_current") \
            == [[1, TURNS, "idle_timeout"]]
        # The transcript is in turn order, whatever order the traces arrived in.
        for session_id in SESSIONS:
            stored = worker.query(f"SELECT input FROM evalstream.session_turns FINAL WHERE session_id = '{session_id}' "
                                  "AND session_version = 1 ORDER BY turn")
            assert [r[0] for r in stored] == [f"{session_id} q{n}" for n in range(1, TURNS + 1)]

        sampled = sorted(s for s in SESSIONS if is_sampled(s, "conversation-order", 0.5))
        assert 0 < len(sampled) < len(SESSIONS)  # the fixed ids exercise both sides of the sampling
        worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.session_scores_current") == len(sampled),
                        timeout_s=60, what="a closing verdict per sampled session")
        scored = worker.query("SELECT session_id, passed, value, metadata, status, reason FROM "
                              "evalstream.session_scores_current ORDER BY session_id")
        assert [r[0] for r in scored] == sampled
        for _, passed, value, metadata, status, reason in scored:
            assert passed is True and value == TURNS, (status, reason)
            meta = json.loads(metadata)
            assert meta["asked"] == list(range(1, TURNS + 1)) and meta["final"] is True
            assert meta["first_trace_spans"] == 2  # the scorer opened turn 1's stored trace
        outcomes = dict(worker.query("SELECT session_id, outcome FROM evalstream.session_decisions_current "
                                     "WHERE rule = 'conversation-order'"))
        assert outcomes == {s: "scored" if s in sampled else "sampled_out" for s in SESSIONS}
        # Turns are traces too: trace rules score them as usual.
        assert worker.scalar("SELECT count() FROM evalstream.scores_current WHERE rule = 'latency'") \
            == len(SESSIONS) * TURNS

        # A late turn after the idle close re-opens the conversation as version 2, with all 11 turns.
        late = sampled[0]
        produce(broker, [turn(late, TURNS + 1)])
        worker.wait_for(lambda: worker.scalar(f"SELECT version FROM evalstream.sessions_current "
                                              f"WHERE session_id = '{late}'") == 2,
                        timeout_s=60, what="the late turn's session closed as version 2")
        assert worker.scalar(f"SELECT turn_count FROM evalstream.sessions_current WHERE session_id = '{late}'") \
            == TURNS + 1
        worker.wait_for(lambda: worker.scalar(f"SELECT session_version FROM evalstream.session_scores_current "
                                              f"WHERE session_id = '{late}'") == 2,
                        timeout_s=60, what="version 2 judged")
        assert worker.scalar("SELECT count() FROM evalstream.session_scores_current") == len(sampled)
        assert worker.scalar(f"SELECT value FROM evalstream.session_scores_current WHERE session_id = '{late}'") \
            == TURNS + 1
    finally:
        worker.stop()
