"""Metrics on every worker process, sink or not: GET /metrics (Prometheus) on a port of its own, and
consumer lag sampled every `metrics_interval_s`, set as gauges and published as WorkerMetrics, which
the sink stores in `consumer_lag` (docs/metrics.md).

The endpoint is aiohttp in the worker's event loop, like the query endpoint: no thread, it stops with
the app, and a scrape reads the registry between two events, never half-way through one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import faust
from aiohttp import web
from mode import Service

from pipeline import topics
from pipeline.contracts import ConsumerLag, WorkerMetrics, encode
from pipeline.contracts.bounds import LOOKUP_TRACE_ID
from pipeline.errors import ConfigError
from pipeline.kafka_security import aiokafka_options
from pipeline.lag import TP, LagTracker, PartitionLag, partition_lag, position
from pipeline.metrics import Counters
from pipeline.runfile import set_run_entry
from pipeline.worker.context import WorkerContext
from pipeline.worker.lag_probe import LagProbe

log = logging.getLogger(__name__)

_TOPICS = frozenset(topics.ALL)  # not Faust's own changelog topics


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class MetricsServer:
    """GET /metrics, and GET /traces/open/<trace id>: what this worker's assembler holds of a trace (for `why`),
    404 when it holds nothing of it or runs no assembler."""

    def __init__(self, counters: Counters, host: str = "127.0.0.1", port: int = 0,
                 open_trace: Callable[[str], dict[str, Any] | None] | None = None) -> None:
        self._counters = counters
        self._open_trace = open_trace
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/traces/open/{trace_id}", self._open)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(f"cannot serve /metrics on {self._host}:{self._port} ({exc}); set "
                              "EVALSTREAM_METRICS_PORT=0 for a free port") from None
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host
        self.url = f"http://{host}:{port}/metrics"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self._counters.exposition(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _open(self, request: web.Request) -> web.Response:
        trace_id = request.match_info["trace_id"]
        if not LOOKUP_TRACE_ID.match(trace_id):
            return web.json_response({"error": "not a trace id"}, status=400)
        view = self._open_trace(trace_id) if self._open_trace is not None else None
        if view is None:
            return web.json_response({"held": False, "assembler": self._open_trace is not None}, status=404)
        return web.json_response({"held": True, "worker": worker_id(), **view})


class LagSensor(faust.Sensor):
    """Tells the tracker which records Faust handed to the agents and which they finished (acked)."""

    def __init__(self, tracker: LagTracker, group: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tracker = tracker
        self.group = group

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        if tp.topic in _TOPICS:
            self.tracker.fetched(self.group, tp.topic, tp.partition, offset)

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        if tp.topic in _TOPICS:
            self.tracker.processed(self.group, tp.topic, tp.partition, offset, message.timestamp)


async def measure_lag(tracker: LagTracker, probe: LagProbe) -> list[PartitionLag]:
    """Every watched group's lag on the partitions it has in this process."""
    groups = tracker.assignments()
    owned: set[TP] = set().union(*groups.values()) if groups else set()
    if not owned:
        return []
    ends = await probe.ends({tp: tracker.seen_end(tp) for tp in owned})
    next_offsets: dict[tuple[str, TP], int] = {}
    for group, tps in groups.items():
        committed = await probe.committed(group, tps)
        fresh = {tp for tp in tps if tracker.progress(group, tp) is None and tp not in committed}
        starts = await probe.log_starts(fresh)
        for tp in tps:
            next_offsets[(group, tp)] = position(tracker.progress(group, tp), committed.get(tp), starts.get(tp))
    heads = await _head_timestamps(probe, {k: off for k, off in next_offsets.items() if ends[k[1]] > off})
    now = time.time()
    out = []
    for (group, tp), next_offset in sorted(next_offsets.items()):
        progress = tracker.progress(group, tp)
        out.append(partition_lag(group, tp, end=ends[tp], next_offset=next_offset, head_ts=heads.get((group, tp)),
                                 last_ts=progress.processed_ts if progress else None, now=now))
    return out


async def _head_timestamps(probe: LagProbe, wanted: dict[tuple[str, TP], int]) -> dict[tuple[str, TP], float]:
    """The timestamp of each lagging group's first waiting record; one read per partition and offset (two
    groups at different offsets of one partition take two rounds)."""
    heads: dict[tuple[str, TP], float] = {}
    while wanted:
        round_: dict[TP, int] = {}
        for (_, tp), offset in wanted.items():
            round_.setdefault(tp, offset)
        found = await probe.first_timestamps(round_)
        for key in [k for k, offset in wanted.items() if round_[k[1]] == offset]:
            if key[1] in found:
                heads[key] = found[key[1]]
            del wanted[key]
    return heads


def install_metrics(app: faust.App, ctx: WorkerContext, bootstrap: str) -> None:
    """Watch the Faust consumer group's progress and run the metrics service with the app."""
    group = app.conf.id
    ctx.lag.watch(group, lambda: [(tp.topic, tp.partition) for tp in app.assignor.assigned_actives()
                                  if tp.topic in _TOPICS])
    app.sensors.add(LagSensor(ctx.lag, group))
    settings = ctx.settings
    ctx.counters.describe_worker(worker_id(), settings.roles, settings.sink_enabled)
    app.service(metrics_service_class(ctx, bootstrap))


def metrics_service_class(ctx: WorkerContext, bootstrap: str) -> type[Service]:
    class MetricsService(Service):
        """Started and stopped with the Faust app (`app.service`)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            settings = ctx.settings
            self.worker = worker_id()
            self.server = MetricsServer(ctx.counters, settings.metrics_host, settings.metrics_port, ctx.open_trace)
            self.probe: LagProbe | None = None

        async def on_start(self) -> None:
            url = await self.server.start()
            set_run_entry(ctx.settings.run_file, "metrics_urls", str(os.getpid()), url)
            log.info("metrics: serving %s (worker %s)", url, self.worker)
            self.add_future(self._sample_forever())

        async def _sample_forever(self) -> None:
            while not self.should_stop:
                await asyncio.sleep(ctx.settings.metrics_interval_s)
                try:
                    await self.sample()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the broker away: no lag figures until it is back
                    ctx.counters.clear("consumer_lag_records")
                    ctx.counters.clear("consumer_lag_seconds")
                    log.warning("metrics: consumer lag not measured (%s: %s)", type(exc).__name__, exc)
                    await self._close_probe()

        async def sample(self) -> None:
            if self.probe is None:
                probe = LagProbe(bootstrap, fetch_max_bytes=ctx.settings.fetch_max_bytes,
                                 client_options=aiokafka_options(ctx.settings))
                await probe.start()
                self.probe = probe
            at_ns = time.time_ns()
            lags = await measure_lag(ctx.lag, self.probe)
            counters = ctx.counters
            counters.clear("consumer_lag_records")
            counters.clear("consumer_lag_seconds")
            for lag in lags:
                labels = {"group": lag.group, "topic": lag.topic, "partition": str(lag.partition)}
                counters.set("consumer_lag_records", lag.records, **labels)
                counters.set("consumer_lag_seconds", lag.seconds, **labels)
            if not lags:
                return
            sample = WorkerMetrics(worker=self.worker, at_ns=at_ns, lag=[
                ConsumerLag(consumer_group=lag.group, topic=lag.topic, partition=lag.partition,
                            lag_records=lag.records, lag_seconds=lag.seconds) for lag in lags])
            try:
                await ctx.send(topics.METRICS, self.worker, encode(sample))
            except Exception as exc:  # noqa: BLE001 - the gauges stand; this sample misses ClickHouse
                log.warning("metrics: lag sample not published to %s (%s: %s)", topics.METRICS,
                            type(exc).__name__, exc)

        async def _close_probe(self) -> None:
            probe, self.probe = self.probe, None
            if probe is not None:
                try:
                    await probe.stop()
                except Exception:
                    log.debug("metrics: closing the lag probe failed", exc_info=True)

        async def on_stop(self) -> None:
            await self._close_probe()
            await self.server.stop()
            set_run_entry(ctx.settings.run_file, "metrics_urls", str(os.getpid()), None)

    return MetricsService
