"""GET /metrics on real workers: the counters equal what the test sent, consumer lag rises behind a slow
scorer and comes back to 0, and lag samples reach ClickHouse (`consumer_lag`)."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline import topics
from pipeline.runfile import read_run_file
from tests.integration.harness import WorkerProcess, batch, produce, span

pytestmark = pytest.mark.integration

RULES = """
rules:
  - name: errors
    scorer: error_spans
  - name: picky
    scorer: tests.integration.metrics_scorers:Picky
  - name: slow
    scorer: tests.integration.metrics_scorers:Slow
"""
N_OK, N_BAD, N_FLAKY = 20, 3, 2
ENV = {
    "EVALSTREAM_METRICS_INTERVAL_S": "0.5",
    "EVALSTREAM_SCORER_CONCURRENCY": "1",  # one job at a time: the slow scorer builds a backlog
    "EVALSTREAM_SCORER_MAX_ATTEMPTS": "1",  # `flaky` gives up at once: a dead letter
}

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def metrics_url(worker: WorkerProcess, timeout_s: float = 60) -> str:
    assert worker.process is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        url = (read_run_file(worker.data_dir / "run.json").get("metrics_urls") or {}).get(str(worker.process.pid))
        if url:
            return url
        assert worker.process.poll() is None, worker.log_tail()
        time.sleep(0.1)
    raise AssertionError(f"no metrics URL in run.json:\n{worker.log_tail()}")


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def by(samples: Samples, name: str, label: str) -> dict[str, float]:
    """Values summed by one label."""
    out: dict[str, float] = {}
    for labels, value in samples.get(name, {}).items():
        key = dict(labels)[label]
        out[key] = out.get(key, 0) + value
    return out


def lag(samples: Samples, topic: str | None = None) -> list[float]:
    return [v for labels, v in samples.get("evalstream_consumer_lag_records", {}).items()
            if topic is None or dict(labels)["topic"] == topic]


def make_trace(trace_id: str, root_name: str) -> list[dict]:
    root = span(trace_id, f"{trace_id}-root", None, root_name)
    return [root] + [span(trace_id, f"{trace_id}-c{j}", root["span_id"], f"tool{j}", span_type="tool",
                          status="error" if j == 0 and trace_id.endswith("0") else "ok") for j in range(2)]


def test_metrics_endpoint_counts_what_was_sent(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    traces = {f"ok{i:03d}": "handle" for i in range(N_OK)}
    traces |= {f"bad{i}": "bad" for i in range(N_BAD)} | {f"flaky{i}": "flaky" for i in range(N_FLAKY)}
    messages, n_spans = [], 0
    for trace_id, root_name in traces.items():
        spans = make_trace(trace_id, root_name)
        n_spans += len(spans)
        messages.append((trace_id.encode(), batch(trace_id, spans)))
    messages.append((trace_id.encode(), batch(trace_id, spans[:1])))  # redelivered: counts once
    messages.append((b"orphan", batch("orphan", [span("orphan", "orphan-c", "never-sent", "tool")])))  # incomplete
    messages.append((b"poison", b"\xffnot json"))  # a dead letter
    n_spans += 1

    worker = WorkerProcess(tmp_path / "data", broker, rules, ENV).start()
    # A second worker on the same machine, without the sink or any agent: /metrics on a port of its own.
    idle = WorkerProcess(tmp_path / "idle", broker, rules, {**ENV, "EVALSTREAM_SINK_ENABLED": "false",
                                                           "EVALSTREAM_ROLES": "", "EVALSTREAM_APP_ID": "idle"})
    try:
        url = metrics_url(worker)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        idle.start()
        idle_url = metrics_url(idle)
        assert idle_url != url
        assert scrape(idle_url)["evalstream_spans_in_total"][()] == 0
        [info] = scrape(idle_url)["evalstream_worker_info"]
        assert dict(info)["roles"] == "none" and dict(info)["sink"] == "false"

        produce(broker, messages)
        n_closed = len(traces) + 1
        max_jobs_lag = 0.0

        def all_scored() -> bool:
            nonlocal max_jobs_lag
            samples = scrape(url)
            max_jobs_lag = max([max_jobs_lag, *lag(samples, topics.JOBS)])
            return sum(by(samples, "evalstream_scores_total", "rule").values()) >= 3 * n_closed
        worker.wait_for(all_scored, what="every job scored", timeout_s=90)
        assert max_jobs_lag > 0, "no backlog seen behind the slow scorer"

        late = span("ok001", "ok001-late", "ok001-root", "late-tool", span_type="tool")
        produce(broker, [(b"ok001", batch("ok001", [late]))])
        worker.wait_for(lambda: sum(by(scrape(url), "evalstream_scores_total", "rule").values()) >= 3 * (n_closed + 1),
                        what="the re-opened trace re-scored")

        m = scrape(url)
        assert m["evalstream_spans_in_total"][()] == n_spans + 1
        assert m["evalstream_spans_duplicate_total"][()] == 1
        assert by(m, "evalstream_traces_closed_total", "status") == {"complete": len(traces), "incomplete": 1,
                                                                     "reopened": 1}
        assert m["evalstream_jobs_queued_total"][()] == 3 * (n_closed + 1)
        assert m["evalstream_jobs_running"][()] == 0
        scores = {(dict(k)["rule"], dict(k)["status"]): v for k, v in m["evalstream_scores_total"].items()}
        assert scores == {("errors", "scored"): n_closed + 1, ("slow", "scored"): n_closed + 1,
                          ("picky", "scored"): n_closed + 1 - N_BAD - N_FLAKY, ("picky", "error"): N_BAD + N_FLAKY}
        assert by(m, "evalstream_dead_letters_total", "stage") == {"assembler": 1, "scorer": N_FLAKY}
        assert m["evalstream_sink_batch_rows_count"][()] >= 1
        assert m["evalstream_sink_batch_rows_sum"][()] == m["evalstream_sink_rows_total"][()] > 0
        assert m["evalstream_sink_insert_seconds_count"][()] == m["evalstream_sink_batch_rows_count"][()]

        # Caught up: every partition of both groups (workers' and sink's) reads 0.
        worker.wait_for(lambda: (s := lag(scrape(url))) != [] and max(s) == 0, what="lag back to 0")
        groups = {dict(k)["group"] for k in scrape(url)["evalstream_consumer_lag_records"]}
        assert groups == {"evalstream", "evalstream-sink"}

        # The samples reach ClickHouse, the backlog included; the newest per partition is 0.
        me = f"{socket.gethostname()}:{worker.process.pid}"
        db = "evalstream"
        worker.wait_for(lambda: worker.scalar(
            f"SELECT max(lag_records) FROM (SELECT argMax(lag_records, at) AS lag_records FROM {db}.consumer_lag "
            f"GROUP BY consumer_group, topic, partition)") == 0
            and worker.scalar(f"SELECT count() FROM {db}.consumer_lag WHERE at > now64(6) - 2") > 0,
            what="lag 0 stored")
        assert worker.scalar(f"SELECT max(lag_records) FROM {db}.consumer_lag WHERE topic = '{topics.JOBS}'") > 0
        assert worker.scalar(f"SELECT max(lag_seconds) FROM {db}.consumer_lag WHERE topic = '{topics.JOBS}'") > 0
        assert worker.query(f"SELECT DISTINCT worker FROM {db}.consumer_lag") == [[me]]
    finally:
        idle.stop()
        worker.stop()
    for stopped in (worker, idle):  # a clean stop withdraws the URL
        assert "metrics_urls" not in read_run_file(stopped.data_dir / "run.json"), stopped.log_tail()
