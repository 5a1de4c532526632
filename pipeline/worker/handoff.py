"""Closed traces handed from the assembler's routing to a scorer in the same process, so the scorer does not
validate again a trace this process validated a moment ago.

The close router validates each closed version once (`Trace`) and writes its job batch around the very bytes
that trace was validated from (`close_router.job_batch_bytes`). When this process also runs the scorer role
(`evalstream up`, or a worker with both roles), the Trace object waits here, keyed by (trace id, version,
close time in ns), until the scorer reads that job batch back from the jobs topic; the scorer then takes the
object instead of validating the trace in the record a second time. The jobs of the record are validated as
always.

Why that is safe: only this process's own validated traces are ever handed over, and only to a record that
names the same trace id, version and close time to the nanosecond, which only the close that wrote it has:
`evalstream.jobs.v2` is written only by our workers (assembler, backfill router, deferred jobs), never by a
producer. A record that matches nothing here (another process's close, a redelivery after a restart, a
deferred batch) is validated as before, so a malformed one is still dead-lettered. An entry is taken once;
the oldest go first once more than `max_spans` spans wait (a job batch whose partition another process
scores never comes back here), so the memory held stays bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from pipeline.contracts import Trace

Key = tuple[str, int, int]


class TraceHandoff:
    def __init__(self, max_spans: int = 20_000) -> None:
        self.max_spans = max_spans
        self._traces: OrderedDict[Key, Trace] = OrderedDict()
        self._spans = 0
        self.taken = 0

    def __len__(self) -> int:
        return len(self._traces)

    def put(self, trace: Trace) -> None:
        key = (trace.trace_id, trace.version, trace.closed_at_ns)
        if key in self._traces or len(trace.spans) > self.max_spans:
            return
        self._traces[key] = trace
        self._spans += len(trace.spans)
        while self._spans > self.max_spans:
            _, old = self._traces.popitem(last=False)
            self._spans -= len(old.spans)

    def take(self, data: Any) -> Trace | None:
        """The Trace handed over for `data`, a job batch's `trace` as loaded from JSON, or None."""
        if not isinstance(data, dict):
            return None
        key = (data.get("trace_id"), data.get("version"), data.get("closed_at_ns"))
        trace = self._traces.pop(key, None)  # type: ignore[call-overload]
        if trace is not None:
            self._spans -= len(trace.spans)
            self.taken += 1
        return trace

    def resolve_bundle(self, data: dict[str, Any]) -> None:
        """A ScoreJobBundle's loaded JSON with each batch's trace replaced by the Trace handed over for it, where
        there is one: validating the bundle then takes that object as it is (pydantic does not revalidate a
        model instance) and validates the rest (jobs, envelope)."""
        batches = data.get("batches")
        if not isinstance(batches, list) or not self._traces:
            return
        for batch in batches:
            if isinstance(batch, dict):
                trace = self.take(batch.get("trace"))
                if trace is not None:
                    batch["trace"] = trace
