"""The worker's side of one long-lived sandbox process: start, send jobs, enforce the wall clock.

Every job gets a timer when it is sent. When it fires and the job is still running, the whole
process group is killed: that job fails with SandboxTimeoutError and the others that were
running there with SandboxInterruptedError (retryable: they were not at fault). When the process
dies on its own, every job it was running fails with the reason read from its exit status.
A job whose caller gave up (the runner's own timeout) keeps its slot and its timer until the
process answers or is killed, so an abandoned hung job still gets the process killed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.scoring.sandbox import protocol
from pipeline.scoring.sandbox.errors import (
    SandboxCPUError,
    SandboxError,
    SandboxExitError,
    SandboxInterruptedError,
    SandboxMemoryError,
    SandboxSetupError,
    SandboxTimeoutError,
    UploadedScorerError,
    UploadedScorerRetryableError,
)
from pipeline.scoring.sandbox.limits import SandboxLimits
from scorers.base import ScoreTarget

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 1 << 30
_CHILD_MODULE = "pipeline.scoring.sandbox.child"


@dataclass(frozen=True)
class SandboxSpec:
    """What to run: `label` is `name@version` in logs and error messages."""

    label: str
    python: Path
    source: Path
    entry: str
    workdir: Path  # cwd, HOME and TMPDIR of the process
    env: Mapping[str, str]
    launcher: tuple[str, ...] = ()  # confines the command before it starts (isolation.py)


@dataclass
class _Job:
    future: asyncio.Future[protocol.ScoreReply]
    timer: asyncio.TimerHandle


def describe_exit(returncode: int, stderr_tail: str, limits: SandboxLimits, label: str) -> SandboxError:
    """Why a sandbox process ended, as the error its running jobs get."""
    last = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else ""
    if returncode < 0:
        number = -returncode
        if number == signal.SIGXCPU:
            return SandboxCPUError(f"sandbox of {label} exceeded the CPU limit of {limits.cpu_s} CPU-seconds "
                                   "per process (EVALSTREAM_SANDBOX_CPU_S)")
        name = signal.Signals(number).name if number in signal.valid_signals() else f"signal {number}"
        if number == signal.SIGKILL:
            return SandboxExitError(f"sandbox of {label} was killed by SIGKILL (the CPU hard limit, the kernel's "
                                    "out-of-memory killer, or an operator)")
        return SandboxExitError(f"sandbox of {label} was killed by {name}" + (f": {last}" if last else ""))
    if "MemoryError" in stderr_tail:
        return SandboxMemoryError(f"sandbox of {label} exceeded memory limit of {limits.memory_mb} MiB "
                                  f"(EVALSTREAM_SANDBOX_MEMORY_MB) and exited with code {returncode}")
    hint = "os._exit" if returncode != 1 else "a fatal error"
    return SandboxExitError(f"sandbox of {label} exited with code {returncode} while running the job ({hint})"
                            + (f": {last}" if last and returncode == 1 else ""))


class SandboxProcess:
    def __init__(self, spec: SandboxSpec, limits: SandboxLimits) -> None:
        self.spec = spec
        self.limits = limits
        self.info: dict[str, Any] = {}
        self.cpu_s = 0.0
        self.jobs_done = 0
        self.last_used = time.monotonic()
        self.exited = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._pending: dict[int, _Job] = {}
        self._next_id = 0
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._killed_for: tuple[int, SandboxError] | None = None
        self._stderr_tail: deque[str] = deque(maxlen=20)
        self._stderr_task: asyncio.Task[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None and not self.exited.is_set()

    @property
    def running(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        """Spawn the process and wait for its `ready` (the uploaded module imported fine)."""
        self.spec.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.spec.launcher, str(self.spec.python), "-I", "-m", _CHILD_MODULE,
                "--source", str(self.spec.source), "--entry", self.spec.entry, "--cpu-s", str(self.limits.cpu_s),
                "--memory-mb", str(self.limits.memory_mb), "--parent-pid", str(os.getpid()),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=dict(self.spec.env), cwd=self.spec.workdir, start_new_session=True, limit=MAX_LINE_BYTES,
            )
        except OSError as exc:
            self.exited.set()
            raise SandboxSetupError(f"sandbox of {self.label}: cannot run {self.spec.python}: {exc}") from None
        self._stderr_task = asyncio.create_task(self._pump_stderr())
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), self.limits.start_timeout_s)
        except TimeoutError:
            self._kill()
            await self._process.wait()
            self.exited.set()
            raise SandboxSetupError(f"sandbox of {self.label} did not start within {self.limits.start_timeout_s:g} s "
                                    "(importing the scorer takes too long; EVALSTREAM_SANDBOX_START_TIMEOUT_S)") from None
        try:
            message = protocol.loads(line) if line else {"op": ""}
        except ValueError:
            message = {"op": "", "message": line[:500].decode(errors="replace")}
        if message["op"] != protocol.READY:
            self._kill()
            returncode = await self._process.wait()
            await self._drain_stderr()
            self.exited.set()
            if message["op"] == protocol.LOAD_ERROR:
                raise SandboxSetupError(f"uploaded scorer {self.label} failed to import: {message.get('message')}")
            raise SandboxSetupError(f"sandbox of {self.label} exited with code {returncode} before it was ready: "
                                    f"{self._tail()[-2000:] or '(no output)'}")
        self.info = message
        self._reader_task = asyncio.create_task(self._read())
        log.info("sandbox %s: started, pid %d, uid %s", self.label, self._process.pid, message.get("uid"))

    async def score(self, params: dict[str, Any], target: ScoreTarget) -> protocol.ScoreReply:
        await self._slots.acquire()
        if not self.alive or self._process is None or self._process.stdin is None:
            self._slots.release()
            raise SandboxInterruptedError(f"sandbox of {self.label} exited before the job started; retrying")
        self._next_id += 1
        request_id = self._next_id
        self.last_used = time.monotonic()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[protocol.ScoreReply] = loop.create_future()
        timer = loop.call_later(self.limits.timeout_s, self._expire, request_id)
        self._pending[request_id] = _Job(future, timer)
        try:
            self._process.stdin.write(protocol.score_request(request_id, params, target))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the process is dying: `_read` fails this job with the reason
        return await future

    def _finish(self, request_id: int, outcome: protocol.ScoreReply | SandboxError) -> None:
        job = self._pending.pop(request_id, None)
        if job is None:
            return
        job.timer.cancel()
        self._slots.release()
        self.jobs_done += 1
        self.last_used = time.monotonic()
        if job.future.done():
            return  # the caller gave up on it
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)

    def _expire(self, request_id: int) -> None:
        if request_id not in self._pending or self._killed_for is not None:
            return
        log.error("sandbox %s: a job exceeded %g s wall clock; killing pid %s and its process group",
                  self.label, self.limits.timeout_s, self.pid)
        self._killed_for = (request_id, SandboxTimeoutError(
            f"sandbox of {self.label} killed after {self.limits.timeout_s:g} s wall clock (EVALSTREAM_SANDBOX_TIMEOUT_S)"))
        self._kill()

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        try:
            while line := await self._process.stdout.readline():
                try:
                    message = protocol.loads(line)
                    self._on_message(message)
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("sandbox %s: unreadable reply (%s): %.200r", self.label, exc, line)
        except (ValueError, ConnectionError) as exc:  # a line over MAX_LINE_BYTES, or the pipe broke
            log.error("sandbox %s: reading replies failed: %s", self.label, exc)
            self._kill()
        returncode = await self._process.wait()
        await self._drain_stderr()
        self._kill()  # grandchildren the scorer may have left behind
        self._fail_pending(returncode)
        self.exited.set()
        log.log(logging.INFO if self._killed_for is None and not self._pending else logging.WARNING,
                "sandbox %s: pid %s ended with code %s after %d job(s)", self.label, self.pid, returncode,
                self.jobs_done)

    def _on_message(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op not in (protocol.RESULT, protocol.ERROR):
            raise ValueError(f"unexpected op {op!r}")
        self.cpu_s = float(message.get("cpu_s") or self.cpu_s)
        request_id = int(message["id"])
        if op == protocol.RESULT:
            try:
                self._finish(request_id, protocol.ScoreReply.from_message(message))
            except ValueError as exc:
                self._finish(request_id, UploadedScorerError(f"{self.label} returned an invalid score: {exc}"))
            return
        self._finish(request_id, self._error_for(message))

    def _error_for(self, message: dict[str, Any]) -> SandboxError:
        text = str(message.get("message") or message.get("error_type") or "error")
        if message.get("error_type") == "MemoryError":
            return SandboxMemoryError(f"{self.label} exceeded memory limit of {self.limits.memory_mb} MiB "
                                      f"(EVALSTREAM_SANDBOX_MEMORY_MB): {text}")
        if message.get("retryable"):
            return UploadedScorerRetryableError(f"{self.label}: {text}")
        return UploadedScorerError(f"{self.label}: {text}")

    def _fail_pending(self, returncode: int) -> None:
        if not self._pending:
            return
        if self._killed_for is not None:
            culprit, error = self._killed_for
            for request_id in list(self._pending):
                self._finish(request_id, error if request_id == culprit else SandboxInterruptedError(
                    f"sandbox of {self.label} was killed because another job exceeded {self.limits.timeout_s:g} s "
                    "wall clock; retrying"))
            return
        error = describe_exit(returncode, self._tail(), self.limits, self.label)
        others = len(self._pending) - 1
        if others:
            error = type(error)(f"{error} (and {others} other job(s) running in the same process)")
        log.error("sandbox %s: %s", self.label, error)
        for request_id in list(self._pending):
            self._finish(request_id, error)

    async def _pump_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        while line := await self._process.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self._stderr_tail.append(text)
            log.info("sandbox %s: %s", self.label, text)

    async def _drain_stderr(self) -> None:
        # A grandchild may hold stderr open: do not wait for it long.
        if self._stderr_task is not None:
            await asyncio.wait([self._stderr_task], timeout=1.0)

    def _tail(self) -> str:
        return "\n".join(self._stderr_tail)

    def _kill(self) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    async def stop(self, grace_s: float = 5.0) -> None:
        """Let the running jobs finish (closing stdin asks the child to exit), then kill what is left."""
        if self._process is None:
            return
        if self._process.stdin is not None and not self._process.stdin.is_closing():
            self._process.stdin.close()
        if self._reader_task is not None:
            await asyncio.wait([self._reader_task], timeout=grace_s)
        if not self.exited.is_set():
            self._kill()
            if self._reader_task is not None:
                await asyncio.wait([self._reader_task], timeout=5.0)
            else:
                await self._process.wait()
        for task in (self._stderr_task, self._reader_task):
            if task is not None and not task.done():
                task.cancel()
