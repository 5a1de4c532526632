"""How a long-running command (`evalstream up`, `evalstream worker`) stops on SIGINT or SIGTERM: promptly.

The first signal begins a graceful stop: the worker stops its agents and the sink (which commits only
what it stored), then `up` stops the embedded broker. Whatever still runs `timeout_s` after that signal
is ended: child processes get SIGTERM, then SIGKILL, and the process exits. A second signal does that at
once. Each step is written to stderr, so the user sees what is being stopped.

The handlers are Python's (`signal.signal`), not the event loop's: they work before the loop runs, while
it stops and after it closed, and the deadline is a thread of its own, so a hung stop cannot hold it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["FORCE_GRACE_S", "Shutdown", "child_pids", "end_processes"]

FORCE_GRACE_S = 1.0  # when ending by force: SIGTERM, then SIGKILL for what is left after this


def _interrupt(signum: int) -> None:
    raise KeyboardInterrupt  # nothing async runs yet: unwind, and the `finally` blocks stop what started


def _already_stopping(signum: int) -> None:
    pass


class Shutdown:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._began_at: float | None = None
        self._begin: Callable[[int], None] = _interrupt
        self._tracked: set[int] = set()
        self._ending = threading.Lock()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    @contextmanager
    def stopping_with(self, begin: Callable[[int], None]) -> Iterator[None]:
        """Inside the block the first signal calls `begin(signum)`, from the signal handler: it must only
        schedule the stop. Outside, before any block it raises KeyboardInterrupt, after one it does nothing."""
        self._begin = begin
        try:
            yield
        finally:
            self._begin = _already_stopping

    def track(self, pid: int | None) -> None:
        """A child to end by force (children are also found in /proc, where there is one)."""
        if pid is not None:
            self._tracked.add(pid)

    @property
    def stopping(self) -> bool:
        return self._began_at is not None

    def elapsed_s(self) -> float:
        return 0.0 if self._began_at is None else time.monotonic() - self._began_at

    def say(self, message: str) -> None:
        """One line on stderr, unbuffered: safe from a signal handler and any thread, and not swallowed by
        the worker's redirection of sys.stderr into its log."""
        try:
            os.write(2, f"evalstream: {message}\n".encode())
        except OSError:
            pass

    def finish(self) -> None:
        """Call last, in a `finally`: once the stop a signal began is done, exit at once. The interpreter's own
        teardown (litellm's exit hooks, joining threads, freeing modules) takes over a second, and a thread
        stuck in a call (a ClickHouse insert) would hold it for ever."""
        if self._began_at is None or not self._ending.acquire(blocking=False):
            return  # no signal; or the deadline is ending the process already
        exc = sys.exc_info()[1]
        if isinstance(exc, SystemExit):  # how the worker returns: 0 when it stopped cleanly
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        elif exc is None or isinstance(exc, KeyboardInterrupt):
            code = 0
        else:
            traceback.print_exception(exc)
            code = 1
        self.say(f"stopped ({self.elapsed_s():.1f} s)")
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)

    def _on_signal(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self._began_at is not None:
            self.end_now(f"{name} again: stopping at once", 128 + signum, grace_s=0.2)
            return
        self._began_at = time.monotonic()
        self.say(f"{name}: stopping, within {self.timeout_s:g} s (Ctrl-C again to stop at once)")
        threading.Thread(target=self._deadline, name="evalstream-stop-deadline", daemon=True).start()
        self._begin(signum)

    def _deadline(self) -> None:
        time.sleep(max(0.0, self.timeout_s - FORCE_GRACE_S))
        self.end_now(f"still stopping after {self.elapsed_s():.1f} s: ending it", 1)

    def end_now(self, reason: str, code: int, grace_s: float = FORCE_GRACE_S) -> None:
        """End the children (SIGTERM, then SIGKILL after `grace_s`) and exit without further clean-up. Nothing
        the sink did not store was committed, so nothing is lost: it is read again at the next start."""
        if not self._ending.acquire(blocking=False):
            return  # another thread is ending the process already
        pids = sorted(self._tracked | set(child_pids()))
        self.say(reason + (f"; ending child processes {', '.join(map(str, pids))}" if pids else ""))
        end_processes(pids, grace_s)
        os._exit(code)


def child_pids() -> list[int]:
    """This process's children, from /proc (none where there is no /proc: then only tracked ones are ended)."""
    me, found = os.getpid(), []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[-1].split()  # after "pid (comm)": state, ppid, ...
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(entry))
    return found


def _signal(pid: int, sig: int) -> None:
    """A child that leads its own process group (the broker, sandboxes, pip) gets it with its group."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _gone(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid  # reaped now
    except ChildProcessError:  # not our child (or reaped elsewhere): ask whether it still exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def end_processes(pids: list[int], grace_s: float) -> None:
    """SIGTERM each, wait up to `grace_s` for them to exit, SIGKILL the rest."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    left = list(pids)
    deadline = time.monotonic() + grace_s
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if not _gone(pid)]
        if left:
            time.sleep(0.02)
    for pid in left:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 0.2  # reap them: where PID 1 does not, an orphan stays a zombie
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if not _gone(pid)]
        if left:
            time.sleep(0.01)
