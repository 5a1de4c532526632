"""`evalstream scorers upload | list | test`: scorers that run in sandboxes."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.common import app, console, err, settings_from_env
from pipeline.errors import EvalstreamError
from pipeline.kafka_security import aiokafka_options
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.scoring.uploaded import UploadedScorers

scorers_app = typer.Typer(help="Upload, list and test scorers that run in sandboxes.", no_args_is_help=True)
app.add_typer(scorers_app, name="scorers")


def store_bootstrap(settings: Settings) -> str | None:
    from pipeline.runfile import read_run_file

    return settings.kafka_bootstrap or read_run_file(settings.run_file).get("kafka_bootstrap")


def require_store_bootstrap(settings: Settings) -> str:
    bootstrap = store_bootstrap(settings)
    if not bootstrap:
        raise EvalstreamError("no broker: set EVALSTREAM_KAFKA_BOOTSTRAP or start `evalstream up` first "
                              "(uploaded scorers are stored on the broker)")
    return bootstrap


def stored_scorers(settings: Settings) -> UploadedScorers | None:
    """`rules check`: names of uploaded scorers are valid when the running broker has them (None: no broker)."""
    from pipeline.scoring.store import latest_per_name, read_store
    from pipeline.scoring.uploaded import UploadedScorers, catalog_of

    bootstrap = store_bootstrap(settings)
    if not bootstrap:
        return None
    try:
        records = asyncio.run(read_store(bootstrap, max_bytes=settings.max_message_bytes, timeout_s=10,
                                         client_options=aiokafka_options(settings)))
    except EvalstreamError as exc:
        err.print(f"[yellow]Uploaded scorers not checked: {exc}[/]")
        return None
    return UploadedScorers(catalog_of(latest_per_name(records)), settings, accept_unknown=False)


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
    from pipeline.embedded import attached_settings
    from pipeline.runfile import read_run_file
    from pipeline.scoring.store import publish
    from pipeline.scoring.uploads import build_upload

    settings = settings_from_env()
    record = build_upload(module, requirements, name=name, entry=entry, network=network)
    bootstrap = require_store_bootstrap(settings)
    settings = attached_settings(settings, read_run_file(settings.run_file))  # topics it creates: `up`'s partitions

    async def run() -> None:
        await ensure_topics_for(settings, bootstrap)
        await publish(bootstrap, record, max_bytes=settings.max_message_bytes, client_options=aiokafka_options(settings))

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
    settings = settings_from_env()
    records = asyncio.run(read_store(require_store_bootstrap(settings), max_bytes=settings.max_message_bytes,
                                     client_options=aiokafka_options(settings)))
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
    span: Annotated[str | None, typer.Option(help="A span id of --trace: score that span, as a `subject: span` "
                                             "rule would.")] = None,
    params: Annotated[str | None, typer.Option(help="The scorer's params as a JSON object.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Pass / fail threshold, as a rule's.")] = None,
    entry: Annotated[str | None, typer.Option(help="The scorer in the module, when it defines several.")] = None,
    network: Annotated[bool, typer.Option("--network", help="Give the module's sandbox the network, as "
                                          "`scorers upload --network` would.")] = False,
) -> None:
    """Run a scorer once, in a sandbox exactly as a worker would, and print its score."""
    from pipeline.contracts import Example, SpanSubject, Trace
    from pipeline.errors import ScorerError
    from pipeline.scoring.sandbox.limits import SandboxLimits
    from pipeline.scoring.sandbox.pool import SandboxPool
    from pipeline.scoring.sandbox.scorer import sandboxed_scorer_class
    from pipeline.scoring.store import latest_per_name, read_store
    from pipeline.scoring.uploaded import FixedUpload
    from pipeline.scoring.uploads import build_upload

    if (example is None) == (trace is None):
        raise EvalstreamError("give the scorer one target: --example JSON or --trace FILE")
    if span is not None and trace is None:
        raise EvalstreamError("--span needs the --trace it belongs to")
    logging.getLogger("pipeline.scoring.sandbox").setLevel(logging.INFO)  # what the scorer prints, and its sandbox
    try:
        target: Example | Trace | SpanSubject = (
            Example.model_validate(json.loads(example)) if example is not None
            else Trace.model_validate_json(trace.read_bytes()))  # type: ignore[union-attr]
        kwargs = json.loads(params) if params else {}
    except (ValueError, OSError) as exc:
        raise EvalstreamError(f"cannot read the target or --params: {exc}") from None
    if span is not None:
        assert isinstance(target, Trace)
        try:
            target = SpanSubject.of(target, span)
        except KeyError:
            spans = ", ".join(f"{s.span_id} ({s.name})" for s in target.spans[:20])
            raise EvalstreamError(f"span {span!r} is not in trace {target.trace_id}; its spans: {spans}") from None
    if not isinstance(kwargs, dict):
        raise EvalstreamError("--params must be a JSON object")
    settings = settings_from_env()
    if scorer.endswith(".py") or Path(scorer).is_file():
        record = build_upload(Path(scorer), requirements, entry=entry, network=network)
    else:
        stored = {r.name: r for r in latest_per_name(asyncio.run(read_store(
            require_store_bootstrap(settings), max_bytes=settings.max_message_bytes,
            client_options=aiokafka_options(settings))))}
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
