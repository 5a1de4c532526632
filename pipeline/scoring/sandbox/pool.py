"""The sandbox processes of one worker: one long-lived process per uploaded scorer version in use.

A process is started on first use (after its venv is ready), restarted on the next job after it
died, replaced once it used half its CPU-seconds limit, and stopped when a newer version of its
scorer arrives, after `IDLE_STOP_S` without jobs, or when the worker stops. A version that failed to set up (pip, import) fails its jobs
at once for `SETUP_RETRY_S`, instead of retrying the install for every job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.contracts.uploads import UploadedScorer
from pipeline.scoring.sandbox.environment import hide_process_environment, scorer_env
from pipeline.scoring.sandbox.errors import SandboxError, SandboxSetupError
from pipeline.scoring.sandbox.isolation import Isolation, resolve_isolation
from pipeline.scoring.sandbox.limits import SandboxLimits
from pipeline.scoring.sandbox.process import SandboxProcess, SandboxSpec
from pipeline.scoring.sandbox.protocol import ScoreReply
from pipeline.scoring.sandbox.venvs import VenvCache
from scorers.base import ScoreTarget

log = logging.getLogger(__name__)

SETUP_RETRY_S = 30.0
IDLE_STOP_S = 600.0


class SandboxPool:
    def __init__(self, root: Path, limits: SandboxLimits, *, parent_env: Mapping[str, str] | None = None) -> None:
        self.root = root.resolve()
        self.limits = limits
        self.parent_env = dict(os.environ if parent_env is None else parent_env)
        self.venvs = VenvCache(self.root / "venvs", install_timeout_s=limits.install_timeout_s,
                               parent_env=self.parent_env, env_allow=limits.env_allow, isolation=self.isolation)
        self._current: dict[str, SandboxProcess] = {}  # by label (name@version)
        self._starting: dict[str, asyncio.Task[SandboxProcess]] = {}
        self._failed: dict[str, tuple[float, SandboxError]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._live: set[SandboxProcess] = set()  # current, and retired ones still finishing their jobs
        self._isolation: asyncio.Future[Isolation] | None = None
        hide_process_environment()  # the scrubbed env means nothing if /proc/<worker>/environ is readable

    async def isolation(self) -> Isolation:
        """What the kernel allows, found once per process (the worker asks at start-up, which logs
        every part that is not enforced); the user is created here when missing."""
        if self._isolation is None:
            self._isolation = asyncio.ensure_future(asyncio.to_thread(
                resolve_isolation, self.limits.uid, self.limits.gid, str(self.root)))
        isolation = await asyncio.shield(self._isolation)
        if self.limits.require_isolation and not isolation.complete:
            raise SandboxSetupError("uploaded scorers do not run here: EVALSTREAM_SANDBOX_REQUIRE_ISOLATION is set "
                                    "and the sandbox is incomplete: " + "; ".join(isolation.problems))
        return isolation

    def processes(self) -> list[SandboxProcess]:
        return [p for p in self._current.values() if p.alive]

    async def score(self, upload: UploadedScorer, params: dict[str, Any], target: ScoreTarget) -> ScoreReply:
        self._stop_idle()
        process = await self.process_for(upload)
        reply = await process.score(params, target)
        if process.cpu_s > self.limits.recycle_cpu_s and self._current.get(upload.label) is process:
            log.info("sandbox %s: used %.0f of %d CPU-seconds; replacing it", upload.label, process.cpu_s,
                     self.limits.cpu_s)
            del self._current[upload.label]
            self._in_background(process.stop(grace_s=self.limits.timeout_s + 1))
        return reply

    async def process_for(self, upload: UploadedScorer) -> SandboxProcess:
        label = upload.label
        process = self._current.get(label)
        if process is not None and process.alive:
            return process
        failed = self._failed.get(label)
        if failed is not None and failed[0] > time.monotonic():
            raise failed[1]
        task = self._starting.get(label)
        if task is None:
            task = self._starting[label] = asyncio.create_task(self._start(upload))
            task.add_done_callback(lambda _: self._starting.pop(label, None))
        return await asyncio.shield(task)  # a job that gives up must not abort a start others wait for

    async def _start(self, upload: UploadedScorer) -> SandboxProcess:
        label = upload.label
        try:
            isolation = await self.isolation()
            python = await self.venvs.ensure(upload.requirements)
            source = self._write_source(upload)
            (self.root / "run").mkdir(parents=True, exist_ok=True)
            workdir = Path(tempfile.mkdtemp(prefix=f"{upload.name}-", dir=self.root / "run"))
            isolation.give(workdir)  # its HOME and TMPDIR: the only directory on disk it may write
            env = scorer_env(self.parent_env, self.limits.env_allow, venv_bin=python.parent, home=workdir)
            launcher = isolation.launcher(network=upload.network, ro=[python.parent.parent, source.parent],
                                          rw=[workdir], cwd=workdir)
            process = SandboxProcess(SandboxSpec(label, python, source, upload.entry, workdir, env, launcher),
                                     self.limits)
            await process.start()
        except Exception as exc:  # noqa: BLE001 - any set-up failure becomes the error of this version's jobs
            error = exc if isinstance(exc, SandboxError) else SandboxSetupError(
                f"sandbox of {label} could not be set up: {type(exc).__name__}: {exc}")
            self._failed[label] = (time.monotonic() + SETUP_RETRY_S, error)
            log.error("sandbox %s: %s (jobs fail at once for %g s, then it is tried again)", label, error,
                      SETUP_RETRY_S)
            raise error from None
        self._failed.pop(label, None)
        self._current[label] = process
        self._live.add(process)
        self._in_background(self._clean_up_after(process))
        return process

    def _write_source(self, upload: UploadedScorer) -> Path:
        path = self.root / "sources" / upload.name / upload.version / upload.filename
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.parent.chmod(0o755)  # the sandbox user reads it; no one else writes it
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(upload.source, encoding="utf-8")
            tmp.chmod(0o644)
            os.replace(tmp, path)
        return path

    async def _clean_up_after(self, process: SandboxProcess) -> None:
        await process.exited.wait()
        self._live.discard(process)
        shutil.rmtree(process.spec.workdir, ignore_errors=True)

    def _in_background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def prepare(self, upload: UploadedScorer) -> None:
        """A version became current: retire the older versions' processes, and get this one ready
        before its first job: started if an older one was in use, else only its venv built."""
        in_use = False
        for label, process in list(self._current.items()):
            if label.partition("@")[0] == upload.name and label != upload.label:
                del self._current[label]
                in_use = in_use or process.alive
                log.info("sandbox %s: replaced by %s; stopping once its jobs finish", label, upload.label)
                self._in_background(process.stop(grace_s=self.limits.timeout_s + 1))
        self._in_background(self._prepare(upload, start=in_use))

    async def _prepare(self, upload: UploadedScorer, *, start: bool) -> None:
        try:
            if start:
                await self.process_for(upload)
            else:
                await self.venvs.ensure(upload.requirements)
        except SandboxError as exc:
            if not start:  # _start logs its own failures
                log.error("sandbox %s: %s", upload.label, exc)

    def _stop_idle(self) -> None:
        now = time.monotonic()
        for label, process in list(self._current.items()):
            if process.running == 0 and now - process.last_used > IDLE_STOP_S:
                del self._current[label]
                log.info("sandbox %s: no job for %g s; stopping it", label, IDLE_STOP_S)
                self._in_background(process.stop(grace_s=1.0))

    async def close(self) -> None:
        self.venvs.cancel()  # a pip install must not hold the worker's exit for minutes
        for task in list(self._starting.values()):
            task.cancel()
        self._current.clear()
        await asyncio.gather(*(p.stop(grace_s=1.0) for p in list(self._live)), return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        self._live.clear()
