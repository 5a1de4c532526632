"""The sandbox process: `python -I -m pipeline.scoring.sandbox.child --source FILE --entry NAME ...`.

It starts already confined (`confine.py`: its user, namespaces and root). Order matters: become
non-dumpable, die with the parent, apply the resource limits, move stdout aside for the
protocol, and only then import the uploaded module. Jobs run concurrently (the parent bounds how
many); a sync scorer runs in a thread, so an infinite loop there leaves the loop free to answer
the others until the parent's wall clock kills the process.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import importlib.util
import os
import re
import resource
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from pipeline.contracts import SpanSubject
from pipeline.errors import RetryableScorerError, ScorerSubjectError
from pipeline.scoring.sandbox import protocol
from scorers.base import Scorer
from scorers.judges.records import recording_judge_activity
from scorers.registry import ScorerResolver

MAX_LINE_BYTES = 1 << 30
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4


def hide_from_neighbours() -> None:
    """Every sandbox runs as the same user: non-dumpable, this process's /proc files (environ, fds,
    memory) are root's, so another scorer cannot read its jobs, forge its replies or trace it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the worker dies (Linux), so a hung scorer never outlives it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: stdin EOF still ends the process when its loop is free
    if os.getppid() != parent_pid:
        os._exit(0)  # the parent died before prctl took effect


def apply_limits(cpu_s: int, memory_mb: int) -> None:
    """RLIMIT_CPU (SIGXCPU at the soft limit, SIGKILL at the hard one), RLIMIT_AS and no core files.
    Only ever lowered: the scorer cannot raise a hard limit back."""
    _lower(resource.RLIMIT_CPU, cpu_s, cpu_s + 5)
    memory = memory_mb * 1024 * 1024
    _lower(resource.RLIMIT_AS, memory, memory)
    _lower(resource.RLIMIT_CORE, 0, 0)


def _lower(which: int, soft: int, hard: int) -> None:
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def take_stdio() -> tuple[BinaryIO, BinaryIO]:
    """The protocol keeps the real stdin and stdout. Then fd 0 reads /dev/null and fd 1 writes to
    stderr, so neither `input()` nor `print` can steal or corrupt a protocol line."""
    requests = os.fdopen(os.dup(0), "rb", buffering=0)
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return requests, replies


def load_entry(source: Path, entry: str) -> type[Scorer]:
    module_name = "_evalstream_uploaded_" + re.sub(r"\W", "_", source.stem)
    spec = importlib.util.spec_from_file_location(module_name, source)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {source.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic models and dataclasses look their module up here
    spec.loader.exec_module(module)
    obj = getattr(module, entry, None)
    if not (isinstance(obj, type) and issubclass(obj, Scorer)):
        raise TypeError(f"{entry!r} in {source.name} is not a Scorer subclass or @scorer function")
    return obj


def describe(exc: BaseException, source: Path) -> str:
    """`ValueError: boom`, then the frames inside the uploaded file (where the user can act)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(source)]
    for frame in frames[-5:]:
        text += f"\n  {source.name} line {frame.lineno}, in {frame.name}: {(frame.line or '').strip()}"
    return text[:4000]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 3)


def check_subject(scorer_cls: type[Scorer], target: object) -> None:
    """A span rule's job reaches an uploaded scorer only if it declares spans (its upload cannot be known when
    the rules load, so the sandbox checks it per job and the job becomes an error row saying so)."""
    if isinstance(target, SpanSubject) and "span" not in scorer_cls.subjects:
        raise ScorerSubjectError(
            f"uploaded scorer {scorer_cls.name or scorer_cls.__name__!r} scores only "
            f"{', '.join(sorted(scorer_cls.subjects))} (its `subjects`), but a span rule (subject: span) gave it "
            f"span {target.span_id}; declare subjects = frozenset({{'trace', 'span'}}) (or @scorer(subjects=...)) "
            "and read the SpanSubject, or use it in a trace rule")


class Server:
    def __init__(self, scorer_cls: type[Scorer], source: Path, requests: BinaryIO, out: BinaryIO) -> None:
        self.scorer_cls = scorer_cls
        self.source = source
        self.requests = requests
        self.out = out
        self.instances: dict[bytes, Scorer] = {}

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(protocol.dumps(message))

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), self.requests)
        tasks: set[asyncio.Task[None]] = set()
        while line := await reader.readline():  # EOF: the parent wants us to finish and exit
            message = protocol.loads(line)
            if message["op"] == protocol.SCORE:
                task = asyncio.create_task(self.handle(message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)

    def scorer_for(self, params: dict[str, Any]) -> Scorer:
        key = orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
        scorer = self.instances.get(key)
        if scorer is None:
            scorer = self.instances[key] = self.scorers.instantiate(self.scorer_cls, params)
        return scorer

    @functools.cached_property
    def scorers(self) -> ScorerResolver:
        """Builds the scorer as a worker's resolver would. One that calls models (a judge) gets a judge client
        configured from the EVALSTREAM_JUDGE_* variables this sandbox may see (EVALSTREAM_SANDBOX_ENV_ALLOW)."""
        if not self.scorer_cls.takes_judge_client:
            return ScorerResolver()
        from pipeline.scoring.judges import judge_config
        from pipeline.settings import Settings
        from scorers.judges.client import JudgeClient

        return ScorerResolver(judge_client=JudgeClient(judge_config(Settings())))

    async def handle(self, message: dict[str, Any]) -> None:
        request_id = message["id"]
        try:
            scorer = self.scorer_for(message.get("params") or {})
            target = protocol.decode_target(message["target"])
            check_subject(self.scorer_cls, target)
            with recording_judge_activity(protocol.ACTIVITY_MAX_ENTRIES) as activity:
                score = await scorer.run(target)
            reply = {"op": protocol.RESULT, "id": request_id, "score": score.model_dump(),
                     "threshold": scorer.threshold, "higher_is_better": scorer.higher_is_better,
                     **protocol.activity_fields(activity)}
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a scorer is an error row too
            reply = {"op": protocol.ERROR, "id": request_id, "error_type": type(exc).__name__,
                     "message": describe(exc, self.source), "retryable": isinstance(exc, RetryableScorerError)}
        reply["cpu_s"] = cpu_seconds()
        self.send(reply)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evalstream-sandbox")
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--entry", required=True)
    parser.add_argument("--cpu-s", type=int, required=True)
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    hide_from_neighbours()
    args = parse_args(argv)
    die_with_parent(args.parent_pid)
    apply_limits(args.cpu_s, args.memory_mb)
    requests, out = take_stdio()
    try:
        scorer_cls = load_entry(args.source, args.entry)
    except BaseException as exc:  # noqa: BLE001 - any import failure is reported, then we exit
        out.write(protocol.dumps({"op": protocol.LOAD_ERROR, "error_type": type(exc).__name__,
                                  "message": describe(exc, args.source)}))
        return 1
    out.write(protocol.dumps({"op": protocol.READY, "pid": os.getpid(), "uid": os.getuid(), "name": scorer_cls.name,
                              "scorer_version": scorer_cls.version}))
    asyncio.run(Server(scorer_cls, args.source, requests, out).serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
