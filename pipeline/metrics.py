"""A worker's metrics: in-process counters shown by `/health` and `evalstream status`, and the same
events as Prometheus metrics in a registry of the process's own, served at `/metrics` (docs/metrics.md).

Callers name events (`inc("traces_closed", status="complete")`, `observe("sink_insert_seconds", 0.01)`,
`set("jobs_running", 3)`); `METRICS` maps each name to its Prometheus metric. A name not in the map
still counts, as `evalstream_<name>_total`. Nothing here raises into the caller.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

LAG_LABELS = ("group", "topic", "partition")


@dataclass(frozen=True)
class MetricSpec:
    kind: Literal["counter", "gauge", "histogram"]
    name: str  # counters get `_total` from prometheus_client
    doc: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


METRICS: dict[str, MetricSpec] = {
    "spans_in": MetricSpec("counter", "evalstream_spans_in", "Spans added to traces (a span id counts once)."),
    "spans_duplicate": MetricSpec("counter", "evalstream_spans_duplicate", "Spans received again and ignored."),
    "spans_forwarded": MetricSpec("counter", "evalstream_spans_forwarded",
                                  "Spans sent on to their trace's partition (sent with another key)."),
    "traces_closed": MetricSpec("counter", "evalstream_traces_closed",
                                "Trace versions closed: complete or incomplete for a first version, reopened "
                                "for a version after a late span.", ("status",)),
    "traces_reopened": MetricSpec("counter", "evalstream_traces_reopened", "Closed traces re-opened by a late span."),
    "assembly_history_errors": MetricSpec("counter", "evalstream_assembly_history_errors",
                                          "Reads of stored versions (for version continuity) that storage did not "
                                          "answer."),
    "assembly_open_traces": MetricSpec("gauge", "evalstream_assembly_open_traces",
                                       "Traces this worker's assembler holds open on its partitions now."),
    "assembly_closed_kept": MetricSpec("gauge", "evalstream_assembly_closed_kept",
                                       "Closed traces this worker's assembler keeps for late spans (reopen window)."),
    "assembly_oldest_open_s": MetricSpec("gauge", "evalstream_assembly_oldest_open_seconds",
                                         "Age of the oldest trace this worker's assembler holds open (0: none)."),
    "assembly_storage_readable": MetricSpec(
        "gauge", "evalstream_assembly_storage_readable",
        "1 while the assembler can read stored traces back, so closed traces keep only their span ids in the "
        "changelog; 0 while it keeps them whole."),
    "assembly_stored_spans_missing": MetricSpec(
        "counter", "evalstream_assembly_stored_spans_missing",
        "Re-opened traces that closed with their new spans only: storage never had the version they re-opened."),
    "session_turns": MetricSpec("counter", "evalstream_session_turns", "Turns added to sessions (a trace version "
                                "counts once)."),
    "sessions_closed": MetricSpec("counter", "evalstream_sessions_closed",
                                  "Session versions closed, by status (complete, incomplete).", ("status",)),
    "session_jobs_queued": MetricSpec("counter", "evalstream_session_jobs_queued",
                                      "Session score jobs sent to the scorers (each-turn looks and closing verdicts)."),
    "jobs_queued": MetricSpec("counter", "evalstream_jobs_queued", "Score jobs sent to the scorers."),
    "evaluation_requests_refused": MetricSpec(
        "counter", "evalstream_evaluation_requests_refused",
        "async_evaluate requests on spans refused by the operator's sdk_evaluations policy, by reason.",
        ("reason",)),
    "scorer_cache_entries": MetricSpec("gauge", "evalstream_scorer_cache_entries",
                                       "Scorer instances kept for reuse in this process (at most "
                                       "EVALSTREAM_SCORER_CACHE_SIZE)."),
    "jobs_running": MetricSpec("gauge", "evalstream_jobs_running", "Score jobs running in this process now."),
    "jobs_deferred": MetricSpec("counter", "evalstream_jobs_deferred", "Jobs held back by their rule's budget.",
                                ("rule",)),
    "budget_records_invalid": MetricSpec("counter", "evalstream_budget_records_invalid",
                                         "Records on the spend-ledger topic refused (size, fields) and ignored."),
    "budget_reservations": MetricSpec("counter", "evalstream_budget_reservations",
                                      "Spend reservations this process wrote, by verdict (granted, refused, "
                                      "unconfirmed).", ("verdict",)),
    "jobs_resumed": MetricSpec("counter", "evalstream_jobs_resumed", "Deferred jobs sent back to the scorers."),
    "scores": MetricSpec("counter", "evalstream_scores", "Score results by rule and status (scored, error).",
                         ("rule", "status")),
    "evaluation_traces": MetricSpec("counter", "evalstream_evaluation_traces",
                                    "Judged jobs' evaluation traces, by outcome (sent, failed: the score went "
                                    "out without its link).", ("outcome",)),
    "dead_letters": MetricSpec("counter", "evalstream_dead_letters", "Messages or jobs dead-lettered, by stage.",
                               ("stage",)),
    "rules_rejected": MetricSpec("counter", "evalstream_rules_rejected",
                                 "Records on the rules topic not used (they did not validate), by reason.",
                                 ("reason",)),
    "rules_switches": MetricSpec("counter", "evalstream_rules_switches", "Switches to a new rules version."),
    "sink_rows": MetricSpec("counter", "evalstream_sink_rows", "Rows inserted into ClickHouse."),
    "sink_insert_errors": MetricSpec("counter", "evalstream_sink_insert_errors",
                                     "ClickHouse inserts failed for the store, not the data (each retried "
                                     "until it lands)."),
    "sink_rows_rejected": MetricSpec("counter", "evalstream_sink_rows_rejected",
                                     "Rows ClickHouse refused for their values, dead-lettered (stage sink).",
                                     ("table",)),
    "sink_batch_rows": MetricSpec("histogram", "evalstream_sink_batch_rows", "Rows per ClickHouse insert.",
                                  buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 50000)),
    "sink_insert_seconds": MetricSpec("histogram", "evalstream_sink_insert_seconds",
                                      "Time to insert one batch into ClickHouse (the successful attempt).",
                                      buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                               10)),
    "otel_evaluations": MetricSpec("counter", "evalstream_otel_evaluations",
                                   "Scores sent as gen_ai.evaluation.result log records (otel-export role), by "
                                   "outcome: exported, failed (the endpoint did not take them: sent again), "
                                   "skipped (undecodable message), and reason.", ("outcome", "reason")),
    "otel_evaluations_uncorrelated": MetricSpec("counter", "evalstream_otel_evaluations_uncorrelated",
                                                "Exported evaluation records without trace context (a trace id "
                                                "that is not OpenTelemetry's), by reason.", ("reason",)),
    "alerts": MetricSpec("counter", "evalstream_alert_deliveries",
                         "Alert deliveries by kind and outcome, first attempts and redeliveries.", ("kind", "status")),
    "alerts_redelivered": MetricSpec("counter", "evalstream_alert_deliveries", "", ("kind", "status")),
    "consumer_lag_records": MetricSpec("gauge", "evalstream_consumer_lag_records",
                                       "Records not yet processed, per consumer group and partition owned here.",
                                       LAG_LABELS),
    "rule_health": MetricSpec("gauge", "evalstream_rule_health",
                              "1 for each rule's health state now and 0 for its other states (docs/rule-health.md); "
                              "exported by the sink that evaluates rule health.", ("rule", "state")),
    "consumer_lag_seconds": MetricSpec("gauge", "evalstream_consumer_lag_seconds",
                                       "Age of the oldest unprocessed record (0 when caught up).", LAG_LABELS),
}


class Counters:
    def __init__(self) -> None:
        self._values: Counter[str] = Counter()
        self._last: dict[str, float] = {}
        self._gauges: dict[str, float] = {}
        self.registry = CollectorRegistry()
        self._prom: dict[str, tuple[MetricSpec, PromCounter | PromGauge | PromHistogram]] = {}
        self._broken: set[tuple[str, tuple[str, ...]]] = set()
        # (event, method, *label items) -> the Prometheus child's bound method: `labels()` costs ~4 µs a call
        self._bound: dict[tuple[Any, ...], Callable[[float], None]] = {}
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._info = PromGauge("evalstream_worker_info", "This worker process (always 1).",
                               ("worker", "roles", "sink"), registry=self.registry)
        for event in METRICS:
            self._metric(event, "counter", ())

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> str:
        if not labels:
            return name
        return name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"

    def _metric(self, event: str, kind: Literal["counter", "gauge"], labels: tuple[str, ...]
                ) -> tuple[MetricSpec, Any]:
        found = self._prom.get(event)
        if found is not None:
            return found
        spec = METRICS.get(event) or MetricSpec(kind, f"evalstream_{event}", f"{event} (unlisted event).",
                                                tuple(sorted(labels)))
        shared = next((m for s, m in self._prom.values() if s.name == spec.name), None)  # one metric, two events
        if shared is not None:
            metric = shared
        elif spec.kind == "counter":
            metric = PromCounter(spec.name, spec.doc, spec.labels, registry=self.registry)
        elif spec.kind == "gauge":
            metric = PromGauge(spec.name, spec.doc, spec.labels, registry=self.registry)
        else:
            metric = PromHistogram(spec.name, spec.doc, spec.labels, buckets=spec.buckets, registry=self.registry)
        self._prom[event] = (spec, metric)
        return spec, metric

    def _apply(self, event: str, method: str, value: float, labels: dict[str, str]) -> None:
        cached = (event, method, *[(k, str(v)) for k, v in labels.items()])
        try:
            bound = self._bound.get(cached)
            if bound is not None:
                bound(value)
                return
            spec, metric = self._metric(event, "counter" if method == "inc" else "gauge", tuple(labels))
            kind_method = "set" if method == "observe" and spec.kind != "histogram" else method
            child = metric.labels(**{k: str(v) for k, v in labels.items()}) if labels else metric
            bound = getattr(child, kind_method)
            bound(value)
            self._bound[cached] = bound
        except (ValueError, TypeError, AttributeError) as exc:  # wrong labels, kind or a name clash
            key = (event, tuple(sorted(labels)))
            if key not in self._broken:  # once: this is a bug in the caller, not worth a log line per event
                self._broken.add(key)
                log.error("metrics: %s with labels %s cannot be exported (%s); it shows in /health only",
                          event, sorted(labels), exc)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        self._values[self._key(name, labels)] += amount
        if amount >= 0:
            self._apply(name, "inc", amount, labels)

    def observe(self, name: str, value: float) -> None:
        self._last[name] = value
        self._apply(name, "observe", value, {})

    def set(self, name: str, value: float, **labels: str) -> None:
        """A gauge: the value now."""
        self._gauges[self._key(name, labels)] = value
        self._apply(name, "set", value, labels)

    def clear(self, name: str) -> None:
        """Drop every labelled value of a gauge (before setting the ones that still exist)."""
        self._gauges = {k: v for k, v in self._gauges.items() if not k.startswith(name + "{")}
        found = self._prom.get(name)
        if found is not None and found[0].labels:
            found[1].clear()
            metric = found[1]  # its children are gone, under whichever event shares it
            self._bound = {k: b for k, b in self._bound.items() if self._prom[k[0]][1] is not metric}

    def describe_worker(self, worker: str, roles: str, sink: bool) -> None:
        self._info.labels(worker=worker, roles=roles or "none", sink=str(sink).lower()).set(1)

    def get(self, name: str, **labels: str) -> float:
        return self._values.get(self._key(name, labels), 0)

    def snapshot(self) -> dict[str, float]:
        return {**dict(self._values), **self._gauges, **{f"{k}_last": v for k, v in self._last.items()}}

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in the format the scraper asked for (Prometheus text, or OpenMetrics): body, type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
