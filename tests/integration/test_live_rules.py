"""Issue 21 (rules applied without a restart), through the real broker, worker and chDB, in one worker start:
while traces flow, `evalstream rules apply` changes a rule's sampling rate and filter. Every trace is routed
under exactly one version, which its decisions record; those routed under the new version follow the new rule;
every (rule, trace) has exactly one decision (plus its score's); and `rules history` lists both versions."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.rules import load_rules
from pipeline.rules.versions import rules_version
from pipeline.sampling import is_sampled
from tests.integration.harness import WorkerProcess, batch, produce, span

pytestmark = pytest.mark.integration

RULE = "live"
BEFORE = f"""
rules:
  - name: {RULE}
    scorer: error_spans
    filter: {{project: alpha}}
"""
AFTER = f"""
rules:
  - name: {RULE}
    scorer: error_spans
    sampling_rate: 0.5
    filter: {{project: beta}}
"""


def cli(worker: WorkerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**worker.env, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


class Traffic(threading.Thread):
    """Whole traces, alternating projects alpha and beta, a few at a time until stopped."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.sent: list[tuple[str, str, float]] = []  # trace id, project, when its message was acknowledged
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            chunk = []
            for _ in range(6):
                n += 1
                trace_id, project = f"{n:032x}", ("alpha", "beta")[n % 2]
                chunk.append((trace_id, project))
            produce(self.bootstrap, [(t.encode(), batch(t, [span(t, "root", None, "handle", project=p)], final=True))
                                     for t, p in chunk])
            done = time.time()
            self.sent += [(t, p, done) for t, p in chunk]
            time.sleep(0.2)


def test_a_rule_applied_while_traces_flow_routes_every_later_trace(broker: str, tmp_path: Path) -> None:
    before, after = tmp_path / "before.yaml", tmp_path / "after.yaml"
    before.write_text(BEFORE)
    after.write_text(AFTER)
    v1, v2 = rules_version(load_rules(before)), rules_version(load_rules(after))
    worker = WorkerProcess(tmp_path / "data", broker, before).start()
    traffic = Traffic(broker)
    try:
        traffic.start()
        time.sleep(3)
        applied = cli(worker, "rules", "apply", str(after))
        assert applied.returncode == 0, applied.stderr
        assert v2 in applied.stdout
        applied_at = time.time()
        time.sleep(4)
        traffic.halt.set()
        traffic.join(timeout=30)
        sent = traffic.sent
        ids = ", ".join(f"'{t}'" for t, _, _ in sent)

        def all_decided() -> bool:  # a queued job's `scored` decision comes later, with its score
            return worker.scalar(f"SELECT count() FROM (SELECT trace_id FROM evalstream.decisions FINAL "
                                 f"WHERE rule = '{RULE}' AND trace_id IN ({ids}) GROUP BY trace_id "
                                 "HAVING countIf(outcome != 'queued') > 0)") == len(sent)

        worker.wait_for(all_decided, timeout_s=90, what="a final decision for every trace")
        rows = worker.query(f"SELECT trace_id, groupUniqArray(rules_version), groupArray(outcome) "
                            f"FROM evalstream.decisions FINAL WHERE rule = '{RULE}' AND trace_id IN ({ids}) "
                            "GROUP BY trace_id")
        by_trace = {t: (versions, sorted(outcomes)) for t, versions, outcomes in rows}
        routed_under = {v1: 0, v2: 0}
        for trace_id, project, acked in sent:
            versions, outcomes = by_trace[trace_id]
            assert len(versions) == 1, (trace_id, versions)  # one version per trace, never a mix
            version = versions[0]
            assert version in (v1, v2)
            routed_under[version] += 1
            if acked > applied_at + 2:  # sent well after the apply returned: the new rules
                assert version == v2, (trace_id, acked - applied_at)
            if version == v1:
                wanted = ["queued", "scored"] if project == "alpha" else ["filtered_out"]
            elif project == "alpha":
                wanted = ["filtered_out"]
            else:
                wanted = ["queued", "scored"] if is_sampled(trace_id, RULE, 0.5) else ["sampled_out"]
            assert outcomes == wanted, (trace_id, project, version, outcomes)  # one decision, plus its score's
        assert routed_under[v1] > 0 and routed_under[v2] > 0, routed_under
        scored = worker.query(f"SELECT trace_id, rules_version, count() FROM evalstream.scores FINAL "
                              f"WHERE trace_id IN ({ids}) GROUP BY trace_id, rules_version")
        assert all(n == 1 for _, _, n in scored)  # no trace scored twice
        assert {t: v for t, v, _ in scored} == {t: by_trace[t][0][0] for t, _, _ in scored}

        history = cli(worker, "rules", "history", "--format", "csv")
        assert history.returncode == 0, history.stderr
        lines = history.stdout.strip().splitlines()
        assert lines[0].startswith("version,applied_at,by,source,rules,alerts,current")
        assert [line.split(",")[0] for line in lines[1:]] == [v1, v2]
        assert lines[1].endswith(",") and lines[2].endswith(",yes")
        assert "worker --rules" in lines[1] and "rules apply" in lines[2]
        again = cli(worker, "rules", "apply", str(after))
        assert again.returncode == 0 and "already the current one" in again.stdout
        assert "rules: now version" in worker.log_path.read_text(errors="replace")
        why = cli(worker, "why", sent[-1][0])
        assert why.returncode == 0 and v2 in why.stdout, why.stdout + why.stderr
    finally:
        traffic.halt.set()
        worker.stop()
