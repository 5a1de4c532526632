"""The composition root: one Faust app, wired from one Settings object, one RuleSet (the version it starts
with; `worker/rules_service.py` switches to each one applied later) and the process's ScorerResolver (built
by the CLI before it checked the rules, else here).

From the Settings it builds what each part is configured with (AssemblyConfig, SessionConfig, the scoring
RetryPolicy; the judge client is the resolver's) and hands them down on the WorkerContext.

A worker process runs the agents of its roles (`EVALSTREAM_ROLES`, default all of assembler,
router, scorer and alerter; `otel-export` only when named); processes share partitions with other workers of the same app id. The sink role (ClickHouse writer and
query endpoint) runs only where `sink_enabled` is true, because chDB allows one opener.
"""

from __future__ import annotations

import asyncio
import logging

import faust

from pipeline import topics
from pipeline.alerts.channels import channel_from_settings
from pipeline.assembly import AssemblyConfig
from pipeline.assembly.history import StoredSessionVersions, StoredVersions
from pipeline.kafka_security import aiokafka_options
from pipeline.metrics import Counters
from pipeline.pricing import LiteLLMPrices
from pipeline.rules import RuleSet
from pipeline.rules.versions import ActiveRules
from pipeline.scoring import RetryPolicy
from pipeline.scoring.resolvers import worker_resolver
from pipeline.scoring.uploaded import UploadedScorers
from pipeline.sessions import SessionConfig
from pipeline.settings import Settings
from pipeline.storage.reader import Reader
from pipeline.worker.alert_redelivery import AlertRedelivery
from pipeline.worker.alerter import Alerter
from pipeline.worker.assembler import Assembler
from pipeline.worker.budget_ledger import SharedBudget, budget_service_class
from pipeline.worker.context import WorkerContext, make_topics
from pipeline.worker.deferred import DeferredJobs
from pipeline.worker.metrics_service import install_metrics
from pipeline.worker.router import BackfillRouter
from pipeline.worker.rules_service import rules_service_class
from pipeline.worker.scorer import ScorerWorker
from pipeline.worker.scorer_store import scorer_store_service_class
from pipeline.worker.session_assembler import SessionAssembler
from pipeline.worker.session_router import SessionRouter
from pipeline.worker.session_scorer import SessionScorer
from pipeline.worker.sink_service import sink_service_class
from pipeline.worker.transport import EvalstreamApp, faust_credentials
from scorers.registry import ScorerResolver

log = logging.getLogger(__name__)

STORAGE_PROBE_INTERVAL_S = 10.0  # whether the assembler can read stored traces back (compact closed states)


def broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


def create_app(settings: Settings, ruleset: RuleSet | ActiveRules, bootstrap: str, *, web_port: int | None = None,
               scorers: ScorerResolver | None = None) -> faust.App:
    app = EvalstreamApp(
        settings.app_id,
        broker=broker_url(bootstrap),
        broker_credentials=faust_credentials(settings),
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        kafka_client_options={"bootstrap_servers": bootstrap, "fetch_max_bytes": settings.fetch_max_bytes,
                              "client_options": aiokafka_options(settings)},
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,  # Faust's own changelog topics
        topic_allow_declare=True,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 3,
        broker_request_timeout=max(30.0, settings.session_timeout_s * 3),
        producer_max_request_size=settings.fetch_max_bytes,
        consumer_max_fetch_size=settings.fetch_max_bytes,
        producer_linger=0.002,
        web_enabled=web_port is not None,
        web_port=web_port or 6066,
        web_bind="127.0.0.1",
    )
    rules = ruleset if isinstance(ruleset, ActiveRules) else ActiveRules.of(ruleset)
    ctx = WorkerContext(app=app, settings=settings, rules=rules, counters=Counters(),
                        topics=make_topics(app, settings), assembly=AssemblyConfig.from_settings(settings),
                        sessions=SessionConfig.from_settings(settings), retry_policy=RetryPolicy.from_settings(settings),
                        scorers=scorers if scorers is not None else worker_resolver(settings))

    roles = settings.role_set
    if "assembler" in roles:
        _assembler_role(app, ctx)
    if "router" in roles:
        _router_role(app, ctx)
    if "scorer" in roles:
        _scorer_role(app, ctx, bootstrap)
    if "alerter" in roles:
        _alerter_role(app, ctx)
    if "otel-export" in roles:  # off by default: scores -> OTLP log records (docs/opentelemetry.md)
        from pipeline.worker.otel_export_service import otel_export_service_class  # needs the `otel` extra

        app.service(otel_export_service_class(ctx, bootstrap))
    if settings.sink_enabled:
        app.service(sink_service_class(ctx, bootstrap))
    app.service(rules_service_class(ctx, bootstrap))  # rules applied without a restart, in every role
    install_metrics(app, ctx, bootstrap)  # GET /metrics and consumer lag, on every worker

    app.evalstream = ctx  # type: ignore[attr-defined]
    return app


def _assembler_role(app: faust.App, ctx: WorkerContext) -> None:
    """Spans -> closed traces, routed where they close (decisions, jobs, turns), and turns -> sessions. The
    `assembly` table holds open traces; ticks close them by the clock."""
    assembly = app.Table("assembly", partitions=ctx.settings.topic_partitions)
    prices = LiteLLMPrices()
    history = StoredVersions(Reader.for_workers(ctx.settings))
    assembler = Assembler(ctx, assembly, prices, history)
    ctx.open_trace = assembler.open_trace

    @app.agent(ctx.topics[topics.SPANS], name="assembler")
    async def assemble(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await assembler.handle(event)

    @app.task
    async def warm_prices() -> None:
        await asyncio.to_thread(prices.warm)

    @app.timer(ctx.settings.tick_interval_s)
    async def tick() -> None:
        await assembler.send_ticks()

    @app.timer(STORAGE_PROBE_INTERVAL_S, on_leader=False)
    async def probe_storage() -> None:
        await assembler.probe_storage()

    @app.timer(ctx.settings.metrics_interval_s, on_leader=False)
    async def report_held() -> None:
        assembler.report_held()

    # Closed traces' turns -> sessions. The `session-assembly` table holds conversations, keyed by session id.
    session_table = app.Table("session-assembly", partitions=ctx.settings.topic_partitions)
    sessions = SessionAssembler(ctx, session_table, StoredSessionVersions(Reader.for_workers(ctx.settings)))

    @app.agent(ctx.topics[topics.SESSION_TURNS], name="session-assembler")
    async def assemble_sessions(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await sessions.handle(event)

    @app.timer(ctx.settings.tick_interval_s)
    async def session_tick() -> None:
        await sessions.send_ticks()

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: object, assigned: object, **kwargs: object) -> None:
        assembler.on_rebalance()
        sessions.on_rebalance()


def _router_role(app: faust.App, ctx: WorkerContext) -> None:
    """Sessions -> their decisions and jobs; backfill batches -> the named rules' decisions and jobs. (Live
    traces are routed by the assembler in the event that closes them.)"""
    session_router = SessionRouter(ctx)

    @app.agent(ctx.topics[topics.SESSIONS], name="session-router")
    async def route_sessions(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await session_router.handle(event)

    backfill_router = BackfillRouter(ctx)

    @app.agent(ctx.topics[topics.BACKFILL], name="backfill-router")
    async def route_backfill(stream: faust.StreamT) -> None:  # `evalstream backfill`: stored traces, named rules
        async for event in stream.events():
            await backfill_router.handle(event)


def _scorer_role(app: faust.App, ctx: WorkerContext, bootstrap: str) -> None:
    """Score jobs (traces and sessions) -> scores; jobs over a rule's budget wait on the deferred topic."""
    budget = SharedBudget(ctx, bootstrap)  # one spend ledger for every scorer process (docs/budgets.md)
    app.service(budget_service_class(budget))
    scorer = ScorerWorker(ctx, budget)
    deferred = DeferredJobs(ctx)

    @app.agent(ctx.topics[topics.JOBS], name="scorer", concurrency=ctx.settings.scorer_concurrency)
    async def score(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await scorer.handle(event)

    @app.agent(ctx.topics[topics.JOBS_DEFERRED], name="deferred-jobs", concurrency=ctx.settings.defer_concurrency)
    async def resume_deferred(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await deferred.handle(event)

    session_scorer = SessionScorer(ctx, scorer.cache, scorer.slots, Reader.for_workers(ctx.settings).atrace)

    @app.agent(ctx.topics[topics.SESSION_JOBS], name="session-scorer", concurrency=ctx.settings.scorer_concurrency)
    async def score_sessions(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await session_scorer.handle(event)

    if isinstance(ctx.scorers.uploaded, UploadedScorers):  # uploaded scorers: follow the scorer store
        app.service(scorer_store_service_class(ctx, bootstrap, ctx.scorers.uploaded))


def _alerter_role(app: faust.App, ctx: WorkerContext) -> None:
    """Scores -> observations per alert rule -> incidents (table `alert-incidents`) -> channels."""
    incidents = app.Table("alert-incidents", partitions=ctx.settings.topic_partitions)
    channel = channel_from_settings(ctx.settings)
    alerter = Alerter(ctx, incidents, channel)
    redelivery = AlertRedelivery(ctx, channel)

    @app.agent(ctx.topics[topics.SCORES], name="alert-matcher")
    async def match_alerts(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await alerter.handle_scores(event)

    @app.agent(ctx.topics[topics.ALERT_OBSERVATIONS], name="alerter")
    async def fire_alerts(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await alerter.handle(event)

    @app.timer(ctx.settings.alert_tick_interval_s)
    async def alert_tick() -> None:
        await alerter.send_ticks()

    @app.agent(ctx.topics[topics.ALERT_RETRIES], name="alert-redelivery", concurrency=ctx.settings.defer_concurrency)
    async def redeliver_alerts(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await redelivery.handle(event)
