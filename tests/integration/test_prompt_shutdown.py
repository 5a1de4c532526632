"""SIGINT / SIGTERM stop `evalstream up` and everything it started within 10 s, in its sink's back-off too, and
the sink commits nothing it did not store (issue 16: Ctrl-C was ignored for ~30 s while ClickHouse refused).

ClickHouse refuses for real: the `traces` table's data directory is swapped for a file, so chDB cannot write
the insert's part ("Not a directory"), as with a failed disk; every other table keeps working."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from pipeline import topics
from pipeline.runfile import read_run_file
from tests.integration.harness import FAST_ENV, batch, committed_offsets, produce, span
from tests.integration.test_sink_outage import trace

pytestmark = pytest.mark.integration

STOP_S = 10.0  # the promise: the whole process tree is gone this long after the signal
STORED, REFUSED = 5, 20


def start_up(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], dict[str, Any], Path]:
    data, log_path = tmp_path / "data", tmp_path / "up.log"
    environ = {k: v for k, v in os.environ.items() if k not in ("EVALSTREAM_KAFKA_BOOTSTRAP", "EVALSTREAM_CLICKHOUSE_DSN")}
    environ.update(FAST_ENV, EVALSTREAM_DATA_DIR=str(data), **env)
    with open(log_path, "wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "up"], env=environ, stdout=log,
                              stderr=subprocess.STDOUT)
    deadline, run = time.monotonic() + 90, {}
    while not (run.get("query_url") and run.get("kafka_bootstrap")):
        if up.poll() is not None or time.monotonic() > deadline:
            up.kill()
            raise AssertionError(f"`up` did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
        run = read_run_file(data / "run.json")
    return up, run, log_path


def http(run: dict[str, Any], path: str, sql: str | None = None) -> Any:
    body = None if sql is None else json.dumps({"sql": sql}).encode()
    with urllib.request.urlopen(urllib.request.Request(run["query_url"] + path, data=body), timeout=30) as response:
        return json.loads(response.read())


def scalar(run: dict[str, Any], sql: str) -> Any:
    return http(run, "/query", sql)["rows"][0][0]


def wait_for(check: Any, what: str, log_path: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{log_path.read_text()[-3000:]}"
        time.sleep(0.2)


def send_traces(bootstrap: str, numbers: range) -> None:
    """Closed traces straight onto the sink's traces topic, all on partition 0: trace i is at offset i."""
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            for i in numbers:
                await producer.send(topics.TRACES, trace(i), key=f"o{i:04d}".encode(), partition=0)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())


def process_tree(pid: int) -> list[int]:
    """The process and its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes() if entry.isdigit() else b""
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[-1].split()
        if len(fields) > 1:
            parents[int(entry)] = int(fields[1])
    tree, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sorted(tree)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")  # a zombie has exited; only its parent's wait is missing


def stop_and_time(up: subprocess.Popen[bytes], sig: signal.Signals, log_path: Path) -> float:
    """Send the signal; return how long until the whole process tree was gone (failing past STOP_S)."""
    tree = process_tree(up.pid)
    started = time.monotonic()
    up.send_signal(sig)
    try:
        up.wait(timeout=STOP_S)
        while any(alive(pid) for pid in tree) and time.monotonic() - started < STOP_S:
            time.sleep(0.05)
    except subprocess.TimeoutExpired:
        pass
    elapsed = time.monotonic() - started
    left = [pid for pid in tree if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    if up.poll() is None:
        up.wait()
    assert not left and elapsed < STOP_S, (
        f"{sig.name}: {left} still running after {elapsed:.1f} s\n{log_path.read_text()[-4000:]}")
    return elapsed


def test_sigint_in_the_sinks_back_off_stops_up_within_10_s_and_commits_nothing_it_did_not_store(
        broker: str, tmp_path: Path) -> None:
    # The fixture's broker, not the embedded one, so that the sink's committed offsets outlive `up`.
    up, run, log_path = start_up(tmp_path, EVALSTREAM_KAFKA_BOOTSTRAP=broker)
    group = "evalstream-sink"
    try:
        send_traces(broker, range(STORED))
        wait_for(lambda: scalar(run, "SELECT count() FROM evalstream.traces") == STORED, "the first traces", log_path)
        wait_for(lambda: committed_offsets(broker, group, topics.TRACES, 4)[0] == STORED, "their commit", log_path)

        table_dir = Path(scalar(run, "SELECT data_paths[1] FROM system.tables "
                                     "WHERE database = 'evalstream' AND name = 'traces'"))
        aside = table_dir.with_name(table_dir.name + ".aside")
        table_dir.rename(aside)
        table_dir.write_text("")  # ClickHouse refuses every insert into traces from now on
        send_traces(broker, range(STORED, STORED + REFUSED))
        # Refused three times: the sink holds the batch, has committed none of it and waits out its back-off.
        wait_for(lambda: http(run, "/health")["counters"].get("sink_insert_errors", 0) >= 3, "refused inserts",
                 log_path)

        elapsed = stop_and_time(up, signal.SIGINT, log_path)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    log = log_path.read_text()
    assert up.returncode == 0, log[-3000:]
    for said in ("evalstream: SIGINT: stopping", "evalstream: stopping the worker", "evalstream: stopped ("):
        assert said in log, log[-3000:]

    # Nothing past what was stored is committed: the refused traces are read again at the next start.
    assert committed_offsets(broker, group, topics.TRACES, 4)[0] == STORED, f"stopped in {elapsed:.1f} s"
    table_dir.unlink()
    aside.rename(table_dir)
    # Nothing runs, so `evalstream sql` opens the path itself, in its own process: chDB allows one path per
    # process, and this test process may have opened another test's.
    listed = subprocess.run([sys.executable, "-m", "pipeline.cli", "sql", "--format", "json",
                             "SELECT trace_id FROM evalstream.traces ORDER BY trace_id"],
                            check=False, env={**os.environ, "EVALSTREAM_DATA_DIR": str(tmp_path / "data")},
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    stored = [json.loads(line)["trace_id"] for line in listed.stdout.splitlines() if line.strip()]
    assert stored == [f"o{i:04d}" for i in range(STORED)]


def test_sigterm_stops_a_running_up_and_its_broker_within_10_s(tmp_path: Path) -> None:
    up, run, log_path = start_up(tmp_path)  # the embedded broker: a child of `up`
    try:
        root = span("t1", "t1-r", None, "handle")
        produce(run["kafka_bootstrap"], [(b"t1", batch("t1", [root], final=True))])
        wait_for(lambda: scalar(run, "SELECT count() FROM evalstream.traces") == 1, "the trace stored", log_path)
        assert len(process_tree(up.pid)) >= 2, "the embedded broker is not a child of `up`"

        stop_and_time(up, signal.SIGTERM, log_path)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    log = log_path.read_text()
    assert up.returncode == 0, log[-3000:]
    assert "evalstream: stopping the embedded broker" in log, log[-3000:]
    leftover = read_run_file(tmp_path / "data" / "run.json")
    assert not leftover.get("query_url") and not leftover.get("kafka_bootstrap"), leftover
