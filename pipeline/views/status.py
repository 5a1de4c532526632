"""`evalstream status` for people: the processes and their roles, the embedded broker's memory, lag per consumer
group, rates in and out, dead letters, and rule health. `--format json` prints the same, whole, for machines."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from pipeline.rules.health import RuleHealth
from pipeline.views.rule_health import print_rule_health
from pipeline.views.tables import print_table

__all__ = ["print_status"]


def _broker_line(broker: dict[str, Any]) -> str:
    if not broker.get("running"):
        return f"Embedded broker: not running (pid {broker.get('pid')} is gone)"
    parts = [f"Embedded broker (Tansu): pid {broker.get('pid')}, {broker.get('rss_mb')} MB in memory"]
    if broker.get("growth_mb_per_h") is not None:
        parts.append(f"growing {broker['growth_mb_per_h']} MB/h")
    if broker.get("hours_left") is not None:
        parts.append(f"the machine's memory lasts ~{broker['hours_left']} h at that")
    if broker.get("warn_at_mb") is not None:
        parts.append(f"warns at {broker['warn_at_mb']} MB")
    return ", ".join(parts)


def _section(console: Console, title: str) -> None:
    console.print()
    console.print(Text(title, style="bold"))


def print_status(console: Console, status: dict[str, Any], health: list[RuleHealth], now: float) -> None:
    run = status.get("run") or {}
    console.print(Text("Processes", style="bold"))
    processes = status.get("processes") or []
    if processes:
        rows = [[str(p["pid"]), p.get("worker", ""), ", ".join(p.get("roles", [])) or "-",
                 "yes" if p.get("sink") else "no", p.get("error") or p.get("metrics_url", "")] for p in processes]
        print_table(console, ["pid", "worker", "roles", "sink", "metrics"], rows, fold=["roles", "metrics"])
    else:
        console.print("No worker has registered a /metrics endpoint in run.json.", highlight=False)
    sink = status.get("health")
    if sink:
        if "error" in sink:
            console.print(Text(f"Sink: {sink['error']}", style="yellow"))
        else:
            console.print(f"Sink: pid {sink.get('pid')}, up {sink.get('uptime_s')} s, query endpoint "
                          f"{run.get('query_url')}", highlight=False)
    if run.get("kafka_bootstrap"):
        console.print(f"Broker: {run['kafka_bootstrap']}", highlight=False)
    if status.get("embedded_broker"):
        console.print(_broker_line(status["embedded_broker"]), highlight=False)

    storage = status.get("storage") or {}
    if not storage.get("reachable"):
        _section(console, "ClickHouse")
        error = (str(storage.get("error")).strip().splitlines() or ["unknown error"])[0].rstrip(".")
        console.print(Text(f"not reachable ({error}). Lag, rates, dead letters and rule health are read from it; "
                           "the rest above stands.", style="yellow"))
        return
    _section(console, f"Lag (newest sample of each partition, last {storage.get('lag_fresh_s', 300) / 60:.0f} min)")
    lag = storage.get("lag") or []
    if lag:
        rows = [[g["consumer_group"], str(g["lag_records"]), f"{g['lag_seconds']:g}", str(g["partitions"]),
                 g.get("worst_topic") or "-"] for g in lag]
        print_table(console, ["consumer group", "records", "seconds", "partitions", "most behind"], rows,
                    fold=["consumer group", "most behind"])
    else:
        console.print("No lag samples (workers publish them every EVALSTREAM_METRICS_INTERVAL_S).")
    rates = storage.get("rates") or {}
    console.print(f"Rates (last {rates.get('window_s', 60):g} s): in {rates.get('spans_per_s', 0):g} spans/s, "
                  f"{rates.get('traces_per_s', 0):g} traces/s; out {rates.get('scores_per_s', 0):g} scores/s",
                  highlight=False)
    dead = storage.get("dead_letters") or {}
    by_stage = ", ".join(f"{stage} {n}" for stage, n in (dead.get("by_stage") or {}).items())
    line = f"Dead letters (last hour): {dead.get('total', 0)}" + (f" ({by_stage})" if by_stage else "")
    console.print(Text(line, style="yellow" if dead.get("total") else ""))
    _section(console, f"Rules (last {status.get('rules_since', '1h')})")
    if status.get("rules_error"):
        console.print(Text(f"rules file not read: {status['rules_error']}", style="yellow"))
    print_rule_health(console, health, now)
