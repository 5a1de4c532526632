"""The `evalstream` command line."""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.errors import EvalstreamError
from pipeline.settings import Settings
from pipeline.shutdown import Shutdown

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Streaming evaluation for LLM agents.")
rules_app = typer.Typer(help="Check rules files.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
console = Console()
err = Console(stderr=True, soft_wrap=True)  # messages stay whole lines in logs and pipes

RulesOpt = Annotated[Path | None, typer.Option("--rules", "-r", help="Rules file (YAML or TOML).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a rule field: RULE.FIELD=VALUE.")]


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # validated, unlike model_copy
    except ValidationError as exc:
        raise EvalstreamError(f"invalid EVALSTREAM_* setting: {exc}") from None


def _ruleset(settings: Settings, rules: Path | None, overrides: list[str] | None):
    from pipeline.rules import RuleSet, load_rules
    from pipeline.scoring import uploaded

    uploaded.install(settings)  # rules may name uploaded scorers: resolved per job, hot-swapped
    path = rules or settings.rules_file
    if path is None:
        if overrides:
            raise EvalstreamError("--set needs a rules file (--rules or EVALSTREAM_RULES_FILE)")
        err.print("[yellow]No rules file: traces are assembled and stored, nothing is scored.[/]")
        return RuleSet()
    ruleset = load_rules(path, overrides)
    err.print(f"Loaded {len(ruleset.active)} rule(s) and {len(ruleset.alerts)} alert(s) from {path}")
    return ruleset


def _shutdown(settings: Settings) -> Shutdown:
    """SIGINT / SIGTERM from here on: a graceful stop, ended by force after `stop_timeout_s` or a second signal."""
    shutdown = Shutdown(settings.stop_timeout_s)
    shutdown.install()
    return shutdown


@app.command()
def up(rules: RulesOpt = None, set_: SetOpt = None, web_port: int | None = None) -> None:
    """Start the pipeline: the embedded broker and chDB unless EVALSTREAM_KAFKA_BOOTSTRAP / _CLICKHOUSE_DSN are set."""
    from pipeline.embedded import EmbeddedBroker
    from pipeline.runfile import clear_run_file, update_run_file
    from pipeline.worker.runner import run_worker

    settings = _settings()
    shutdown = _shutdown(settings)
    ruleset = _ruleset(settings, rules, set_)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(log_file=settings.data_dir / "broker.log") if settings.kafka_bootstrap is None else None
    try:  # from here on: a broker that started is stopped, whatever happens
        bootstrap = settings.kafka_bootstrap or ""
        if broker is not None:
            bootstrap = broker.start()
            shutdown.track(broker.pid)
            err.print(f"Embedded Tansu broker on {bootstrap}; ClickHouse data in {settings.data_dir / 'clickhouse'}")
        update_run_file(settings.run_file, kafka_bootstrap=bootstrap)
        run_worker(settings, ruleset, bootstrap, web_port, shutdown)
    finally:
        if broker is not None:
            if shutdown.stopping:  # Tansu waits ~5 s for clients still connected (the SDK of a running app)
                shutdown.say("stopping the embedded broker")
            broker.stop(timeout_s=1.0 if shutdown.stopping else 5.0)  # it keeps topics in memory: no data to save
            clear_run_file(settings.run_file, "kafka_bootstrap")
        shutdown.finish()


@app.command()
def worker(rules: RulesOpt = None, set_: SetOpt = None,
           sink: Annotated[bool | None, typer.Option(
               "--sink/--no-sink", help="Run the ClickHouse sink here (default: EVALSTREAM_SINK_ENABLED, true)."
           )] = None,
           web_port: int | None = None,
           roles: Annotated[str | None, typer.Option(
               help="Comma-separated roles to run: assembler, router, scorer, alerter (default: all, or "
                    "EVALSTREAM_ROLES).")] = None) -> None:
    """Run one more worker against a running broker (EVALSTREAM_KAFKA_BOOTSTRAP or the embedded one)."""
    from pipeline.runfile import read_run_file
    from pipeline.worker.runner import run_worker

    settings = _settings(sink_enabled=sink, **({"roles": roles} if roles is not None else {}))
    shutdown = _shutdown(settings)
    bootstrap = settings.kafka_bootstrap or read_run_file(settings.run_file).get("kafka_bootstrap")
    if not bootstrap:
        raise EvalstreamError("no broker: set EVALSTREAM_KAFKA_BOOTSTRAP or start `evalstream up` first")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        run_worker(settings, _ruleset(settings, rules, set_), bootstrap, web_port, shutdown)
    finally:
        shutdown.finish()


@app.command()
def sql(query: str, format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table"
        ) -> None:
    """Run a read-only SQL query (works while the pipeline runs)."""
    from pipeline.storage.reader import Reader

    if format not in ("table", "csv", "json"):
        raise EvalstreamError("--format must be table, csv or json")
    reader = Reader(_settings())
    try:
        result = reader.query(query)
    finally:
        reader.close()
    _print_result(result.columns, result.rows, format)


@app.command()
def why(trace_id: str) -> None:
    """Explain what happened to a trace: its versions, every rule's decision, and its scores."""
    from pipeline.storage.explain import explain_trace
    from pipeline.storage.reader import Reader

    reader = Reader(_settings())
    try:
        found = explain_trace(reader, trace_id, console)
    finally:
        reader.close()
    if not found:
        raise typer.Exit(1)


@app.command()
def status() -> None:
    """Show the running embedded stack and its counters."""
    import urllib.request

    from pipeline.runfile import read_run_file

    settings = _settings()
    run = read_run_file(settings.run_file)
    if not run.get("query_url"):
        console.print("No pipeline is running here.")
        raise typer.Exit(1)
    with urllib.request.urlopen(f"{run['query_url']}/health", timeout=5) as response:
        health = json.loads(response.read())
    console.print_json(data={"run": run, "health": health})


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
    from pipeline.otel.publisher import KafkaPublisher
    from pipeline.otel.receiver import ReceiverConfig, create_app, serve
    from pipeline.runfile import read_run_file

    settings = _settings(otlp_host=host, otlp_port=port, otlp_max_request_bytes=max_request_bytes,
                         otlp_default_project=project, otlp_token=SecretStr(token) if token else None)
    bootstrap = settings.kafka_bootstrap or read_run_file(settings.run_file).get("kafka_bootstrap")
    if not bootstrap:
        raise EvalstreamError("no broker: set EVALSTREAM_KAFKA_BOOTSTRAP or start `evalstream up` first")
    secret = settings.otlp_token.get_secret_value() if settings.otlp_token else None
    config = ReceiverConfig(project=settings.otlp_default_project, token=secret or None,
                            max_request_bytes=settings.otlp_max_request_bytes,
                            max_message_bytes=settings.max_message_bytes)
    publisher = KafkaPublisher(bootstrap, max_message_bytes=settings.max_message_bytes)

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

    run_demo(_settings(), traces=traces, keep_running=keep_running, console=console)


@app.command()
def backfill(
    rule: Annotated[list[str], typer.Option("--rule", help="A rule to run (repeat for several).")],
    since: Annotated[str, typer.Option(help="Traces closed since: 30m, 24h, 7d or an ISO date.")],
    until: Annotated[str | None, typer.Option(help="Closed before: a duration ago or an ISO date (default: now).")]
    = None,
    project: Annotated[str | None, typer.Option(help="Only this project's traces.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many traces, oldest first.")] = None,
    rules: RulesOpt = None,
    page_size: Annotated[int, typer.Option(min=1, help="Traces read and acknowledged per checkpoint.")] = 500,
    restart: Annotated[bool, typer.Option("--restart", help="Forget the checkpoint and start over.")] = False,
    wait: Annotated[bool, typer.Option(help="Wait until every trace has its decision, then count them.")] = True,
    wait_timeout: Annotated[float, typer.Option(help="Seconds to wait for the decisions.")] = 600.0,
) -> None:
    """Send stored traces back through the live rules and scorers (source=backfill); re-run to resume."""
    from pipeline.backfill import BackfillOptions, BackfillSpec, load_backfill_rules, run_backfill

    settings = _settings()
    spec = BackfillSpec.of(rule, since, until, project, limit)
    ruleset, source = load_backfill_rules(settings, rules)
    options = BackfillOptions(page_size=page_size, restart=restart, wait=wait, wait_timeout_s=wait_timeout)
    try:
        result = run_backfill(settings, ruleset, source, spec, options, console, err)
    except KeyboardInterrupt:
        err.print("[yellow]Interrupted: everything acknowledged is kept; run the same command to resume.[/]")
        raise typer.Exit(130) from None
    if not result.complete:
        raise typer.Exit(1)


@rules_app.command("check")
def rules_check(path: Path, set_: SetOpt = None) -> None:
    """Validate a rules file (and the scorers it names)."""
    from pipeline.rules import load_rules

    _use_stored_scorers(_settings())
    ruleset = load_rules(path, set_)
    console.print(f"OK: {len(ruleset.rules)} rule(s), {len(ruleset.alerts)} alert(s)")


# -- scorers: upload, list, test ---------------------------------------------------------------------

alerts_app = typer.Typer(help="Alert rules, a test message, and what fired.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


def _alert_rules(settings: Settings, rules: Path | None) -> Any:
    from pipeline.rules import load_rules

    path = rules or settings.rules_file
    if path is None:
        raise EvalstreamError("no rules file: pass --rules or set EVALSTREAM_RULES_FILE")
    return load_rules(path)


def _sql_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@alerts_app.command("list")
def alerts_list(rules: RulesOpt = None) -> None:
    """The alert rules of a rules file, and the channel alerts go to."""
    from pipeline.alerts.channels import channel_from_settings

    settings = _settings()
    ruleset = _alert_rules(settings, rules)
    for alert in ruleset.alerts:  # one line each: a wide table would wrap the sentence that matters
        group = f"; one incident per {', '.join(alert.group_by)}" if alert.group_by else ""
        console.print(f"[bold]{alert.name}[/] on {alert.rule or '(every rule)'}, when {alert.condition.value}: "
                      f"{alert.describe()}; cooldown {alert.cooldown_s:g}s{group}", soft_wrap=True)
    console.print(f"channel: {channel_from_settings(settings).name}")


@alerts_app.command("test")
def alerts_test(alert_name: Annotated[str, typer.Argument(help="An alert rule's name.")],
                rules: RulesOpt = None) -> None:
    """Send a sample alert for ALERT_NAME to the configured channel and say whether it arrived."""
    import asyncio

    from pipeline.alerts.channels import channel_from_settings
    from pipeline.alerts.message import sample_alert
    from pipeline.contracts import DeliveryStatus

    settings = _settings()
    ruleset = _alert_rules(settings, rules)
    alert_rule = next((a for a in ruleset.alerts if a.name == alert_name), None)
    if alert_rule is None:
        raise EvalstreamError(f"no alert named {alert_name!r}; known: {', '.join(a.name for a in ruleset.alerts)}")
    channel = channel_from_settings(settings)
    alert = sample_alert(alert_rule, channel.name, trace_url_template=settings.trace_url_template,
                         dashboard_url_template=settings.alert_dashboard_url_template)
    delivered = asyncio.run(channel.deliver(alert))
    if delivered.delivery_status == DeliveryStatus.FAILED:
        raise EvalstreamError(f"delivery to {channel.name} failed: {delivered.delivery_error}")
    console.print(f"sent to {channel.name}: {delivered.delivery_status.value}")


@alerts_app.command("history")
def alerts_history(limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
                   alert: Annotated[str | None, typer.Option(help="Only this alert rule.")] = None,
                   incident: Annotated[str | None, typer.Option(help="Only this incident's messages.")] = None,
                   ) -> None:
    """What fired, digested and resolved, when, and whether it was delivered (works while the pipeline runs)."""
    from pipeline.storage.reader import Reader

    where = []
    if alert:
        where.append(f"alert_rule = {_sql_str(alert)}")
    if incident:
        where.append(f"incident_id = {_sql_str(incident)}")
    reader = Reader(_settings())
    try:
        result = reader.query(
            f"SELECT fired_at, incident_id AS incident, kind, level, title, delivery_status AS delivery, "
            f"delivery_attempts AS attempts, delivery_error "
            f"FROM {reader.database}.alerts FINAL {'WHERE ' + ' AND '.join(where) if where else ''} "
            f"ORDER BY fired_at DESC LIMIT {int(limit)}")
    finally:
        reader.close()
    table = Table(*result.columns)
    for row in result.rows:
        table.add_row(*(escape("" if v is None else str(v)[:80]) for v in row))
    console.print(table)


topics_app = typer.Typer(help="Create and inspect the pipeline's Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")


def _bootstrap(settings: Settings) -> str:
    from pipeline.runfile import read_run_file

    bootstrap = settings.kafka_bootstrap or read_run_file(settings.run_file).get("kafka_bootstrap")
    if not bootstrap:
        raise EvalstreamError("no broker: set EVALSTREAM_KAFKA_BOOTSTRAP or start `evalstream up` first")
    return bootstrap


@topics_app.command("init")
def topics_init(
    partitions: Annotated[int | None, typer.Option(help="Partitions per topic (default EVALSTREAM_TOPIC_PARTITIONS).")
                          ] = None,
    replication_factor: Annotated[int | None, typer.Option(
        help="Replicas per partition (default EVALSTREAM_TOPIC_REPLICATION_FACTOR).")] = None,
    retention_hours: Annotated[float | None, typer.Option(
        help="Retention of the data topics (default EVALSTREAM_TOPIC_RETENTION_HOURS).")] = None,
) -> None:
    """Create the missing topics with their partitions, replication and retention (the deploy's init job).
    Existing topics are not changed; a partition count that differs from the wanted one is reported."""
    from pipeline.admin import ensure_topics, topic_partitions
    from pipeline.kafka_security import aiokafka_options

    settings = _settings(topic_partitions=partitions, topic_replication_factor=replication_factor,
                         topic_retention_hours=retention_hours)
    bootstrap, options = _bootstrap(settings), aiokafka_options(settings)

    async def run() -> tuple[list[str], dict[str, int]]:
        created = await ensure_topics(bootstrap, settings.topic_partitions,
                                      replication_factor=settings.topic_replication_factor,
                                      retention_hours=settings.topic_retention_hours, client_options=options)
        return created, await topic_partitions(bootstrap, client_options=options)

    created, counts = asyncio.run(run())
    table = Table("topic", "partitions", "")
    differs = 0
    for name, count in sorted(counts.items()):
        note = "created" if name in created else "exists"
        if count != settings.topic_partitions:
            differs += 1
            note += f" — wanted {settings.topic_partitions}: see docs/operations.md, 'Changing partition counts'"
        table.add_row(name, str(count), note)
    console.print(table)
    if differs:
        err.print(f"{differs} topic(s) have a different partition count than wanted; nothing was changed")


@topics_app.command("list")
def topics_list() -> None:
    """The pipeline's topics and their partition counts."""
    from pipeline.admin import topic_partitions
    from pipeline.kafka_security import aiokafka_options

    settings = _settings()
    counts = asyncio.run(topic_partitions(_bootstrap(settings), client_options=aiokafka_options(settings)))
    _print_result(["topic", "partitions"], sorted(counts.items()), "table")


traces_app = typer.Typer(help="Look at stored traces: a span tree with its scores, or a filtered list.",
                         no_args_is_help=True)
app.add_typer(traces_app, name="traces")


@traces_app.command("show")
def traces_show(trace_id: Annotated[str, typer.Argument(help="The trace id.")],
                version: Annotated[int | None, typer.Option(help="A closed version (default: the latest).")] = None,
                ) -> None:
    """The trace's span tree: each span's agent, duration and status, and the scores attached to it."""
    from pipeline.storage.reader import Reader
    from pipeline.views.trace_tree import load_trace, render

    reader = Reader(_settings())
    try:
        try:
            loaded = load_trace(reader, trace_id, version)
        except ValueError as exc:
            raise EvalstreamError(str(exc)) from None
    finally:
        reader.close()
    if loaded is None:
        err.print(f"Trace {trace_id} is not in storage (not closed yet, or never received); "
                  f"`evalstream why {trace_id}` says more.")
        raise typer.Exit(1)
    info, roots = loaded
    cost = f" · ${info['cost_usd']:.4f}" if info.get("cost_usd") else ""
    title = (f"[bold]trace {escape(trace_id)}[/] v{info['version']} · {escape(str(info['project']))} · "
             f"{info['status']} ({info['close_reason']}) · {info['span_count']} spans · "
             f"{float(info['duration_ms']):.1f} ms{cost}")
    console.print(render(title, roots))


@traces_app.command("list")
def traces_list(
    failed_rule: Annotated[str | None, typer.Option("--failed-rule", help="Only traces this rule failed.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only traces this agent took part in.")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    status: Annotated[str | None, typer.Option(help="complete or incomplete.")] = None,
    since: Annotated[str | None, typer.Option(help="Closed since: 30m, 24h, 7d or an ISO date.")] = None,
    until: Annotated[str | None, typer.Option(help="Closed before: a duration ago or an ISO date.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """Stored traces, newest first, with the rules that failed on them."""
    from pipeline.storage.reader import Reader
    from pipeline.views.trace_list import TraceFilter, parse_time

    if status is not None and status not in ("complete", "incomplete"):
        raise EvalstreamError("--status must be complete or incomplete")
    now = time.time()
    try:
        chosen = TraceFilter(failed_rule=failed_rule, agent=agent, project=project, status=status,
                             since=parse_time(since, now) if since else None,
                             until=parse_time(until, now) if until else None, limit=max(1, limit))
    except ValueError as exc:
        raise EvalstreamError(str(exc)) from None
    reader = Reader(_settings())
    try:
        result = reader.query(chosen.sql(reader.database))
    finally:
        reader.close()
    _print_result(result.columns, result.rows, format)


sessions_app = typer.Typer(help="Look at stored sessions (conversations): a transcript with its verdicts, or a "
                                "filtered list.", no_args_is_help=True)
app.add_typer(sessions_app, name="sessions")


@sessions_app.command("show")
def sessions_show(session_id: Annotated[str, typer.Argument(help="The session id.")],
                  version: Annotated[int | None, typer.Option(help="A version (default: the latest, an open "
                                                                   "snapshot while the session runs).")] = None,
                  ) -> None:
    """The conversation turn by turn, the verdicts judged after each turn, and the closing verdicts."""
    from pipeline.storage.reader import Reader
    from pipeline.views.session_view import load_session, render

    reader = Reader(_settings())
    try:
        view = load_session(reader, session_id, version)
    finally:
        reader.close()
    if view is None:
        which = f" v{version}" if version is not None else ""
        err.print(f"Session {escape(session_id)}{which} is not in storage (no turn of it closed yet, or never "
                  "received).")
        raise typer.Exit(1)
    console.print(render(view))


@sessions_app.command("list")
def sessions_list(
    failed_rule: Annotated[str | None, typer.Option("--rule-failed", "--failed-rule",
                                                    help="Only sessions this rule failed.")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    status: Annotated[str | None, typer.Option(help="open, complete or incomplete.")] = None,
    since: Annotated[str | None, typer.Option(help="Updated since: 30m, 24h, 7d or an ISO date.")] = None,
    until: Annotated[str | None, typer.Option(help="Updated before: a duration ago or an ISO date.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """Stored sessions (their latest version), newest first, with the rules that failed on them."""
    from pipeline.storage.reader import Reader
    from pipeline.views.session_view import STATUSES, SessionFilter
    from pipeline.views.trace_list import parse_time

    if format not in ("table", "csv", "json"):
        raise EvalstreamError("--format must be table, csv or json")
    if status is not None and status not in STATUSES:
        raise EvalstreamError(f"--status must be one of {', '.join(STATUSES)}")
    now = time.time()
    try:
        chosen = SessionFilter(failed_rule=failed_rule, project=project, status=status,
                               since=parse_time(since, now) if since else None,
                               until=parse_time(until, now) if until else None, limit=max(1, limit))
    except ValueError as exc:
        raise EvalstreamError(str(exc)) from None
    reader = Reader(_settings())
    try:
        result = reader.query(chosen.sql(reader.database))
    finally:
        reader.close()
    _print_result(result.columns, result.rows, format)


def _print_result(columns: list[str], rows: list[Any], format: str) -> None:
    if format not in ("table", "csv", "json"):
        raise EvalstreamError("--format must be table, csv or json")
    if format == "json":
        for row in rows:
            print(json.dumps(dict(zip(columns, row, strict=True)), default=str))
    elif format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        table = Table(*columns, show_lines=False)
        for row in rows:
            table.add_row(*(escape("" if v is None else str(v)) for v in row))
        console.print(table)
        err.print(f"{len(rows)} row(s)")


scorers_app = typer.Typer(help="Upload, list and test scorers that run in sandboxes.", no_args_is_help=True)
app.add_typer(scorers_app, name="scorers")


def _store_bootstrap(settings: Settings) -> str | None:
    from pipeline.runfile import read_run_file

    return settings.kafka_bootstrap or read_run_file(settings.run_file).get("kafka_bootstrap")


def _require_store_bootstrap(settings: Settings) -> str:
    bootstrap = _store_bootstrap(settings)
    if not bootstrap:
        raise EvalstreamError("no broker: set EVALSTREAM_KAFKA_BOOTSTRAP or start `evalstream up` first "
                              "(uploaded scorers are stored on the broker)")
    return bootstrap


def _use_stored_scorers(settings: Settings) -> None:
    """`rules check`: names of uploaded scorers are valid when the running broker has them."""
    from pipeline.scoring.store import latest_per_name, read_store
    from pipeline.scoring.uploaded import UploadedScorers, catalog_of
    from scorers.registry import use_uploaded_scorers

    bootstrap = _store_bootstrap(settings)
    if not bootstrap:
        return
    try:
        records = asyncio.run(read_store(bootstrap, max_bytes=settings.max_message_bytes, timeout_s=10))
    except EvalstreamError as exc:
        err.print(f"[yellow]Uploaded scorers not checked: {exc}[/]")
        return
    use_uploaded_scorers(UploadedScorers(catalog_of(latest_per_name(records)), settings, accept_unknown=False))


@scorers_app.command("upload")
def scorers_upload(
    module: Annotated[Path, typer.Argument(help="The scorer module (.py).")],
    requirements: Annotated[Path | None, typer.Argument(
        help="Its requirements file: one PEP 508 requirement per line.")] = None,
    name: Annotated[str | None, typer.Option(
        help="The name rules and async_evaluate use (else the scorer's own name, else the file's).")] = None,
    entry: Annotated[str | None, typer.Option(
        help="The Scorer class or @scorer function to run, when the module defines several.")] = None,
    network: Annotated[bool, typer.Option(
        "--network", help="The scorer needs the network (e.g. an LLM API); without it, its sandbox has none.")] = False,
) -> None:
    """Store a new version of a scorer; running workers use it for new jobs within seconds."""
    from pipeline.admin import ensure_topics_for
    from pipeline.scoring.store import publish
    from pipeline.scoring.uploads import build_upload

    settings = _settings()
    record = build_upload(module, requirements, name=name, entry=entry, network=network)
    bootstrap = _require_store_bootstrap(settings)

    async def run() -> None:
        await ensure_topics_for(settings, bootstrap)
        await publish(bootstrap, record, max_bytes=settings.max_message_bytes)

    asyncio.run(run())
    needs = (", ".join(record.requirements) or "no requirements") + ("; with network" if record.network else "")
    console.print(f"Uploaded [bold]{record.name}[/] version {record.version} ({record.kind} {record.entry} "
                  f"in {record.filename}; {needs}).")


@scorers_app.command("list")
def scorers_list(
    history: Annotated[bool, typer.Option(
        "--history", help="Every version still on the broker, not only the latest per name.")] = False,
    format: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
) -> None:
    """Show the uploaded scorers: name, version, upload time, requirements, network."""
    import datetime as dt

    from pipeline.scoring.store import latest_per_name, read_store

    if format not in ("table", "json"):
        raise EvalstreamError("--format must be table or json")
    settings = _settings()
    records = asyncio.run(read_store(_require_store_bootstrap(settings), max_bytes=settings.max_message_bytes))
    shown = records if history else latest_per_name(records)
    if format == "json":
        for r in shown:
            print(json.dumps(r.model_dump(mode="json", exclude={"source"})))
        return
    table = Table("name", "version", "uploaded at (UTC)", "entry", "requirements", "network", "uploaded by")
    for r in shown:
        at = dt.datetime.fromtimestamp(r.uploaded_at_ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(r.name, r.version, at, f"{r.filename}:{r.entry}", ", ".join(r.requirements) or "-",
                      "yes" if r.network else "no", r.uploaded_by)
    console.print(table)
    err.print(f"{len(shown)} scorer version(s)")


@scorers_app.command("test")
def scorers_test(
    scorer: Annotated[str, typer.Argument(help="A scorer module (.py), or the name of an uploaded scorer.")],
    requirements: Annotated[Path | None, typer.Argument(help="The module's requirements file.")] = None,
    example: Annotated[str | None, typer.Option(
        help='An example as JSON: \'{"inputs": ..., "outputs": ...}\'.')] = None,
    trace: Annotated[Path | None, typer.Option(help="A trace as JSON (one of the `traces` of an evalstream.traces.v2 message).")] = None,
    params: Annotated[str | None, typer.Option(help="The scorer's params as a JSON object.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Pass / fail threshold, as a rule's.")] = None,
    entry: Annotated[str | None, typer.Option(help="The scorer in the module, when it defines several.")] = None,
    network: Annotated[bool, typer.Option("--network", help="Give the module's sandbox the network, as "
                                          "`scorers upload --network` would.")] = False,
) -> None:
    """Run a scorer once, in a sandbox exactly as a worker would, and print its score."""
    from pipeline.contracts import Example, Trace
    from pipeline.errors import ScorerError
    from pipeline.scoring.sandbox.limits import SandboxLimits
    from pipeline.scoring.sandbox.pool import SandboxPool
    from pipeline.scoring.sandbox.scorer import sandboxed_scorer_class
    from pipeline.scoring.store import latest_per_name, read_store
    from pipeline.scoring.uploaded import FixedUpload
    from pipeline.scoring.uploads import build_upload

    if (example is None) == (trace is None):
        raise EvalstreamError("give the scorer one target: --example JSON or --trace FILE")
    logging.getLogger("pipeline.scoring.sandbox").setLevel(logging.INFO)  # what the scorer prints, and its sandbox
    try:
        target = (Example.model_validate(json.loads(example)) if example is not None
                  else Trace.model_validate_json(trace.read_bytes()))  # type: ignore[union-attr]
        kwargs = json.loads(params) if params else {}
    except (ValueError, OSError) as exc:
        raise EvalstreamError(f"cannot read the target or --params: {exc}") from None
    if not isinstance(kwargs, dict):
        raise EvalstreamError("--params must be a JSON object")
    settings = _settings()
    if scorer.endswith(".py") or Path(scorer).is_file():
        record = build_upload(Path(scorer), requirements, entry=entry, network=network)
    else:
        stored = {r.name: r for r in latest_per_name(asyncio.run(read_store(
            _require_store_bootstrap(settings), max_bytes=settings.max_message_bytes)))}
        if scorer not in stored:
            raise EvalstreamError(f"no uploaded scorer named {scorer!r} (uploaded: {', '.join(stored) or 'none'})")
        record = stored[scorer]

    async def run() -> dict[str, Any]:
        pool = SandboxPool(settings.data_dir / "sandbox", SandboxLimits.from_settings(settings))
        try:
            instance = sandboxed_scorer_class(record.name, FixedUpload(record, pool))(**kwargs)
            score = await instance.run(target)
            passed, used_threshold = instance.decide(score, threshold)
        finally:
            await pool.close()
        return {"scorer": record.name, "version": record.version, "passed": passed, "threshold": used_threshold,
                **score.model_dump(mode="json", exclude={"passed"})}

    try:
        result = asyncio.run(run())
    except ScorerError as exc:
        err.print(f"[red]{type(exc).__name__}:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    console.print_json(data=result)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except EvalstreamError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(2)


if __name__ == "__main__":
    main()
