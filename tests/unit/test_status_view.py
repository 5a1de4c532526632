"""`evalstream status` for people (pipeline/views/status.py, pipeline/processes.py): roles from a worker's
/metrics, the summary's sections, and ClickHouse unreachable said while the rest is still printed."""

from __future__ import annotations

import io
import re

from rich.console import Console

from pipeline.metrics import Counters
from pipeline.processes import parse_worker_info
from pipeline.rules.health import assess
from pipeline.views.status import print_status

NOW = 1_800_000_000.0


def test_roles_come_from_the_worker_info_gauge() -> None:
    counters = Counters()
    counters.describe_worker("host:42", "assembler,scorer", True)
    assert parse_worker_info(counters.exposition()[0].decode()) == {
        "worker": "host:42", "roles": ["assembler", "scorer"], "sink": True}
    assert parse_worker_info("# nothing here\n") is None


STATUS = {
    "run": {"query_url": "http://127.0.0.1:5000", "kafka_bootstrap": "127.0.0.1:9092"},
    "health": {"pid": 42, "uptime_s": 12.5, "counters": {"sink_rows": 3}},
    "processes": [{"pid": 42, "worker": "host:42", "roles": ["assembler", "router", "scorer", "alerter"],
                   "sink": True, "metrics_url": "http://127.0.0.1:5001/metrics"},
                  {"pid": 43, "metrics_url": "http://127.0.0.1:5002/metrics", "sink": False,
                   "error": "not answering (refused): gone, or still starting"}],
    "embedded_broker": {"pid": 7, "running": True, "rss_mb": 210.5, "growth_mb_per_h": 12.0, "hours_left": 30.1,
                        "warn_at_mb": 4096},
    "storage": {"reachable": True, "lag_fresh_s": 300.0,
                "lag": [{"consumer_group": "evalstream", "lag_records": 7, "lag_seconds": 2.5, "partitions": 16,
                         "worst_topic": "evalstream.jobs.v2", "reported_at": NOW}],
                "rates": {"window_s": 60.0, "spans_per_s": 12.3, "traces_per_s": 2.0, "scores_per_s": 3.1},
                "dead_letters": {"window_s": 3600.0, "total": 3, "by_stage": {"scorer": 2, "sink": 1}}},
    "rules_since": "1h",
}


def render(status: dict, width: int = 60) -> str:
    buf = io.StringIO()
    print_status(Console(file=buf, width=width, force_terminal=True, color_system=None), status,
                 assess({}, now=NOW, window_s=3600), NOW)
    return buf.getvalue()


def test_the_summary_fits_a_narrow_terminal() -> None:
    out = render(STATUS)
    assert all(len(line) <= 60 for line in out.splitlines())
    flat = re.sub(r"\s+", " ", out)
    for expected in ("Processes", "assembler, router, scorer, alerter", "not answering", "Sink: pid 42",
                     "Embedded broker (Tansu): pid 7, 210.5 MB", "evalstream.jobs.v2",
                     "in 12.3 spans/s, 2 traces/s; out 3.1 scores/s", "Dead letters (last hour): 3 (scorer 2, sink 1)",
                     "Rules (last 1h)", "No rules"):
        assert expected in flat, out


def test_clickhouse_unreachable_is_said_and_the_rest_still_printed() -> None:
    out = render({**STATUS, "storage": {"reachable": False, "error": "cannot open ClickHouse at http://x\nmore"}},
                 width=120)
    assert "Processes" in out and "Embedded broker" in out
    assert "not reachable (cannot open ClickHouse at http://x)" in out
    assert "Rates" not in out
