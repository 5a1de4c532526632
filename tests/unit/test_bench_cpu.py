"""bench/cpu.py: CPU seconds from /proc, children included, and the per-trace report built on them."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.cpu import CpuMeter, CpuReport, Phase, cpu_s

BUSY_CHILD = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nimport sys; sys.stdin.read()"


def test_a_parent_counts_its_live_child_and_not_without_children() -> None:
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]])",
                               BUSY_CHILD], stdin=subprocess.PIPE)
    try:
        while cpu_s(parent.pid) < 0.3:  # the child burns 0.3 s, then waits for stdin: only the tree sees it
            pass
        assert cpu_s(parent.pid, children=False) < 0.3
    finally:
        parent.communicate(b"")


def test_a_gone_process_is_zero_and_the_meter_reports_differences() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert cpu_s(gone.pid) == 0.0 and cpu_s(gone.pid, children=False) == 0.0
    meter = CpuMeter({"me": os.getpid()}, children={"me": False})
    meter.start()
    started = cpu_s(os.getpid(), children=False)
    while cpu_s(os.getpid(), children=False) == started:  # at least one clock tick
        pass
    spent = meter.stop()
    assert set(spent) == {"me"} and spent["me"] > 0.0


def test_the_report_splits_broker_and_non_broker_per_trace() -> None:
    run = Phase({"broker": 3.0, "worker": 6.0, "producer": 1.0}, items=1000, wall_s=5.0)
    idle = Phase({"broker": 1.0, "worker": 0.5}, items=0, wall_s=2.0)
    report = CpuReport(run, "broker", idle=idle).as_dict()
    assert report["total_ms_per_trace"] == 10.0
    assert report["broker_ms_per_trace"] == 3.0 and report["non_broker_ms_per_trace"] == 7.0
    assert report["broker_share"] == 0.3
    worker = report["processes"]["worker"]
    assert worker["ms_per_trace"] == 6.0 and worker["cores"] == 1.2 and worker["idle_ms_per_s"] == 250.0
    assert report["processes"]["producer"]["idle_ms_per_s"] is None
    table = CpuReport(run, "broker", idle=idle).table()
    assert "non-broker" in table and "7.000" in table
