"""pipeline/runfile.py: run.json shared by the processes of one data dir."""

from __future__ import annotations

from pathlib import Path

from pipeline.runfile import clear_run_file, read_run_file, set_run_entry, update_run_file


def test_each_worker_keeps_its_own_metrics_url(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    update_run_file(path, query_url="http://127.0.0.1:1")
    set_run_entry(path, "metrics_urls", "101", "http://127.0.0.1:2/metrics")
    set_run_entry(path, "metrics_urls", "202", "http://127.0.0.1:3/metrics")
    assert read_run_file(path)["metrics_urls"] == {"101": "http://127.0.0.1:2/metrics",
                                                   "202": "http://127.0.0.1:3/metrics"}
    set_run_entry(path, "metrics_urls", "101", None)
    assert read_run_file(path) == {"query_url": "http://127.0.0.1:1", "metrics_urls": {"202": "http://127.0.0.1:3/metrics"}}
    set_run_entry(path, "metrics_urls", "202", None)
    assert read_run_file(path) == {"query_url": "http://127.0.0.1:1"}
    clear_run_file(path, "query_url")
    assert not path.exists()
