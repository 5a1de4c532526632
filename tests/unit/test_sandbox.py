"""The sandbox with real processes (no broker): normal scorers, hostile ones, limits, the scrubbed
environment, the boundary (user, network, filesystem), a real requirement, and the runner scoring
through it without knowing."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipeline.contracts import Example, ScoreJob, ScoreStatus, Trace
from pipeline.contracts.uploads import UploadedScorer
from pipeline.errors import RetryableScorerError, ScorerError
from pipeline.scoring import RetryPolicy, ScorerCache, run_job
from pipeline.scoring.sandbox import (
    SandboxCPUError,
    SandboxExitError,
    SandboxInterruptedError,
    SandboxLimits,
    SandboxMemoryError,
    SandboxSetupError,
    SandboxTimeoutError,
    UploadedScorerError,
)
from pipeline.scoring.sandbox.isolation import SANDBOX_USER, Isolation, resolve_isolation
from pipeline.scoring.sandbox.pool import SandboxPool
from pipeline.scoring.sandbox.process import describe_exit
from pipeline.scoring.sandbox.venvs import venv_python
from pipeline.scoring.store import ScorerCatalog
from pipeline.scoring.uploaded import UploadedScorers
from pipeline.settings import Settings
from scorers.testing import resolver

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox uses Linux process limits")

WALL_S = 1.0
LIMITS = SandboxLimits(timeout_s=WALL_S, cpu_s=60, memory_mb=1024, concurrency=4, start_timeout_s=30)
EXAMPLE = Example(inputs="where is my package?", outputs="Your package ships today; track the package online.")

KEYWORD = '''
from scorers import Score, Scorer

class Keyword(Scorer):
    name = "keyword"

    def __init__(self, word: str = "package", min_hits: float = 1.0) -> None:
        self.word = word
        self.threshold = min_hits

    def score(self, target):
        print("this goes to stderr, not into the protocol")
        hits = str(target.outputs).lower().count(self.word)
        return Score(value=float(hits), reason=f"{hits} x {self.word!r}", metadata={"pid": __import__("os").getpid()})
'''

HOSTILE = '''
import asyncio, os, time
from scorers import scorer
from pipeline.errors import RetryableScorerError

@scorer("hostile")
def hostile(target, mode: str = "ok"):
    if mode == "loop":
        while True:
            pass
    if mode == "sleep":
        time.sleep(30)
    if mode == "allocate":
        blob = bytearray(10 * 1024 ** 3)
        return float(len(blob))
    if mode == "exit":
        os._exit(3)
    if mode == "raise":
        raise ValueError("the scorer has a bug")
    if mode == "retry":
        raise RetryableScorerError("rate limited")
    if mode == "sys_exit":
        raise SystemExit(4)
    if mode == "env":
        return ",".join(sorted(os.environ))
    if mode == "stdin":
        return input()
    if mode == "burn":
        end = time.process_time() + 1.5
        while time.process_time() < end:
            pass
    return os.getpid()
'''

ASYNC_LOOP = '''
from scorers import scorer

@scorer("spin")
async def spin(target):
    while True:  # never awaits: the sandbox's own event loop is stuck too
        pass
'''

USES_PACKAGING = '''
from packaging.version import Version
from scorers import Score, scorer

@scorer("version_ok")
def version_ok(target):
    return Score(value=Version(str(target.outputs)) >= Version("1.0"), reason=f"checked {target.outputs}")
'''

BROKEN_IMPORT = '''
raise RuntimeError("cannot start: missing config")
from scorers import scorer

@scorer()
def never(target):
    return 1.0
'''


def upload(name: str, source: str, entry: str, requirements: list[str] | None = None, *,
           network: bool = False) -> UploadedScorer:
    reqs = requirements or []
    kind = "class" if entry[0].isupper() else "function"
    return UploadedScorer(name=name, version=UploadedScorer.content_version(source, entry, reqs, network),
                          entry=entry, kind=kind, filename=f"{name}.py", source=source, requirements=reqs,
                          network=network)


@pytest.fixture(scope="module")
def venv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandbox")  # venvs are shared by the tests of this module


@pytest.fixture(scope="module")
def isolation(venv_root: Path) -> Isolation:
    """What the pools of this module get (the same cached answer): here, as root, everything."""
    return resolve_isolation(None, None, str(venv_root.resolve()))


@pytest.fixture
async def pool(venv_root: Path) -> AsyncIterator[SandboxPool]:
    pool = SandboxPool(venv_root, LIMITS)
    yield pool
    await pool.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


# -- normal scorers ------------------------------------------------------------------------------------

async def test_a_class_scorer_scores_with_its_params_and_threshold(pool: SandboxPool) -> None:
    keyword = upload("keyword", KEYWORD, "Keyword")
    reply = await pool.score(keyword, {"word": "today", "min_hits": 2}, EXAMPLE)
    assert reply.score.value == 1.0 and reply.score.reason == "1 x 'today'"
    assert reply.threshold == 2.0 and reply.higher_is_better is True
    # The process is long-lived: the next job, with other params, runs in the same one.
    again = await pool.score(keyword, {}, EXAMPLE)
    assert again.score.value == 2.0 and again.threshold == 1.0
    assert again.score.metadata["pid"] == reply.score.metadata["pid"] != os.getpid()


async def test_a_trace_target_crosses_the_boundary(pool: SandboxPool) -> None:
    source = ('from scorers import scorer\n\n@scorer("spans")\n'
              'def spans(trace):\n    return float(len(trace.spans)) + trace.duration_ms\n')
    trace = Trace.model_validate({"trace_id": "t1", "version": 1, "status": "complete", "close_reason": "quiet_period",
                                  "start_ns": 0, "end_ns": 5_000_000, "spans": [
                                      {"trace_id": "t1", "span_id": "s1", "name": "root", "start_ns": 0,
                                       "end_ns": 5_000_000}]})
    assert (await pool.score(upload("spans", source, "spans"), {}, trace)).score.value == 6.0


# -- hostile scorers: each an error, and the next job is scored ----------------------------------------

async def test_an_infinite_loop_is_killed_after_the_wall_clock(pool: SandboxPool) -> None:
    hostile = upload("hostile", HOSTILE, "hostile")
    pid = (await pool.score(hostile, {}, EXAMPLE)).score.value
    started = time.monotonic()
    with pytest.raises(SandboxTimeoutError, match=f"killed after {WALL_S:g} s wall clock"):
        await pool.score(hostile, {"mode": "loop"}, EXAMPLE)
    assert WALL_S <= time.monotonic() - started < WALL_S + 3
    assert not alive(int(pid))
    restarted = (await pool.score(hostile, {}, EXAMPLE)).score.value
    assert restarted != pid


async def test_an_async_scorer_that_blocks_the_sandbox_loop_is_killed_too(pool: SandboxPool) -> None:
    with pytest.raises(SandboxTimeoutError, match="wall clock"):
        await pool.score(upload("spin", ASYNC_LOOP, "spin"), {}, EXAMPLE)


async def test_a_10_gb_allocation_exceeds_the_memory_limit(pool: SandboxPool) -> None:
    hostile = upload("hostile", HOSTILE, "hostile")
    with pytest.raises(SandboxMemoryError, match=r"(?s)exceeded memory limit of 1024 MiB.*MemoryError.*bytearray"):
        await pool.score(hostile, {"mode": "allocate"}, EXAMPLE)
    assert isinstance((await pool.score(hostile, {}, EXAMPLE)).score.value, float)


async def test_os_exit_is_reported_with_its_code_and_the_sandbox_restarts(pool: SandboxPool) -> None:
    hostile = upload("hostile", HOSTILE, "hostile")
    first = (await pool.score(hostile, {}, EXAMPLE)).score.value
    with pytest.raises(SandboxExitError, match=r"exited with code 3 while running the job \(os._exit\)"):
        await pool.score(hostile, {"mode": "exit"}, EXAMPLE)
    assert (await pool.score(hostile, {}, EXAMPLE)).score.value != first


async def test_exceptions_become_errors_naming_the_users_line(pool: SandboxPool) -> None:
    hostile = upload("hostile", HOSTILE, "hostile")
    with pytest.raises(UploadedScorerError, match=r"ValueError: the scorer has a bug\n  hostile.py line 19, in hostile"
                       ) as raised:
        await pool.score(hostile, {"mode": "raise"}, EXAMPLE)
    assert not isinstance(raised.value, RetryableScorerError)
    with pytest.raises(RetryableScorerError, match="rate limited"):
        await pool.score(hostile, {"mode": "retry"}, EXAMPLE)
    with pytest.raises(UploadedScorerError, match="SystemExit: 4"):
        await pool.score(hostile, {"mode": "sys_exit"}, EXAMPLE)
    with pytest.raises(UploadedScorerError, match="TypeError: .*unexpected keyword argument 'nope'"):
        await pool.score(hostile, {"nope": 1}, EXAMPLE)
    with pytest.raises(UploadedScorerError, match="EOFError"):  # stdin is /dev/null: protocol lines stay ours
        await pool.score(hostile, {"mode": "stdin"}, EXAMPLE)


async def test_a_hung_job_is_killed_and_its_neighbours_are_retryable(venv_root: Path) -> None:
    pool = SandboxPool(venv_root, SandboxLimits(timeout_s=3, memory_mb=1024))
    hostile = upload("hostile", HOSTILE, "hostile")
    try:
        await pool.score(hostile, {}, EXAMPLE)
        hung = asyncio.create_task(pool.score(hostile, {"mode": "loop"}, EXAMPLE))
        await asyncio.sleep(0.5)
        quick = await pool.score(hostile, {}, EXAMPLE)  # the loop runs in a thread: others are still answered
        assert isinstance(quick.score.value, float)
        neighbour = asyncio.create_task(pool.score(hostile, {"mode": "sleep"}, EXAMPLE))
        with pytest.raises(SandboxTimeoutError, match="killed after 3 s wall clock"):
            await hung
        with pytest.raises(SandboxInterruptedError, match="another job exceeded") as raised:
            await neighbour
        assert isinstance(raised.value, RetryableScorerError)  # the runner retries it: it was not at fault
    finally:
        await pool.close()


async def test_a_job_the_caller_abandoned_still_gets_its_process_killed(pool: SandboxPool) -> None:
    hostile = upload("hostile", HOSTILE, "hostile")
    pid = int((await pool.score(hostile, {}, EXAMPLE)).score.value)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.score(hostile, {"mode": "loop"}, EXAMPLE), timeout=0.5)
    await asyncio.sleep(WALL_S + 0.5)
    assert not alive(pid)


async def test_the_cpu_limit_ends_a_process_that_burns_cpu(venv_root: Path) -> None:
    pool = SandboxPool(venv_root, SandboxLimits(timeout_s=20, cpu_s=1, memory_mb=1024))
    try:
        with pytest.raises(SandboxCPUError, match="exceeded the CPU limit of 1 CPU-seconds"):
            await pool.score(upload("hostile", HOSTILE, "hostile"), {"mode": "burn"}, EXAMPLE)
    finally:
        await pool.close()


async def test_a_process_past_half_its_cpu_budget_is_replaced(venv_root: Path) -> None:
    pool = SandboxPool(venv_root, SandboxLimits(timeout_s=20, cpu_s=3, memory_mb=1024))
    hostile = upload("hostile", HOSTILE, "hostile")
    try:
        first = (await pool.score(hostile, {}, EXAMPLE)).score.value
        await pool.score(hostile, {"mode": "burn"}, EXAMPLE)  # start-up + 1.5 s of CPU: past half of 3
        second = (await pool.score(hostile, {}, EXAMPLE)).score.value
        assert second != first
        await asyncio.sleep(0.5)
        assert not alive(int(first))  # retired once its jobs were done
    finally:
        await pool.close()


# -- isolation of the environment ----------------------------------------------------------------------

async def test_the_workers_secrets_are_not_visible(venv_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALSTREAM_SLACK_BOT_TOKEN", "xoxb-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "ak-secret")
    hostile = upload("hostile", HOSTILE, "hostile")
    pool = SandboxPool(venv_root, LIMITS)
    allowing = SandboxPool(venv_root, SandboxLimits(env_allow=("OPENAI_*",)))
    try:
        seen = set(str((await pool.score(hostile, {"mode": "env"}, EXAMPLE)).score.value).split(","))
        assert not {"EVALSTREAM_SLACK_BOT_TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"} & seen
        assert {"PATH", "HOME", "TMPDIR", "LANG"} <= seen
        allowed = set(str((await allowing.score(hostile, {"mode": "env"}, EXAMPLE)).score.value).split(","))
        assert "OPENAI_API_KEY" in allowed and "ANTHROPIC_API_KEY" not in allowed
    finally:
        await pool.close()
        await allowing.close()


PEEK = '''
import os
from scorers import scorer

@scorer("peek")
def peek(target):
    try:
        with open(f"/proc/{os.getppid()}/environ", "rb") as environ:
            return "read: " + str(b"EVALSTREAM_SLACK_BOT_TOKEN" in environ.read())
    except OSError as exc:
        return f"blocked: {type(exc).__name__}"
'''


async def test_the_worker_becomes_non_dumpable_before_it_runs_a_sandbox(pool: SandboxPool) -> None:
    import ctypes

    assert ctypes.CDLL(None).prctl(3, 0, 0, 0, 0) == 0  # PR_GET_DUMPABLE: /proc/<worker>/* is root's now


async def test_a_sandbox_cannot_read_the_workers_environment_from_proc(venv_root: Path) -> None:
    # A root worker's sandbox runs as the sandbox user; a non-root worker's as its own uid. Either way the
    # worker is non-dumpable, so its /proc files are root's.
    # The secret must be in the environment the worker was started with, which /proc shows.
    script = (f"import asyncio, sys; sys.path[:0] = {sys.path!r}\n"
              "from pathlib import Path\nfrom pipeline.contracts import Example\n"
              "from pipeline.scoring.sandbox.limits import SandboxLimits\n"
              "from pipeline.scoring.sandbox.pool import SandboxPool\n"
              "from tests.unit.test_sandbox import PEEK, upload\n"
              "async def main():\n"
              f"    pool = SandboxPool(Path({str(venv_root)!r}), SandboxLimits())\n"
              "    print((await pool.score(upload('peek', PEEK, 'peek'), {}, Example())).score.value)\n"
              "    await pool.close()\n"
              "asyncio.run(main())\n")
    env = {**os.environ, "EVALSTREAM_SLACK_BOT_TOKEN": "xoxb-secret"}
    done = await asyncio.create_subprocess_exec(sys.executable, "-c", script, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await done.communicate()
    assert out.decode().strip() == "blocked: PermissionError", err.decode()[-2000:]


# -- the boundary: its own user, no network unless declared, read-only outside its private directories -------

CONFINED = '''
import os, socket, sys
from scorers import Score, scorer

@scorer("confined")
def confined(target, mode: str = "whoami", port: int = 0, paths: list = (), look: str = "/"):
    if mode == "whoami":
        return Score(value=1.0, metadata={"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()})
    if mode == "connect":
        try:
            socket.create_connection(("127.0.0.1", port), timeout=3).close()
            return "connected"
        except OSError as exc:
            return f"failed: {exc}"
    mine = [__file__, os.path.join(sys.prefix, "x"), os.path.join(os.environ["HOME"], "x"), "/tmp/x", "/dev/shm/x"]
    tried = {}
    for path in [*mine, *paths]:
        try:
            with open(path, "w") as f:
                f.write("written by an uploaded scorer")
            tried[path] = "written"
        except OSError as exc:
            tried[path] = type(exc).__name__
    return Score(value=1.0, metadata={"tried": tried, "home": os.environ["HOME"], "source": __file__,
                                      "venv": sys.prefix, "seen": sorted(os.listdir(look))})
'''


async def test_an_uploaded_scorer_runs_as_an_unprivileged_user(pool: SandboxPool, isolation: Isolation) -> None:
    seen = (await pool.score(upload("confined", CONFINED, "confined"), {}, EXAMPLE)).score.metadata
    assert seen["uid"] != 0 and seen["gid"] != 0 and 0 not in seen["groups"]
    if os.geteuid() == 0:  # CI runs as root: the sandbox must have dropped to the sandbox user
        assert isolation.uid is not None, isolation.problems
        assert (seen["uid"], seen["gid"]) == (isolation.uid, isolation.gid) == pwd.getpwnam(SANDBOX_USER)[2:4]
        assert seen["groups"] == []
    else:
        assert seen["uid"] == os.geteuid()


async def test_a_scorer_reaches_the_network_only_when_its_upload_declares_it(pool: SandboxPool,
                                                                             isolation: Isolation) -> None:
    if not isolation.network_ns:
        pytest.skip(f"the kernel refuses network namespaces here: {isolation.problems}")
    accepted: list[int] = []

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        offline = upload("confined", CONFINED, "confined")
        cut_off = (await pool.score(offline, {"mode": "connect", "port": port}, EXAMPLE)).score.value
        assert str(cut_off).startswith("failed:") and accepted == []  # its own loopback: nothing listens there
        online = upload("confined", CONFINED, "confined", network=True)
        assert online.version != offline.version  # the same source with network is another version
        assert (await pool.score(online, {"mode": "connect", "port": port}, EXAMPLE)).score.value == "connected"
        for _ in range(50):
            if accepted:
                break
            await asyncio.sleep(0.02)
        assert accepted == [1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_scorer_cannot_write_outside_its_private_directories(pool: SandboxPool, venv_root: Path,
                                                                     isolation: Isolation) -> None:
    if not isolation.mount_ns:
        pytest.skip(f"the kernel refuses mount namespaces here: {isolation.problems}")
    await pool.score(upload("keyword", KEYWORD, "Keyword"), {}, EXAMPLE)  # another scorer's files exist
    root = venv_root.resolve()
    outside = [str(root / "x"), str(root / "run" / "x"), str(root / "venvs" / "x"), "/etc/x", "/usr/x",
               "/var/tmp/x", "/x", str(Path(pytest.__file__).parent / "x"), str(Path(__file__))]
    confined = upload("confined", CONFINED, "confined")
    seen = (await pool.score(confined, {"mode": "write", "paths": outside, "look": str(root / "sources")},
                             EXAMPLE)).score.metadata
    tried = seen["tried"]
    private = [os.path.join(seen["home"], "x"), "/tmp/x", "/dev/shm/x"]
    assert {path: tried[path] for path in private} == dict.fromkeys(private, "written")
    refused = {path: result for path, result in tried.items() if path not in private}
    assert set(refused) == {seen["source"], os.path.join(seen["venv"], "x"), *outside}
    assert "written" not in refused.values(), refused
    assert seen["seen"] == ["confined"]  # the data directory shows its own source only: not other uploads
    assert not Path("/tmp/x").exists() or Path("/tmp/x").read_text() != "written by an uploaded scorer"
    assert Path(seen["source"]).read_text() == CONFINED and not (root / "x").exists()


# -- requirements and set-up -----------------------------------------------------------------------------

async def test_a_scorer_with_a_real_requirement_gets_its_own_venv(pool: SandboxPool) -> None:
    # `packaging` is installed in the worker's environment (pytest needs it), so pip resolves it offline.
    versioned = upload("version_ok", USES_PACKAGING, "version_ok", ["packaging>=20"])
    reply = await pool.score(versioned, {}, Example(outputs="1.2.3"))
    assert reply.score.value is True and reply.score.reason == "checked 1.2.3"
    venv = pool.venvs.path_for(["packaging>=20"])
    assert (venv / ".ready").exists() and (venv / "requirements.txt").read_text() == "packaging>=20\n"
    assert venv != pool.venvs.path_for([])
    assert await pool.venvs.ensure(["packaging>=20"]) == venv_python(venv)  # cached: no second build


def test_every_part_the_kernel_refuses_is_said_loudly_at_start_up(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    import pipeline.scoring.sandbox.isolation as isolation_module

    refused = "unshare: Operation not permitted"
    monkeypatch.setattr(isolation_module, "probe", lambda spec: {
        "network": refused, "mount": refused, "user": "setresuid: Operation not permitted" if spec["user"] else None})
    caplog.set_level("WARNING", logger="pipeline.scoring.sandbox.isolation")
    found = resolve_isolation.__wrapped__(None, None, "")  # not the cached answer of this process
    assert (found.uid, found.network_ns, found.mount_ns) == (None, False, False)
    warned = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "ISOLATION INCOMPLETE" in warned
    assert f"uploaded scorers have the worker's network: no network namespace ({refused})" in warned
    assert "uploaded scorers see the worker's filesystem" in warned and "CAP_SYS_ADMIN" in warned
    if os.geteuid() == 0:
        assert "uploaded scorers run as ROOT: cannot switch to evalstream-sandbox" in warned
        assert "EVALSTREAM_SANDBOX_UID" in warned
    else:
        assert f"run as the worker's uid {os.geteuid()}" in warned


async def test_a_venv_is_read_only_for_the_sandbox_user_after_pip_ran(pool: SandboxPool) -> None:
    await pool.venvs.ensure(["packaging>=20"])
    venv = pool.venvs.path_for(["packaging>=20"])
    for path in [venv, *venv.rglob("*")]:
        if not path.is_symlink():
            st = path.lstat()
            assert st.st_uid == os.geteuid() and not st.st_mode & 0o022, path  # the worker's; no one else writes


async def test_a_worker_that_requires_isolation_runs_nothing_without_it(venv_root: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.scoring.sandbox.pool as pool_module

    monkeypatch.setattr(pool_module, "resolve_isolation", lambda *args: Isolation(problems=("no network namespace",)))
    pool = SandboxPool(venv_root, SandboxLimits(require_isolation=True))
    try:
        with pytest.raises(SandboxSetupError, match="EVALSTREAM_SANDBOX_REQUIRE_ISOLATION.*no network namespace"):
            await pool.score(upload("keyword", KEYWORD, "Keyword"), {}, EXAMPLE)
        assert pool.processes() == []
    finally:
        await pool.close()


async def test_a_module_that_fails_to_import_fails_fast_until_the_retry_delay(pool: SandboxPool) -> None:
    broken = upload("broken", BROKEN_IMPORT, "never")
    with pytest.raises(SandboxSetupError, match=r"broken@\w+ failed to import: RuntimeError: cannot start"):
        await pool.score(broken, {}, EXAMPLE)
    started = time.monotonic()
    with pytest.raises(SandboxSetupError, match="failed to import"):
        await pool.score(broken, {}, EXAMPLE)
    assert time.monotonic() - started < 0.1  # remembered, not started again for every job


async def test_a_stopping_worker_builds_no_venv(tmp_path: Path) -> None:
    pool = SandboxPool(tmp_path, LIMITS)
    await pool.close()  # cancels the venv builder first
    with pytest.raises(SandboxSetupError, match="the worker is stopping"):
        await pool.venvs.ensure(["packaging>=20"])
    assert not (pool.venvs.path_for(["packaging>=20"]) / ".ready").exists()


async def test_a_new_version_retires_the_old_process(pool: SandboxPool) -> None:
    v1 = upload("keyword", KEYWORD, "Keyword")
    v2 = upload("keyword", KEYWORD.replace("hits = ", "hits = 10 + "), "Keyword")
    old_pid = (await pool.score(v1, {}, EXAMPLE)).score.metadata["pid"]
    pool.prepare(v2)
    reply = await pool.score(v2, {}, EXAMPLE)
    assert reply.score.value == 12.0
    await asyncio.sleep(0.5)
    assert not alive(old_pid)
    assert [p.label for p in pool.processes()] == [v2.label]


async def test_a_new_version_of_an_unused_scorer_only_gets_its_venv(pool: SandboxPool) -> None:
    versioned = upload("version_ok", USES_PACKAGING, "version_ok", ["packaging>=20"])
    pool.prepare(versioned)
    while pool._background:
        await asyncio.sleep(0.05)
    assert (pool.venvs.path_for(["packaging>=20"]) / ".ready").exists()
    assert pool.processes() == []  # started by its first job, not by its upload


async def test_idle_sandboxes_are_stopped(pool: SandboxPool, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.scoring.sandbox.pool as pool_module

    idle = int((await pool.score(upload("hostile", HOSTILE, "hostile"), {}, EXAMPLE)).score.value)
    monkeypatch.setattr(pool_module, "IDLE_STOP_S", 0.2)
    await asyncio.sleep(0.3)
    await pool.score(upload("keyword", KEYWORD, "Keyword"), {}, EXAMPLE)
    await asyncio.sleep(0.5)
    assert not alive(idle) and [p.label.split("@")[0] for p in pool.processes()] == ["keyword"]


async def test_closing_the_pool_kills_every_sandbox(venv_root: Path) -> None:
    pool = SandboxPool(venv_root, SandboxLimits(timeout_s=30))
    hostile = upload("hostile", HOSTILE, "hostile")
    pid = int((await pool.score(hostile, {}, EXAMPLE)).score.value)
    hung = asyncio.create_task(pool.score(hostile, {"mode": "loop"}, EXAMPLE))
    await asyncio.sleep(0.3)
    await pool.close()
    assert not alive(pid)
    with pytest.raises(ScorerError):
        await hung


# -- the runner scores through the sandbox without knowing ------------------------------------------------

@pytest.fixture
async def worker_uploads(venv_root: Path) -> AsyncIterator[UploadedScorers]:
    settings = Settings(data_dir=venv_root, sandbox_timeout_s=WALL_S)
    uploads = UploadedScorers(ScorerCatalog(), settings, accept_unknown=True, ready_timeout_s=0.1)
    uploads.catalog.ready.set()
    yield uploads
    await uploads.close()


def job(scorer: str, **kw: object) -> ScoreJob:
    return ScoreJob(job_id="j1", rule="r", scorer=scorer, trace_id="t1", trace_version=1, example=EXAMPLE, **kw)


TRACE = Trace(trace_id="t1", version=1, status="complete", close_reason="quiet_period")
POLICY = RetryPolicy(max_attempts=2, backoff_s=0.01, timeout_s=10)


async def test_run_job_scores_uploaded_scorers_and_records_their_version(worker_uploads: UploadedScorers) -> None:
    cache = ScorerCache(resolver(uploaded=worker_uploads))  # a worker's: uploads resolve through the sandbox
    unknown = await run_job(job("keyword", params={"min_hits": 2}), TRACE, cache, POLICY)
    assert unknown.result.status == ScoreStatus.ERROR and unknown.result.error_type == "ScorerNotFoundError"
    assert "no uploaded version has arrived" in unknown.result.error_message

    v1 = upload("keyword", KEYWORD, "Keyword")
    worker_uploads.catalog.put(v1)
    scored = (await run_job(job("keyword", params={"min_hits": 2}), TRACE, cache, POLICY)).result
    assert (scored.status, scored.value, scored.passed, scored.threshold) == (ScoreStatus.SCORED, 2.0, True, 2.0)
    assert scored.scorer_version == v1.version

    v2 = upload("keyword", KEYWORD.replace("hits = ", "hits = -1 + "), "Keyword")
    worker_uploads.catalog.put(v2)  # what the store follower does when a new version arrives
    swapped = (await run_job(job("keyword", params={"min_hits": 2}), TRACE, cache, POLICY)).result
    assert (swapped.value, swapped.passed, swapped.scorer_version) == (1.0, False, v2.version)


async def test_run_job_turns_a_hostile_upload_into_an_error_row(worker_uploads: UploadedScorers) -> None:
    worker_uploads.catalog.put(upload("hostile", HOSTILE, "hostile"))
    cache = ScorerCache(resolver(uploaded=worker_uploads))  # a worker's: uploads resolve through the sandbox
    crashed = await run_job(job("hostile", params={"mode": "exit"}), TRACE, cache, POLICY)
    assert crashed.result.status == ScoreStatus.ERROR and crashed.result.error_type == "SandboxExitError"
    assert "exited with code 3" in crashed.result.error_message and not crashed.dead_letter
    hung = await run_job(job("hostile", params={"mode": "loop"}), TRACE, cache, POLICY)
    assert hung.result.error_type == "SandboxTimeoutError" and hung.result.attempts == 1
    fine = await run_job(job("hostile"), TRACE, cache, POLICY)
    assert fine.result.status == ScoreStatus.SCORED


# -- exit statuses -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("code, tail, error, fragment", [
    (-signal.SIGXCPU, "", SandboxCPUError, "exceeded the CPU limit of 60 CPU-seconds"),
    (-signal.SIGKILL, "", SandboxExitError, "killed by SIGKILL"),
    (-signal.SIGSEGV, "Fatal Python error: Segmentation fault", SandboxExitError, "killed by SIGSEGV: Fatal"),
    (1, "Traceback\nMemoryError", SandboxMemoryError, "exceeded memory limit of 1024 MiB"),
    (3, "", SandboxExitError, r"exited with code 3 while running the job \(os._exit\)"),
    (1, "Traceback\nKeyError: 'x'", SandboxExitError, r"code 1 .*\(a fatal error\): KeyError: 'x'"),
])
def test_exit_statuses_are_explained(code: int, tail: str, error: type, fragment: str) -> None:
    described = describe_exit(code, tail, LIMITS, "s@v")
    assert type(described) is error
    assert re.search(fragment, str(described)), str(described)


# -- the judges' activity crosses back, for the evaluation trace ------------------------------------------

JUDGING = '''
from scorers import Score, Scorer
from scorers.judges.records import JudgeCall, RetryRecord, ToolCallRequest, TraceToolCall, note_activity

class Judging(Scorer):
    name = "judging"

    def score(self, target):
        note_activity(JudgeCall(model="openai/judge", messages=[{"role": "user", "content": "x" * 30000}],
                                tool_names=["get_span"], tool_choice="auto", response_text="looks fine",
                                tool_calls=[ToolCallRequest(id="c1", name="get_span", arguments='{"id": "s1"}')],
                                input_tokens=120, output_tokens=30, cost_usd=0.002, latency_ms=40.0, attempts=2,
                                retries=[RetryRecord(attempt=1, error="429", status=429, wait_s=0.5, retry_after_s=None)]))
        note_activity(TraceToolCall(step=1, name="get_span", arguments={"id": "s1"}, result_chars=4, ms=1.5,
                                    result="body"))
        return Score(value=1.0, passed=True, reason="ok")
'''


async def test_an_uploaded_judges_calls_reach_the_workers_recording(pool: SandboxPool) -> None:
    from pipeline.scoring.sandbox.scorer import sandboxed_scorer_class
    from pipeline.scoring.uploaded import FixedUpload
    from scorers.judges.records import JudgeCall, TraceToolCall, recording_judge_activity

    scorer = sandboxed_scorer_class("judging", FixedUpload(upload("judging", JUDGING, "Judging"), pool))()
    with recording_judge_activity() as activity:
        score = await scorer.run(EXAMPLE)
    assert score.passed is True
    call, tool = activity.entries
    assert isinstance(call, JudgeCall) and isinstance(tool, TraceToolCall)
    assert (call.model, call.input_tokens, call.output_tokens, call.cost_usd, call.attempts) == (
        "openai/judge", 120, 30, 0.002, 2)
    assert call.tool_calls[0].arguments == '{"id": "s1"}' and call.retries[0].status == 429
    assert call.messages[0]["content"].startswith("x" * 20_000) and len(call.messages[0]["content"]) < 20_100
    assert (tool.name, tool.arguments, tool.result, tool.ms) == ("get_span", {"id": "s1"}, "body", 1.5)
    assert activity.dropped == 0
