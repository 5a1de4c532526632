"""pipeline/shutdown.py: the first signal begins a stop, the deadline or a second signal ends the process and
its children (SIGTERM, then SIGKILL). Each case runs in a process of its own, since it installs handlers and exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A command whose graceful stop never finishes (`begin` does nothing), with two children in their own
# sessions, as the broker and the sandboxes are: one exits on SIGTERM, one ignores it.
HUNG = """
import subprocess, sys, time
from pipeline.shutdown import Shutdown
shutdown = Shutdown(timeout_s=float(sys.argv[1]))
shutdown.install()
polite = subprocess.Popen(["sleep", "60"], start_new_session=True)
stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"], start_new_session=True)
shutdown.track(polite.pid)  # the other is found as a child in /proc
try:
    with shutdown.stopping_with(lambda signum: None):
        print(polite.pid, stubborn.pid, flush=True)
        time.sleep(60)
finally:
    shutdown.finish()
"""

# A command that stops when asked: `begin` sets a flag its loop checks.
GRACEFUL = """
import sys, time
from pipeline.shutdown import Shutdown
shutdown = Shutdown(timeout_s=5)
shutdown.install()
asked = []
try:
    if sys.argv[1] == "running":
        with shutdown.stopping_with(asked.append):
            print("ready", flush=True)
            while not asked:
                time.sleep(0.01)
    else:  # starting: nothing to schedule a stop on yet, so the signal unwinds the start
        print("ready", flush=True)
        time.sleep(60)
finally:
    shutdown.finish()
print("not reached: finish() exits", flush=True)
"""


def run(script: str, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    process.first_line = process.stdout.readline().split()  # type: ignore[attr-defined]
    return process


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def leftover(pids: list[int]) -> list[int]:
    """The children still running; killed, so that a failing test leaks none."""
    left = [pid for pid in pids if alive(pid)]
    for pid in left:
        os.killpg(pid, signal.SIGKILL)
    return left


def stop(process: subprocess.Popen[str], *signals: signal.Signals, gap_s: float = 0.3) -> tuple[float, str, str]:
    started = time.monotonic()
    for i, sig in enumerate(signals):
        if i:
            time.sleep(gap_s)
        process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=30)
    return time.monotonic() - started, stdout, stderr


def test_the_deadline_ends_a_hung_stop_and_every_child() -> None:
    process = run(HUNG, "2")
    children = [int(pid) for pid in process.first_line]  # type: ignore[attr-defined]
    try:
        elapsed, _, stderr = stop(process, signal.SIGTERM)
    finally:
        left = leftover(children)
    assert 0.9 < elapsed < 2.5, stderr
    assert process.returncode == 1
    assert "SIGTERM: stopping, within 2 s" in stderr and "still stopping after" in stderr, stderr
    assert not left


def test_a_second_signal_ends_it_at_once() -> None:
    process = run(HUNG, "30")
    children = [int(pid) for pid in process.first_line]  # type: ignore[attr-defined]
    try:
        elapsed, _, stderr = stop(process, signal.SIGINT, signal.SIGINT)
    finally:
        left = leftover(children)
    assert elapsed < 1.5, stderr
    assert process.returncode == 128 + signal.SIGINT
    assert "SIGINT again: stopping at once" in stderr, stderr
    assert not left


def test_a_stop_that_finishes_exits_cleanly_and_says_so() -> None:
    for state in ("running", "starting"):
        process = run(GRACEFUL, state)
        elapsed, stdout, stderr = stop(process, signal.SIGINT)
        assert elapsed < 1.5 and process.returncode == 0, (state, stderr)
        assert "SIGINT: stopping" in stderr and "evalstream: stopped (" in stderr, (state, stderr)
        assert "Traceback" not in stderr and "not reached" not in stdout
