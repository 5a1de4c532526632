"""One virtualenv per requirements set, cached on disk and shared by every worker on the host.

A venv sees the worker's own packages (evalstream's `scorers`, and every library already
installed) through a `.pth` file, after its own site-packages: a requirement the worker already
satisfies installs nothing, and one pinned differently installs into the venv and wins there.
Creation is serialized across processes with a file lock; a venv is used only once its
`.ready` marker exists, so a build killed half-way is rebuilt, never used.

`pip install` runs what an upload names (an sdist's build backend is arbitrary code), so it runs
confined like the scorer, as the sandbox user, with the network but writing only into the venv
and a temporary directory; then the venv is the worker's again, read-only for every scorer.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import scorers
from pipeline.scoring.sandbox.environment import install_env
from pipeline.scoring.sandbox.errors import SandboxSetupError

if TYPE_CHECKING:
    from pipeline.scoring.sandbox.isolation import Isolation

log = logging.getLogger(__name__)

_READY = ".ready"


def parent_site_dirs() -> list[str]:
    """Where the worker finds its packages: its site-packages, and the source tree of `scorers`."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    dirs.append(str(Path(scorers.__file__).resolve().parents[1]))
    seen: dict[str, None] = {}
    for d in dirs:
        if os.path.isdir(d):
            seen.setdefault(os.path.realpath(d), None)
    return list(seen)


def venv_key(requirements: Sequence[str], site_dirs: Sequence[str]) -> str:
    identity = [sys.version, os.path.realpath(sys.executable), list(site_dirs), sorted(requirements)]
    return hashlib.blake2b(json.dumps(identity).encode(), digest_size=8).hexdigest()


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _purelib(venv: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))


class VenvCache:
    def __init__(self, root: Path, *, install_timeout_s: float, parent_env: Mapping[str, str],
                 env_allow: Sequence[str] = (), isolation: Callable[[], Awaitable[Isolation]] | None = None) -> None:
        self.root = root.resolve()
        self.isolation = isolation
        self.install_timeout_s = install_timeout_s
        self.parent_env = parent_env
        self.env_allow = tuple(env_allow)
        self.site_dirs = parent_site_dirs()
        self._builds: dict[str, asyncio.Task[Path]] = {}
        self._running: set[subprocess.Popen[bytes]] = set()
        self._cancelled = False

    def path_for(self, requirements: Sequence[str]) -> Path:
        return self.root / venv_key(requirements, self.site_dirs)

    async def ensure(self, requirements: Sequence[str]) -> Path:
        """The venv's python for these requirements, building the venv first if needed."""
        venv = self.path_for(requirements)
        if (venv / _READY).exists():
            return venv_python(venv)
        isolation = await self.isolation() if self.isolation is not None else None  # who runs pip
        build = self._builds.get(venv.name)
        if build is None:
            build = self._builds[venv.name] = asyncio.create_task(
                asyncio.to_thread(self.build, venv, requirements, isolation))
            build.add_done_callback(lambda _: self._builds.pop(venv.name, None))
        return await asyncio.shield(build)  # a cancelled job must not abandon a half-built venv

    def build(self, venv: Path, requirements: Sequence[str], isolation: Isolation | None = None) -> Path:
        """Blocking: create the venv and install the requirements, under an exclusive file lock."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{venv.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (venv / _READY).exists():
                return venv_python(venv)  # another process built it while we waited
            shutil.rmtree(venv, ignore_errors=True)
            self._run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "creating the venv", timeout_s=120)
            lines = [f"import site; site.addsitedir({d!r})" for d in self.site_dirs]
            (_purelib(venv) / "_evalstream_worker_packages.pth").write_text("\n".join(lines) + "\n")
            if requirements:
                if importlib.util.find_spec("pip") is None:
                    raise SandboxSetupError("pip is not installed in the worker's environment; install it to "
                                            "run uploaded scorers with requirements")
                req_file = venv / "requirements.txt"
                req_file.write_text("\n".join(requirements) + "\n")
                started = time.monotonic()
                self._install(venv, req_file, requirements, isolation)
                log.info("sandbox venv %s: installed %s in %.1f s", venv.name, ", ".join(requirements),
                         time.monotonic() - started)
            if isolation is not None:
                isolation.take_back_tree(venv)  # the worker's, readable by the sandbox user
            (venv / _READY).write_text(json.dumps(sorted(requirements)))
            return venv_python(venv)

    def _install(self, venv: Path, req_file: Path, requirements: Sequence[str], isolation: Isolation | None) -> None:
        command = [str(venv_python(venv)), "-m", "pip", "install", "--no-input", "--progress-bar", "off",
                   "-r", str(req_file)]
        what = f"pip install {' '.join(requirements)}"
        env = install_env(self.parent_env, self.env_allow, venv_bin=venv / "bin")
        if isolation is None:
            self._run(command, what, timeout_s=self.install_timeout_s, env=env)
            return
        tmp = Path(tempfile.mkdtemp(prefix=".pip-", dir=self.root))
        try:
            isolation.give(tmp)
            isolation.give_tree(venv)
            env.update(HOME=str(tmp), TMPDIR=str(tmp))  # pip's cache and builds; the worker's HOME is not visible
            launcher = isolation.launcher(network=True, rw=[venv, tmp], cwd=tmp)
            self._run([*launcher, *command], what, timeout_s=self.install_timeout_s, env=env)
        finally:
            isolation.take_back_tree(venv)
            shutil.rmtree(tmp, ignore_errors=True)

    def cancel(self) -> None:
        """Kill the venv and pip processes running now (from any thread); builds fail, nothing is marked ready."""
        self._cancelled = True
        for process in list(self._running):
            _kill_group(process.pid)

    def _run(self, cmd: list[str], what: str, *, timeout_s: float, env: Mapping[str, str] | None = None) -> None:
        if self._cancelled:
            raise SandboxSetupError(f"{what}: the worker is stopping")
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
        self._running.add(process)
        try:
            output, _ = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            process.communicate()
            raise SandboxSetupError(f"{what}: gave up after {timeout_s:g} s "
                                    "(raise EVALSTREAM_SANDBOX_INSTALL_TIMEOUT_S)") from None
        finally:
            self._running.discard(process)
        if self._cancelled:
            raise SandboxSetupError(f"{what}: stopped, the worker is stopping")
        if process.returncode != 0:
            tail = "\n".join(output.decode(errors="replace").strip().splitlines()[-12:])
            raise SandboxSetupError(f"{what} failed (exit code {process.returncode}):\n{tail}")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
