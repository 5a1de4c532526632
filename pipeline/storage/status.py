"""What `evalstream status` reads from ClickHouse: consumer lag per group (the newest sample of each partition,
summed), rows stored per second over the last minute, and dead letters over the last hour."""

from __future__ import annotations

from typing import Any

from pipeline.storage.reader import Reader

__all__ = ["DEAD_LETTER_WINDOW_S", "LAG_FRESH_S", "RATE_WINDOW_S", "lag_sql", "rates_sql", "read_storage_status"]

LAG_FRESH_S = 300.0  # a partition's newest lag sample counts when it is younger than this (workers sample every 10 s)
RATE_WINDOW_S = 60.0
DEAD_LETTER_WINDOW_S = 3600.0


def _at(epoch_s: float) -> str:
    return f"toDateTime64({float(epoch_s):.6f}, 6)"


def lag_sql(db: str, now: float) -> str:
    latest = ("SELECT consumer_group, topic, partition, argMax(lag_records, at) AS rec, argMax(lag_seconds, at) AS secs, "
              f"max(at) AS last_at FROM {db}.consumer_lag WHERE at >= {_at(now - LAG_FRESH_S)} "
              "GROUP BY consumer_group, topic, partition")
    return ("SELECT consumer_group, sum(rec) AS lag_records, max(secs) AS lag_seconds, count() AS partitions, "
            "if(max(rec) > 0, argMax(topic, rec), '') AS worst_topic, "
            "toUnixTimestamp64Micro(max(last_at)) / 1e6 AS reported_at "
            f"FROM ({latest}) GROUP BY consumer_group ORDER BY consumer_group")


def rates_sql(db: str, now: float) -> str:
    since = _at(now - RATE_WINDOW_S)

    def count(table: str) -> str:
        return f"(SELECT count() FROM {db}.{table} WHERE ingested_at >= {since})"

    return (f"SELECT {count('spans')} AS spans, {count('traces')} AS traces, "
            f"{count('scores')} + {count('session_scores')} AS scores")


def dead_letters_sql(db: str, now: float) -> str:
    return (f"SELECT stage, count() AS n FROM {db}.dead_letters WHERE ingested_at >= {_at(now - DEAD_LETTER_WINDOW_S)} "
            "GROUP BY stage ORDER BY n DESC, stage")


def read_storage_status(reader: Reader, now: float) -> dict[str, Any]:
    """Lag per consumer group, rates per second and dead letters by stage (StorageError if storage does not answer)."""
    db = reader.database
    lag = reader.query(lag_sql(db, now))
    groups = [dict(zip(lag.columns, row, strict=True)) for row in lag.rows]
    for group in groups:
        group["lag_records"] = int(group["lag_records"])
        group["lag_seconds"] = round(float(group["lag_seconds"]), 2)
        group["partitions"] = int(group["partitions"])
        group["reported_at"] = float(group["reported_at"])
    rates_row = reader.query(rates_sql(db, now))
    counts = dict(zip(rates_row.columns, rates_row.rows[0], strict=True))
    rates = {f"{name}_per_s": round(int(n) / RATE_WINDOW_S, 2) for name, n in counts.items()}
    dead = {str(stage): int(n) for stage, n in reader.rows(dead_letters_sql(db, now))}
    return {"lag": groups, "rates": {"window_s": RATE_WINDOW_S, **rates},
            "dead_letters": {"window_s": DEAD_LETTER_WINDOW_S, "total": sum(dead.values()), "by_stage": dead}}
