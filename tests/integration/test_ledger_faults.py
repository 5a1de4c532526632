"""Every span, trace, decision and score accounted for (tests/integration/ledger.py) under faults:
1% poison messages mixed into valid traffic, a trace of 10,000 spans beside ordinary ones, and SIGKILL of
each role in its own process.
`EVALSTREAM_LONG=1` (or `--long`) runs them with ten times the traffic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.harness import WorkerProcess, batch, produce, span
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
    try:  # a trace re-opened by its last part reads its first version back from storage before it closes again
        worker.wait_for(lambda: not ledger.account(worker.query), timeout_s=30, what="the ledger to balance")
        assert ledger.account(worker.query) == []
        reasons = dict(worker.query("SELECT key, reason FROM evalstream.dead_letters FINAL"))
        for key in ledger.poison:  # each poison message says what was wrong with it
            reason = reasons[key.decode()]
            kind = key.decode().split("-")[1]
            assert {"bad_json": "not valid JSON", "wrong_schema": "does not match SpanBatch",
                    "oversized": "exceeds the limit"}[kind] in reason, (kind, reason)
    finally:
        worker.stop()


def test_a_negative_token_count_is_refused_at_the_edge_and_holds_up_no_other_trace(
        broker: str, tmp_path: Path) -> None:
    """A schema-valid span whose value no column can hold (input_tokens -1) used to reach the sink, whose insert
    then failed and was retried forever: nothing of anyone was stored again. The assembler refuses it now,
    naming the field, and the 1,000 healthy traces around it are stored and scored as usual."""
    ledger = Ledger.traffic(RULES, traces=1000 * SCALE, spans_per_trace=3, prefix="healthy", seed=4)
    bad = span("negative", "negative-r", None, "handle", model="gpt-4o-mini", input_tokens=-1, output_tokens=5)
    key = b"poison-negative-tokens"
    ledger.poison.append(key)
    middle = len(ledger.messages) // 2
    ledger.messages.insert(middle, (key, batch("negative", [bad], final=True)))
    worker = run(tmp_path, broker, ledger, timeout_s=60)
    try:
        worker.wait_for(lambda: not ledger.account(worker.query), timeout_s=15, what="the ledger to balance")
        assert ledger.account(worker.query) == []  # every healthy span, trace, decision and score; one dead letter
        assert worker.scalar("SELECT count() FROM evalstream.traces_current WHERE trace_id LIKE 'healthy%'") \
            == 1000 * SCALE
        ((stage, reason),) = worker.query("SELECT stage, reason FROM evalstream.dead_letters FINAL")
        assert stage == "assembler" and "spans.0.input_tokens" in reason, reason
        assert worker.scalar("SELECT count() FROM evalstream.spans WHERE trace_id = 'negative'") == 0
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
        worker.wait_for(lambda: not both.account(worker.query), timeout_s=30, what="the ledger to balance")
        assert both.account(worker.query) == []
        assert worker.scalar("SELECT span_count FROM evalstream.traces_current WHERE trace_id = 'big000000'") == 10_000
    finally:
        worker.stop()


ROLE_RULES_YAML = RULES_YAML + """
alerts:
  - {name: any-error, rule: errors, condition: failed, min_count: 1, window_s: 60}
"""
ROLES = ("scorer", "router", "assembler", "alerter", "sink")


def test_sigkill_of_each_role_in_its_own_process_mid_stream_loses_and_duplicates_nothing(
        broker: str, tmp_path: Path) -> None:
    """Five processes, one per role (the sink alone owns chDB). Each in turn is SIGKILLed (no flush, no commit,
    no leave) while traffic arrives, and started again while more arrives; then every span, trace, decision
    and score is accounted for, and the alerter's alert for the failing traces is stored."""
    ledger = Ledger.traffic(RULES, traces=60 * len(ROLES) * SCALE, spans_per_trace=5, seed=3)
    rules = tmp_path / "rules.yaml"
    rules.write_text(ROLE_RULES_YAML)
    env: dict[str, str] = {}  # a SIGKILLed member leaves the group when its session (10 s) expires

    def process(role: str) -> WorkerProcess:
        if role == "sink":
            return WorkerProcess(tmp_path / role, broker, rules, {**env, "EVALSTREAM_ROLES": ""})
        return WorkerProcess(tmp_path / role, broker, rules,
                             {**env, "EVALSTREAM_ROLES": role, "EVALSTREAM_SINK_ENABLED": "false"})

    def scores() -> int:
        return sink.scalar("SELECT count() FROM evalstream.scores_current")

    share = len(ledger.messages) // (len(ROLES) + 1)
    parts = [ledger.messages[k * share:(k + 1) * share] for k in range(len(ROLES))]
    parts.append(ledger.messages[len(ROLES) * share:])
    running: dict[str, WorkerProcess] = {}
    try:
        for role in ROLES:
            running[role] = process(role).start()
        sink = running["sink"]
        produce(broker, parts[0])
        sink.wait_for(lambda: scores() >= 20, timeout_s=90, what="scores before the first kill")
        for k, role in enumerate(ROLES, start=1):
            before = scores()
            running[role].kill()
            produce(broker, parts[k])  # arrives while the role is down
            running[role] = process(role).start()
            sink = running["sink"]
            sink.wait_for(lambda before=before: scores() > before, timeout_s=90,
                          what=f"scores to grow after the {role} came back")
        sink.wait_for(lambda: scores() >= len(ledger.sampled()), timeout_s=120,
                      what="every sampled trace scored after every role's restart")
        sink.wait_for(lambda: not ledger.account(sink.query), timeout_s=30, what="the ledger to balance")
        assert ledger.account(sink.query) == []
        assert sink.scalar("SELECT count() FROM evalstream.alerts FINAL WHERE alert_rule = 'any-error'") >= 1
    finally:
        for worker in running.values():
            worker.stop()
