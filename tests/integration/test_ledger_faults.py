"""Every span, trace, decision and score accounted for (tests/integration/ledger.py) under faults:
1% poison messages mixed into valid traffic, and a trace of 10,000 spans beside ordinary ones.
`EVALSTREAM_LONG=1` (or `--long`) runs them with ten times the traffic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.harness import WorkerProcess, produce
from tests.integration.ledger import Ledger, LedgerRule

pytestmark = pytest.mark.integration

SCALE = 10 if os.environ.get("EVALSTREAM_LONG", "") not in ("", "0") else 1
RULES = [LedgerRule("errors"), LedgerRule("latency", sampling_rate=0.3)]
RULES_YAML = """
rules:
  - {name: errors, scorer: error_spans}
  - {name: latency, scorer: trace_latency, params: {max_ms: 1000}, sampling_rate: 0.3}
"""
LIMIT = 1024 * 1024  # EVALSTREAM_MAX_MESSAGE_BYTES: a 5 MB span is over it


def run(tmp_path: Path, broker: str, ledger: Ledger, timeout_s: float = 120,
        env: dict[str, str] | None = None) -> WorkerProcess:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_YAML)
    worker = WorkerProcess(tmp_path / "data", broker, rules, env).start()
    try:
        produce(broker, ledger.messages)
        expected = len(ledger.sampled())
        worker.wait_for(lambda: worker.scalar("SELECT count() FROM evalstream.scores_current") >= expected
                        and worker.scalar("SELECT count() FROM evalstream.dead_letters FINAL") >= len(ledger.poison),
                        timeout_s=timeout_s, what="every sampled trace scored and every poison message dead-lettered")
    except BaseException:
        worker.stop()  # the caller's try/finally has not begun: do not leave the worker running
        raise
    return worker


def test_one_percent_poison_is_dead_lettered_and_every_valid_span_is_accounted_for(
        broker: str, tmp_path: Path) -> None:
    ledger = Ledger.traffic(RULES, traces=600 * SCALE, spans_per_trace=5, poison_rate=0.01)
    assert len(ledger.poison) == 6 * SCALE and {"oversized", "bad_json", "wrong_schema"} <= {
        k.decode().split("-")[1] for k in ledger.poison}
    worker = run(tmp_path, broker, ledger, env={"EVALSTREAM_MAX_MESSAGE_BYTES": str(LIMIT)})
    try:
        assert ledger.account(worker.query) == []
        reasons = dict(worker.query("SELECT key, reason FROM evalstream.dead_letters FINAL"))
        for key in ledger.poison:  # each poison message says what was wrong with it
            reason = reasons[key.decode()]
            kind = key.decode().split("-")[1]
            assert {"bad_json": "not valid JSON", "wrong_schema": "does not match SpanBatch",
                    "oversized": "exceeds the limit"}[kind] in reason, (kind, reason)
    finally:
        worker.stop()


def test_a_trace_of_10k_spans_is_stored_whole_and_scored_once_beside_ordinary_traffic(
        broker: str, tmp_path: Path) -> None:
    big = Ledger.traffic(RULES, traces=1, spans_per_trace=10_000, prefix="big")
    small = Ledger.traffic(RULES, traces=100 * SCALE, spans_per_trace=4, prefix="small", seed=2)
    both = Ledger(RULES, spans={**big.spans, **small.spans}, messages=big.messages + small.messages)
    # The default message limit (8 MiB): the assembled trace (~2.4 MB) travels as one message after assembly.
    worker = run(tmp_path, broker, both, timeout_s=180)
    try:
        assert both.account(worker.query) == []
        assert worker.scalar("SELECT span_count FROM evalstream.traces_current WHERE trace_id = 'big000000'") == 10_000
    finally:
        worker.stop()


def test_sigkill_of_each_role_process_mid_stream_loses_and_duplicates_nothing(broker: str, tmp_path: Path) -> None:
    """A front process (assembler, router, alerter, and the sink that owns chDB) and a scorer process; each is
    SIGKILLed in turn while traffic flows, and started again while more arrives."""
    ledger = Ledger.traffic(RULES, traces=300 * SCALE, spans_per_trace=5, seed=3)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_YAML)

    def front() -> WorkerProcess:
        return WorkerProcess(tmp_path / "front", broker, rules, {"EVALSTREAM_ROLES": "assembler,router,alerter"})

    def scorer() -> WorkerProcess:
        return WorkerProcess(tmp_path / "scorer", broker, rules,
                             {"EVALSTREAM_ROLES": "scorer", "EVALSTREAM_SINK_ENABLED": "false"})

    third = len(ledger.messages) // 3
    parts = [ledger.messages[:third], ledger.messages[third:2 * third], ledger.messages[2 * third:]]
    head, scoring = front().start(), scorer().start()
    try:
        produce(broker, parts[0])
        head.wait_for(lambda: head.scalar("SELECT count() FROM evalstream.scores_current") >= 50, timeout_s=90,
                      what="scores before the scorer is killed")
        scoring.kill()  # SIGKILL: no flush, no commit
        produce(broker, parts[1])
        scoring = scorer().start()
        head.wait_for(lambda: head.scalar("SELECT count() FROM evalstream.scores_current") >= len(ledger.sampled()) // 2,
                      timeout_s=90, what="scores after the scorer's restart")
        head.kill()  # the assembler with open traces, the router and the sink with an unwritten batch
        produce(broker, parts[2])
        head = front().start()
        head.wait_for(lambda: head.scalar("SELECT count() FROM evalstream.scores_current") >= len(ledger.sampled()),
                      timeout_s=120, what="every sampled trace scored after both restarts")
        assert ledger.account(head.query) == []
    finally:
        scoring.stop()
        head.stop()
