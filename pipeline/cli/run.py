"""Commands that run the pipeline: `up`, `worker`, `otlp`, `demo`."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli.common import (
    RulesOpt,
    SetOpt,
    app,
    attach,
    console,
    err,
    install_shutdown,
    load_ruleset,
    rules_source,
    settings_from_env,
)

if TYPE_CHECKING:
    from pipeline.broker_memory import BrokerMemoryWatch
    from pipeline.settings import Settings
    from pipeline.shutdown import Shutdown


@app.command()
def up(rules: RulesOpt = None, set_: SetOpt = None, web_port: int | None = None) -> None:
    """Start the pipeline: the embedded broker and chDB unless EVALSTREAM_KAFKA_BOOTSTRAP / _CLICKHOUSE_DSN are set."""
    from pipeline.broker_memory import RUN_FILE_KEY
    from pipeline.embedded import RUN_FIELDS, EmbeddedBroker, embedded_settings, run_fields
    from pipeline.runfile import clear_run_file, update_run_file
    from pipeline.scoring.resolvers import worker_resolver
    from pipeline.worker.runner import run_worker

    settings = settings_from_env()
    if settings.kafka_bootstrap is None:  # the embedded broker: fewer partitions unless set (pipeline/embedded.py)
        settings = embedded_settings(settings)
    shutdown = install_shutdown(settings)
    scorers = worker_resolver(settings)
    ruleset = load_ruleset(settings, rules, set_, scorers)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(log_file=settings.data_dir / "broker.log") if settings.kafka_bootstrap is None else None
    watch = None
    try:  # from here on: a broker that started is stopped, whatever happens
        bootstrap = settings.kafka_bootstrap or ""
        if broker is not None:
            bootstrap = broker.start()
            shutdown.track(broker.pid)
            err.print(f"Embedded Tansu broker on {bootstrap} (it keeps every message in memory: `evalstream status` "
                      f"shows how much); ClickHouse data in {settings.data_dir / 'clickhouse'}")
            watch = watch_broker_memory(settings, broker.pid, shutdown)
        update_run_file(settings.run_file, **run_fields(settings, bootstrap))  # for `worker`, `otlp`, ...: the same
        run_worker(settings, ruleset, bootstrap, web_port, shutdown, scorers,
                   rules_source=rules_source(settings, rules, "up --rules"))
    finally:
        if broker is not None:
            if watch is not None:
                watch.stop()
            if shutdown.stopping:  # Tansu waits ~5 s for clients still connected (the SDK of a running app)
                shutdown.say("stopping the embedded broker")
            broker.stop(timeout_s=1.0 if shutdown.stopping else 5.0)  # it keeps topics in memory: no data to save
            clear_run_file(settings.run_file, *RUN_FIELDS, RUN_FILE_KEY)
        shutdown.finish()


def watch_broker_memory(settings: Settings, pid: int | None, shutdown: Shutdown) -> BrokerMemoryWatch | None:
    """Sample the embedded broker's RSS into run.json (`evalstream status`) and warn as it grows."""
    from pipeline.broker_memory import RUN_FILE_KEY, BrokerMemoryWatch
    from pipeline.runfile import update_run_file

    if pid is None:
        return None
    return BrokerMemoryWatch(
        pid, interval_s=settings.embedded_broker_check_s, warn_mb=settings.embedded_broker_warn_mb,
        publish=lambda entry: update_run_file(settings.run_file, **{RUN_FILE_KEY: entry}),
        warn=shutdown.say).start()


@app.command()
def worker(rules: RulesOpt = None, set_: SetOpt = None,
           sink: Annotated[bool | None, typer.Option(
               "--sink/--no-sink", help="Run the ClickHouse sink here (default: EVALSTREAM_SINK_ENABLED, true)."
           )] = None,
           web_port: int | None = None,
           roles: Annotated[str | None, typer.Option(
               help="Comma-separated roles to run: assembler, router, scorer, alerter, otel-export (default: "
                    "the first four, or EVALSTREAM_ROLES).")] = None) -> None:
    """Run one more worker against a running broker (EVALSTREAM_KAFKA_BOOTSTRAP or the embedded one)."""
    from pipeline.scoring.resolvers import worker_resolver
    from pipeline.worker.runner import run_worker

    settings = settings_from_env(sink_enabled=sink, **({"roles": roles} if roles is not None else {}))
    settings, bootstrap = attach(settings)  # `up`'s partition count when its broker is found in run.json
    shutdown = install_shutdown(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        scorers = worker_resolver(settings)
        run_worker(settings, load_ruleset(settings, rules, set_, scorers), bootstrap, web_port, shutdown, scorers,
                   rules_source=rules_source(settings, rules, "worker --rules"))
    finally:
        shutdown.finish()


@app.command()
def otlp(
    host: Annotated[str | None, typer.Option(
        help="Address to listen on (else EVALSTREAM_OTLP_HOST, or 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(
        min=0, max=65535, help="Port to listen on (else EVALSTREAM_OTLP_PORT, or 4318)")] = None,
    token: Annotated[str | None, typer.Option(
        help="Require `Authorization: Bearer <token>` (else EVALSTREAM_OTLP_TOKEN, which is safer: "
             "arguments show in ps)")] = None,
    max_request_bytes: Annotated[int | None, typer.Option(
        min=1024, help="Largest request body, before and after gzip (else EVALSTREAM_OTLP_MAX_REQUEST_BYTES, "
                       "or 20 MiB)")] = None,
    project: Annotated[str | None, typer.Option(
        help="Project of spans without evalstream.project (else EVALSTREAM_OTLP_DEFAULT_PROJECT, "
             "or default)")] = None,
) -> None:
    """Receive OpenTelemetry traces over OTLP/HTTP (POST /v1/traces) and feed them to the pipeline."""
    from pydantic import SecretStr

    from pipeline.admin import ensure_topics_for
    from pipeline.kafka_security import aiokafka_options
    from pipeline.otel.publisher import KafkaPublisher
    from pipeline.otel.receiver import ReceiverConfig, create_app, serve

    settings = settings_from_env(otlp_host=host, otlp_port=port, otlp_max_request_bytes=max_request_bytes,
                         otlp_default_project=project, otlp_token=SecretStr(token) if token else None)
    settings, bootstrap = attach(settings)  # topics it creates get `up`'s partition count
    secret = settings.otlp_token.get_secret_value() if settings.otlp_token else None
    config = ReceiverConfig(project=settings.otlp_default_project, token=secret or None,
                            max_request_bytes=settings.otlp_max_request_bytes,
                            max_message_bytes=settings.max_message_bytes)
    publisher = KafkaPublisher(bootstrap, max_message_bytes=settings.max_message_bytes,
                               client_options=aiokafka_options(settings))

    def ready(url: str) -> None:
        auth = ("a bearer token is required" if config.token
                else "[yellow]no token: anyone who can connect may send spans[/]")
        err.print(f"OTLP/HTTP receiver on {url} -> Kafka {bootstrap} ({publisher.topic}); {auth}")

    async def run() -> None:
        await ensure_topics_for(settings, bootstrap)
        await publisher.start()
        await serve(create_app(publisher, config), settings.otlp_host, settings.otlp_port, ready)

    # While the broker is down aiokafka logs every reconnect attempt; the publisher logs each failed
    # request once, with the topic and trace id.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    asyncio.run(run())


@app.command()
def demo(traces: int = 60, keep_running: bool = False) -> None:
    """Start the embedded stack, run an instrumented multi-agent demo, and print what the pipeline found."""
    from pipeline.demo.runner import run_demo

    run_demo(settings_from_env(), traces=traces, keep_running=keep_running, console=console)
