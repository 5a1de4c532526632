"""What a session rule's scorer receives: the conversation so far, its transcript, and its turns' traces.

`final` says whether this is the session's closing verdict or a look after turn `len(turns)` while
the conversation goes on. `trace(n)` loads turn n's full trace from storage (the turns themselves
carry only summaries), so a judge can open any turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pipeline.contracts.sessions import Session, Turn
from pipeline.contracts.traces import Trace
from pipeline.contracts.transcript import MAX_TRANSCRIPT_CHARS, render_transcript
from pipeline.errors import StorageError, TraceNotLoadedError

TraceLoader = Callable[[str, int], Awaitable[Trace | None]]  # (trace_id, trace_version) -> the stored trace
STORE_WAIT_S = 10.0  # a turn's trace closed before its session did, but the sink may not have stored it yet


@dataclass(frozen=True)
class Conversation:
    session: Session
    final: bool
    load_trace: TraceLoader | None = None
    store_wait_s: float = STORE_WAIT_S

    @property
    def session_id(self) -> str:
        return self.session.session_id

    @property
    def version(self) -> int:
        return self.session.version

    @property
    def project(self) -> str:
        return self.session.project

    @property
    def turns(self) -> list[Turn]:
        return self.session.turns

    @property
    def latest(self) -> Turn | None:
        return self.session.turns[-1] if self.session.turns else None

    def transcript(self, max_chars: int = MAX_TRANSCRIPT_CHARS) -> str:
        return render_transcript(self.session, max_chars)

    def turn(self, n: int) -> Turn:
        """Turn n, counted from 1 as in the transcript."""
        if not 1 <= n <= len(self.turns):
            raise LookupError(f"turn {n} does not exist: the conversation has {len(self.turns)} turn(s)")
        return self.turns[n - 1]

    async def trace(self, n: int) -> Trace:
        """The full trace of turn n. The turn's trace is known to exist, so one the sink has not stored yet
        is waited for, up to `store_wait_s`. LookupError when it cannot be loaded (no storage, or still
        not stored): a TraceNotLoadedError when the storage lags or cannot be reached, which the scorer
        runner retries."""
        turn = self.turn(n)
        if self.load_trace is None:
            raise LookupError("no trace storage is available to this scorer")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.store_wait_s
        delay = 0.1
        while (trace := await self._load(turn.trace_id, turn.trace_version)) is None:
            if loop.time() + delay > deadline:
                raise TraceNotLoadedError(f"trace {turn.trace_id} v{turn.trace_version} of turn {n} is not stored "
                                          f"after {self.store_wait_s:g} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        return trace

    async def _load(self, trace_id: str, version: int) -> Trace | None:
        assert self.load_trace is not None
        try:
            return await self.load_trace(trace_id, version)
        except StorageError as exc:
            raise TraceNotLoadedError(str(exc)) from exc
