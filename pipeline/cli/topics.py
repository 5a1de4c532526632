"""`evalstream topics init | list`."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.common import app, attach, bootstrap_of, console, err, print_result, settings_from_env

topics_app = typer.Typer(help="Create and inspect the pipeline's Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")


@topics_app.command("init")
def topics_init(
    partitions: Annotated[int | None, typer.Option(
        help="Partitions per topic (default EVALSTREAM_TOPIC_PARTITIONS, else the running `evalstream up`'s).")
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

    settings = settings_from_env(topic_partitions=partitions, topic_replication_factor=replication_factor,
                         topic_retention_hours=retention_hours)
    if "topic_partitions" in settings.model_fields_set:  # --partitions or EVALSTREAM_TOPIC_PARTITIONS
        bootstrap = bootstrap_of(settings)
    else:  # the running `evalstream up`'s count when its broker is found in run.json
        settings, bootstrap = attach(settings)
    options = aiokafka_options(settings)

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

    settings = settings_from_env()
    counts = asyncio.run(topic_partitions(bootstrap_of(settings), client_options=aiokafka_options(settings)))
    print_result(["topic", "partitions"], sorted(counts.items()), "table")
