"""pipeline/worker/close_router.py: closed traces routed where they close. Their jobs go out with the trace's
own bytes, the traces and their decisions in one message for the sink, the turns apart (a bad one is
dead-lettered alone), and a job batch over the limit fails its decisions instead of its trace. No broker."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from pipeline import topics
from pipeline.contracts import (
    DeadLetter,
    DecisionOutcome,
    ScoreJobBatch,
    ScoreJobBundle,
    Span,
    Trace,
    TraceBatch,
    decode,
    encode,
)
from pipeline.metrics import Counters
from pipeline.routing import route_trace
from pipeline.rules import parse_rules
from pipeline.rules.versions import ActiveRules
from pipeline.sampling import is_sampled
from pipeline.worker.close_router import Closed, CloseRouter, Progress, job_batch_bytes
from scorers.testing import resolver

RULES = parse_rules({"rules": [
    {"name": "half", "scorer": "error_spans", "sampling_rate": 0.5},
    {"name": "all", "scorer": "error_spans"},
]})


class FakeContext:
    def __init__(self, max_message_bytes: int = 1024 * 1024, fail_on: str | None = None) -> None:
        self.settings = SimpleNamespace(max_message_bytes=max_message_bytes, topic_partitions=8)
        self.rules = ActiveRules.of(RULES)
        self.ruleset = RULES
        self.scorers = resolver()
        self.counters = Counters()
        self.sent: list[tuple[str, str, bytes, int | None]] = []
        self.dead: list[DeadLetter] = []
        self.fail_on = fail_on

    async def send(self, topic: str, key: str, value: bytes, partition: int | None = None) -> None:
        if topic == self.fail_on:
            raise ConnectionError("broker gone")
        self.sent.append((topic, key, value, partition))

    async def dead_letter(self, dl: DeadLetter) -> None:
        self.dead.append(dl)


SOURCE = SimpleNamespace(topic=topics.SPANS, partition=3, offset=11, key=b"k", value=b"", timestamp=0)


def closed(trace_id: str, session_id: str | None = None, pad: int = 0) -> Closed:
    span = Span(trace_id=trace_id, span_id="r", name="root", start_ns=0, end_ns=10, session_id=session_id,
                outputs="x" * pad if pad else None)
    payload = Trace(trace_id=trace_id, version=1, status="complete", close_reason="final_marker",
                    root_span_id="r", spans=[span]).model_dump(mode="json", exclude_none=True)
    return Closed(trace_id, orjson.dumps(payload), payload)


async def test_closed_traces_become_jobs_and_one_message_of_traces_with_their_decisions() -> None:
    ctx = FakeContext()
    traces = [closed(f"t-{i}") for i in range(30)]
    progress = Progress()
    await CloseRouter(ctx).publish(SOURCE, traces, 3, progress)

    assert progress.sent == 30
    assert {t for t, *_ in ctx.sent} == {topics.JOBS, topics.TRACES}  # no decisions message: they ride along
    (trace_message,) = [v for t, _, v, p in ctx.sent if t == topics.TRACES and p == 3]
    batch = decode(trace_message, TraceBatch)
    assert [t.trace_id for t in batch.traces] == [f"t-{i}" for i in range(30)]
    assert len(batch.decisions) == 60  # every (rule, trace)
    sampled = {f"t-{i}" for i in range(30) if is_sampled(f"t-{i}", "half", 0.5)}
    assert {d.trace_id for d in batch.decisions if d.rule == "half" and d.outcome == DecisionOutcome.QUEUED} == sampled
    jobs = [b for t, _, v, p in ctx.sent if t == topics.JOBS for b in decode(v, ScoreJobBundle).batches]
    assert all(p == 3 for t, _, _, p in ctx.sent if t == topics.JOBS)  # the traces' own partition
    assert len(jobs) == 30 and sum(len(b.jobs) for b in jobs) == 30 + len(sampled)
    assert ctx.counters.get("jobs_queued") == 30 + len(sampled) and ctx.dead == []


def test_a_job_batch_built_around_the_trace_bytes_reads_as_the_encoded_one() -> None:
    c = closed("t-same")
    trace = Trace.model_validate(c.payload)
    jobs = route_trace(trace, RULES, resolver()).jobs
    assert decode(job_batch_bytes(c.raw, jobs), ScoreJobBatch) == decode(
        encode(ScoreJobBatch(trace=trace, jobs=jobs)), ScoreJobBatch)


async def test_a_trace_whose_turn_is_invalid_is_routed_and_stored_and_only_the_turn_is_dead_lettered() -> None:
    ctx = FakeContext()
    await CloseRouter(ctx).publish(SOURCE, [closed("t-long", session_id="s" * 300)], 3, Progress())
    sent = [t for t, *_ in ctx.sent]
    assert sent.count(topics.JOBS) == 1 and sent.count(topics.TRACES) == 1
    assert topics.SESSION_TURNS not in sent
    (dead,) = ctx.dead
    assert dead.stage == "session-turn" and dead.trace_id == "t-long" and "256" in dead.reason


async def test_a_turn_goes_to_its_session() -> None:
    ctx = FakeContext()
    await CloseRouter(ctx).publish(SOURCE, [closed("t-turn", session_id="conv-1")], 3, Progress())
    (turn,) = [(k, v) for t, k, v, _ in ctx.sent if t == topics.SESSION_TURNS]
    assert turn[0] == "conv-1" and b"t-turn" in turn[1]


async def test_a_trace_whose_job_batch_is_over_the_limit_is_stored_with_failed_decisions_and_a_dead_letter() -> None:
    limit = 4096
    ctx = FakeContext(max_message_bytes=limit)
    room = limit - 40 - len(closed("t-big").raw) - len(b'{"v":1,"batches":[]}')
    await CloseRouter(ctx).publish(SOURCE, [closed("t-big", pad=room)], 3, Progress())

    (dead,) = ctx.dead
    assert dead.trace_id == "t-big" and dead.error_type == "OversizedError" and "job batch" in dead.reason
    assert topics.JOBS not in [t for t, *_ in ctx.sent]
    (value,) = [v for t, _, v, _ in ctx.sent if t == topics.TRACES]
    batch = decode(value, TraceBatch)
    assert [t.trace_id for t in batch.traces] == ["t-big"]  # stored all the same
    assert {d.outcome for d in batch.decisions if d.rule == "all"} == {DecisionOutcome.FAILED}
    assert any("4096-byte" in d.reason for d in batch.decisions)


async def test_a_trace_that_cannot_be_routed_is_dead_lettered_and_still_stored() -> None:
    ctx = FakeContext()
    bad = closed("t-bad")
    bad.payload["status"] = "not-a-status"
    await CloseRouter(ctx).publish(SOURCE, [closed("t-ok"), bad], 3, Progress())
    (dead,) = ctx.dead
    assert dead.stage == "router" and dead.trace_id == "t-bad"
    (value,) = [v for t, _, v, _ in ctx.sent if t == topics.TRACES]
    assert orjson.loads(value)["traces"][1]["trace_id"] == "t-bad"
    assert {d["trace_id"] for d in orjson.loads(value)["decisions"]} == {"t-ok"}


async def test_when_the_traces_cannot_be_sent_progress_says_none_went_out() -> None:
    ctx = FakeContext(fail_on=topics.TRACES)
    progress = Progress()
    try:
        await CloseRouter(ctx).publish(SOURCE, [closed("t-1"), closed("t-2")], 3, progress)
    except ConnectionError:
        pass
    else:
        raise AssertionError("the failed send was swallowed")
    assert progress.sent == 0
