"""Numbered, idempotent schema migrations (`migrations/NNN_name.sql`), recorded in `schema_migrations`."""

from __future__ import annotations

import logging
import re
from importlib import resources
from typing import Any

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def available() -> list[tuple[int, str, str]]:
    files = resources.files("pipeline.storage").joinpath("migrations")
    found = []
    for entry in files.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found)


def statements(sql: str, database: str, ttl_days: int) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    body = body.replace("{db}", database).replace("{ttl_days}", str(int(ttl_days)))
    return [s.strip() for s in body.split(";") if s.strip()]


def migrate(client: Any, database: str, ttl_days: int) -> list[str]:
    """Apply the migrations not yet applied; returns their file names."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3) DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query(f"SELECT version FROM {database}.schema_migrations").result_rows}
    applied = []
    for version, name, sql in available():
        if version in done:
            continue
        for statement in statements(sql, database, ttl_days):
            client.command(statement)
        client.insert(f"{database}.schema_migrations", [[version, name]], column_names=["version", "name"])
        log.info("applied migration %s", name)
        applied.append(name)
    return applied
