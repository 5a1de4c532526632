"""One client API for a ClickHouse server (`http(s)://`) and embedded chDB (`chdb://path`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from pipeline.settings import Settings


def is_embedded(dsn: str) -> bool:
    return dsn.startswith("chdb:")


def embedded_dsn(path: Path) -> str:
    return f"chdb://{path.resolve()}"


def dsn_of(settings: Settings) -> str:
    """The ClickHouse DSN: the configured one, else embedded chDB under the data dir."""
    return settings.clickhouse_dsn or embedded_dsn(settings.data_dir / "clickhouse")


def connect(dsn: str, database: str | None = None) -> Any:
    """A clickhouse-connect client. chDB allows one opener per path; callers keep one per process."""
    import clickhouse_connect

    if not (dsn.startswith(("http://", "https://", "chdb:"))):
        raise ConfigError(f"EVALSTREAM_CLICKHOUSE_DSN must start with http://, https:// or chdb:// (got {dsn!r})")
    if is_embedded(dsn):
        Path(dsn.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
    try:
        return clickhouse_connect.get_client(dsn=dsn, **({"database": database} if database else {}))
    except Exception as exc:
        raise StorageError(f"cannot open ClickHouse at {_redact(dsn)}: {exc}") from exc


def _redact(dsn: str) -> str:
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return dsn
