"""The processes of a running stack, as `evalstream status` finds them: run.json names each worker's /metrics
endpoint (by pid), the sink's query endpoint and the embedded broker; each worker's `evalstream_worker_info`
gauge says its roles and whether it runs the sink. Nothing here raises: what does not answer says so."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["fetch_health", "open_trace_views", "parse_worker_info", "worker_processes"]

TIMEOUT_S = 3.0


def parse_worker_info(exposition: str) -> dict[str, Any] | None:
    """The labels of `evalstream_worker_info` in a /metrics text: worker (host:pid), roles, sink."""
    for family in text_string_to_metric_families(exposition):
        if family.name == "evalstream_worker_info":
            for sample in family.samples:
                roles = sample.labels.get("roles", "")
                return {"worker": sample.labels.get("worker", ""),
                        "roles": [] if roles in ("", "none") else roles.split(","),
                        "sink": sample.labels.get("sink") == "true"}
    return None


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return response.read()


def worker_processes(run: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per worker in run.json's `metrics_urls`: pid, metrics URL, and its worker info, or `error`."""
    out = []
    for pid, url in sorted((run.get("metrics_urls") or {}).items(), key=lambda item: str(item[0])):
        entry: dict[str, Any] = {"pid": int(pid) if str(pid).isdigit() else pid, "metrics_url": url}
        try:
            info = parse_worker_info(_get(url).decode(errors="replace"))
            entry.update(info or {"error": "no evalstream_worker_info in its /metrics"})
        except (urllib.error.URLError, OSError, ValueError) as exc:
            entry["error"] = f"not answering ({getattr(exc, 'reason', exc)}): gone, or still starting"
        entry["sink"] = entry.get("sink", False) or run.get("worker_pid") == entry["pid"]
        out.append(entry)
    return out


def fetch_health(query_url: str | None) -> dict[str, Any] | None:
    """The sink's /health (pid, uptime, counters), or {"error": ...} when it does not answer; None without one."""
    if not query_url:
        return None
    try:
        return json.loads(_get(f"{query_url}/health"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"error": f"the sink's endpoint {query_url} is not answering ({getattr(exc, 'reason', exc)})"}


def open_trace_views(run: dict[str, Any], trace_id: str) -> tuple[list[dict[str, Any]], list[str], int]:
    """Ask each worker in run.json what its assembler holds of a trace (`GET /traces/open/<id>` beside its
    /metrics): the views of those that hold it, a note per worker that did not answer, and how many answered."""
    views: list[dict[str, Any]] = []
    unanswered: list[str] = []
    answered = 0
    for pid, url in sorted((run.get("metrics_urls") or {}).items(), key=lambda item: str(item[0])):
        base = str(url).removesuffix("/metrics")
        try:
            view = json.loads(_get(f"{base}/traces/open/{urllib.parse.quote(trace_id, safe='')}"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # it holds nothing of this trace
                answered += 1
            else:
                unanswered.append(f"worker {pid}: HTTP {exc.code}")
            continue
        except (urllib.error.URLError, OSError, ValueError) as exc:
            unanswered.append(f"worker {pid}: not answering ({getattr(exc, 'reason', exc)}): gone, or still starting")
            continue
        if isinstance(view, dict) and "version" in view and "open" in view:
            answered += 1
            views.append(view)
        else:
            unanswered.append(f"worker {pid}: an answer that is not a trace view")
    return views, unanswered, answered
