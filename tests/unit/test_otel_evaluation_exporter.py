"""pipeline/otel/evaluation_exporter.py: the stock OpenTelemetry log pipeline, and commits only after the
exporter took the records (a fake consumer; the SDK's processor with a scripted exporter)."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from typing import Any

from opentelemetry.sdk._logs.export import LogRecordExportResult

from pipeline.contracts import ScoreResult, ScoreResultBatch, encode
from pipeline.metrics import Counters
from pipeline.otel.evaluation_exporter import EvaluationExporter, OtlpLogEmitter

TP = namedtuple("TP", "topic partition")
Message = namedtuple("Message", "offset value timestamp key")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class ScriptedExporter:
    """A LogRecordExporter whose answer the test sets; keeps what it took."""

    def __init__(self) -> None:
        self.ok = True
        self.taken: list[Any] = []
        self.calls = 0

    def export(self, batch: Any) -> LogRecordExportResult:
        self.calls += 1
        if not self.ok:
            return LogRecordExportResult.FAILURE
        self.taken.extend(batch)
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True

    def shutdown(self) -> None:
        pass


class FakeConsumer:
    def __init__(self, messages: list[Message]) -> None:
        self.tp = TP("evalstream.scores.v1", 0)
        self.messages = messages
        self.position = 0
        self.commits: list[dict[Any, int]] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Message]]:
        batch = [m for m in self.messages if m.offset >= self.position][:max_records]
        if not batch:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        self.position = batch[-1].offset + 1
        return {self.tp: batch}

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append(dict(offsets))

    def seek(self, tp: Any, offset: int) -> None:
        self.position = offset


def message(offset: int, *span_ids: str | None) -> Message:
    results = [ScoreResult(job_id=f"j{offset}-{i}", rule="helpful", scorer="s", trace_id=TRACE, trace_version=1,
                           root_span_id="00f067aa0ba902b7", span_id=span_id, status="scored", value=0.5,
                           scored_at_ns=1_000 + offset) for i, span_id in enumerate(span_ids)]
    return Message(offset, encode(ScoreResultBatch(results=results)), None, b"k")


async def run_until(exporter: EvaluationExporter, done: Any, timeout_s: float = 5.0) -> None:
    task = asyncio.ensure_future(exporter.run())
    try:
        for _ in range(int(timeout_s / 0.01)):
            if done():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not reached")
    finally:
        exporter.stop()
        await asyncio.wait_for(task, 2.0)


async def test_every_result_becomes_one_record_and_offsets_commit_after_the_export() -> None:
    sink = ScriptedExporter()
    emitter = OtlpLogEmitter(sink)
    consumer = FakeConsumer([message(0, None, "53995c3f42cd8ad8"), Message(1, b"not json", None, b"k"),
                             message(2, None)])
    counters = Counters()
    exporter = EvaluationExporter(consumer, emitter, counters, sampling_rates={"helpful": 0.5},
                                  max_message_bytes=1 << 20, fetch_wait_s=0.01)
    await run_until(exporter, lambda: consumer.commits and consumer.commits[-1][consumer.tp] == 3)
    emitter.shutdown()
    records = [r.log_record for r in sink.taken]
    assert len(records) == 3
    assert {r.event_name for r in records} == {"gen_ai.evaluation.result"}
    assert [format(r.span_id, "016x") for r in records] == ["00f067aa0ba902b7", "53995c3f42cd8ad8",
                                                            "00f067aa0ba902b7"]
    assert {format(r.trace_id, "032x") for r in records} == {TRACE}
    assert records[0].attributes["evalstream.sampling_rate"] == 0.5
    assert sink.taken[0].resource.attributes["service.name"] == "evalstream"
    assert counters.get("otel_evaluations", outcome="exported", reason="") == 3
    assert counters.get("otel_evaluations", outcome="skipped", reason="undecodable") == 1


async def test_a_refused_export_commits_nothing_and_is_sent_again(caplog: Any) -> None:
    sink = ScriptedExporter()
    sink.ok = False
    emitter = OtlpLogEmitter(sink)
    consumer = FakeConsumer([message(0, None, None)])
    counters = Counters()
    exporter = EvaluationExporter(consumer, emitter, counters, sampling_rates={}, max_message_bytes=1 << 20,
                                  fetch_wait_s=0.01, backoff_s=0.01, max_backoff_s=0.02)

    async def recover() -> None:
        while counters.get("otel_evaluations", outcome="failed", reason="export") < 4:
            await asyncio.sleep(0.01)
        assert consumer.commits == []  # nothing committed while the endpoint refuses
        sink.ok = True

    healer = asyncio.ensure_future(recover())
    await run_until(exporter, lambda: bool(consumer.commits))
    await healer
    emitter.shutdown()
    assert consumer.commits == [{consumer.tp: 1}]
    assert len(sink.taken) == 2  # once accepted: the refused attempts left nothing behind
    assert "did not take 2 of 2 evaluation records" in caplog.text


def test_the_exporters_sampling_rates_follow_the_rules_in_use() -> None:
    from types import SimpleNamespace

    from pipeline.rules import parse_rules
    from pipeline.worker.otel_export_service import LiveSamplingRates

    ctx = SimpleNamespace(ruleset=parse_rules({"rules": [{"name": "a", "scorer": "error_spans", "sampling_rate": 0.25}]}))
    rates = LiveSamplingRates(ctx)  # type: ignore[arg-type]
    assert (rates.get("a"), rates.get("sdk:json_output"), dict(rates)) == (0.25, None, {"a": 0.25})
    ctx.ruleset = parse_rules({"rules": [{"name": "a", "scorer": "error_spans", "sampling_rate": 0.5}]})  # rules apply
    assert rates.get("a") == 0.5
