"""`evalstream demo`: start the embedded stack, drive the demo app, print what the pipeline found."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.errors import EvalstreamError
from pipeline.runfile import read_run_file
from pipeline.settings import Settings

DEMO_ENV = {
    "EVALSTREAM_IDLE_TIMEOUT_S": "8",  # so the demo's never-ending root closes as incomplete quickly
    "EVALSTREAM_JUDGE_MODEL": "openai/demo-judge",
    "EVALSTREAM_JUDGE_API_KEY": "demo",
    "EVALSTREAM_SANDBOX_ENV_ALLOW": "EVALSTREAM_JUDGE_*",  # uploaded judges see these, and no other secret
    "EVALSTREAM_ALERT_GRACE_S": "1",  # close the demo's 5 s alert windows soon after they end
}
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "package_inquiry"


def _upload_example_judge(bootstrap: str, console: Console) -> None:
    """Upload the package-inquiry judge the way a user would: through the CLI."""
    if not (EXAMPLE / "package_inquiry.py").exists():
        raise EvalstreamError(f"{EXAMPLE} is missing: run the demo from a checkout of the repository")
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "scorers", "upload",
                          str(EXAMPLE / "package_inquiry.py"), str(EXAMPLE / "requirements.txt"),
                          "--network"],  # it calls the demo's LLM server; without it, its sandbox has no network
                         env={**os.environ, "EVALSTREAM_KAFKA_BOOTSTRAP": bootstrap}, capture_output=True, text=True,
                         timeout=120, check=False)
    if out.returncode != 0:
        raise EvalstreamError(f"uploading the example judge failed:\n{out.stdout}{out.stderr}")
    console.print("    " + (out.stdout.strip().splitlines() or ["uploaded"])[-1])


def _start_stack(settings: Settings, rules: Path, log_path: Path, llm_base: str) -> subprocess.Popen:
    if read_run_file(settings.run_file).get("query_url"):
        url = read_run_file(settings.run_file)["query_url"]
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            raise EvalstreamError(f"a pipeline is already running on {settings.data_dir}; stop it first")
        except OSError:
            pass
    settings.run_file.unlink(missing_ok=True)
    env = {**os.environ, **DEMO_ENV, "EVALSTREAM_JUDGE_API_BASE": llm_base}
    log = open(log_path, "ab")  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "up", "--rules", str(rules)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait_ready(settings: Settings, process: subprocess.Popen, log_path: Path, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EvalstreamError(f"the pipeline exited early (code {process.returncode}); see {log_path}")
        run = read_run_file(settings.run_file)
        if run.get("query_url") and run.get("kafka_bootstrap"):
            return run
        time.sleep(0.2)
    raise EvalstreamError(f"the pipeline was not ready within {timeout_s:g}s; see {log_path}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_demo(settings: Settings, *, traces: int, keep_running: bool, console: Console) -> None:
    import asyncio

    from aiokafka import AIOKafkaProducer

    from pipeline import topics
    from pipeline.demo.agents import run as run_agents
    from pipeline.demo.fake_llm import FakeLLM
    from pipeline.sdk import Tracer
    from pipeline.storage.reader import Reader

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_dir / "demo-pipeline.log"
    rules = Path(str(resources.files("pipeline.demo").joinpath("rules.yaml")))
    started = time.time()
    console.print(f"[bold]1/5[/] Starting the embedded stack (Tansu + chDB in {settings.data_dir}) — log: {log_path}")
    llm = FakeLLM().__enter__()
    console.print(f"    a stand-in LLM endpoint for the judges at {llm.api_base} (no provider is reachable here)")
    process = _start_stack(settings, rules, log_path, llm.api_base)
    try:
        run = _wait_ready(settings, process, log_path)
        console.print("    uploading the package-inquiry judge (examples/package_inquiry) to the running workers")
        _upload_example_judge(run["kafka_bootstrap"], console)
        console.print(f"[bold]2/5[/] Running the instrumented multi-agent app: {traces} requests")
        tracer = Tracer(project="demo", service="demo-app", bootstrap_servers=run["kafka_bootstrap"])
        kinds = run_agents(tracer, traces)
        tracer.flush()

        async def poison() -> None:  # one message that is not JSON: it must land in dead letters
            producer = AIOKafkaProducer(bootstrap_servers=run["kafka_bootstrap"])
            await producer.start()
            await producer.send_and_wait(topics.SPANS, b"\x00not json{", key=b"demo-poison")
            await producer.stop()

        asyncio.run(poison())
        console.print(f"    sent: {kinds} + 1 trace whose root never ends + 1 poison message; "
                      f"SDK dropped {tracer.dropped} span(s)")
        console.print("[bold]3/5[/] Waiting for traces to close, be scored and stored…")
        reader = Reader(settings)
        _wait_done(reader, started, traces + 1)
        console.print("[bold]4/5[/] Results")
        _report(reader, started, console)
        console.print("[bold]5/5[/] The app recovers: healthy requests until every open incident resolves")
        healthy = _recover(tracer, reader, started, first=traces)
        tracer.shutdown()
        console.print(f"    {healthy} healthy request(s) sent")
        _report_incidents(reader, started, console)
        reader.close()
        console.print(f"    the judges made {llm.calls} LLM call(s)")
    finally:
        if not keep_running:
            _stop(process)
            llm.__exit__(None, None, None)
    console.print(f"\nDone in {time.time() - started:.0f}s. The data stays in {settings.data_dir}; try:\n"
                  '  evalstream sql "SELECT rule, passed, count() FROM evalstream.scores_current GROUP BY ALL"\n'
                  "  evalstream why <trace_id>")


def _wait_done(reader, since: float, expected_traces: int, timeout_s: float = 120) -> None:
    db = reader.database
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        traces = reader.query(f"SELECT count() FROM {db}.traces_current WHERE closed_at >= toDateTime64({since}, 6)").rows[0][0]
        pending = reader.query(
            f"SELECT count() FROM {db}.decisions_current WHERE decided_at >= toDateTime64({since}, 6) AND outcome = 'queued'"
        ).rows[0][0]
        decided = reader.query(f"SELECT uniqExact(trace_id) FROM {db}.decisions_current "
                               f"WHERE decided_at >= toDateTime64({since}, 6)").rows[0][0]
        if traces >= expected_traces and decided >= expected_traces and not pending:  # every trace decided
            return
        time.sleep(0.5)
    raise EvalstreamError(f"timed out waiting for the pipeline: {traces}/{expected_traces} traces, {pending} pending")


def _open_incidents(reader, since: float) -> tuple[int, int]:
    """(incidents that fired, incidents not yet resolved) since the demo started."""
    row = reader.query(
        f"SELECT count(), countIf(resolved = 0) FROM (SELECT incident_id, countIf(kind = 'resolved') AS resolved "
        f"FROM {reader.database}.alerts FINAL WHERE fired_at >= toDateTime64({since}, 6) AND kind != 'test' "
        f"GROUP BY incident_id)").rows[0]
    return int(row[0]), int(row[1])


def _recover(tracer, reader, since: float, *, first: int, timeout_s: float = 90) -> int:
    """Send healthy traffic (5 requests a second) until every incident has resolved."""
    from pipeline.demo.agents import run_healthy

    sent = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run_healthy(tracer, 5, first + sent)
        sent += 5
        tracer.flush()
        fired, still_open = _open_incidents(reader, since)
        if (fired and not still_open) or (not fired and time.monotonic() > deadline - timeout_s + 20):
            return sent
        time.sleep(1)
    raise EvalstreamError(f"incidents still open after {timeout_s:g}s of healthy traffic: see evalstream alerts history")


def _report_incidents(reader, since: float, console: Console) -> None:
    rows = reader.query(
        f"SELECT incident_id, any(alert_rule), if(has(groupArray(level), 'critical'), 'critical', 'warning'), minIf(fired_at, kind = 'firing'), "
        f"maxIf(fired_at, kind = 'resolved'), countIf(kind = 'digest'), sum(suppressed), "
        f"argMaxIf(failures, fired_at, kind = 'resolved'), argMinIf(title, fired_at, kind = 'firing') "
        f"FROM {reader.database}.alerts FINAL WHERE fired_at >= toDateTime64({since}, 6) AND kind != 'test' "
        f"GROUP BY incident_id ORDER BY 4").rows
    table = Table("alert", "level", "fired", "resolved", "digests", "failures",
                  title="Incidents: each fired once, sent what its cooldown held back, and resolved once",
                  title_justify="left")
    table.columns[0].no_wrap = True
    for _, alert, level, fired, resolved, digests, _suppressed, failures, _title in rows:
        table.add_row(alert, level, str(fired)[11:19], str(resolved)[11:19], str(digests), str(failures))
    console.print(table)
    console.print("    every message: evalstream alerts history; by incident: evalstream alerts history --incident <id>")


def _report(reader, since: float, console: Console) -> None:
    db = reader.database
    counts = reader.query(
        f"SELECT rule, count() AS traces_seen, countIf(outcome = 'filtered_out') AS filtered_out, "
        f"countIf(outcome = 'sampled_out') AS sampled_out, countIf(outcome IN ('scored', 'failed')) AS scored, "
        f"countIf(outcome = 'failed') AS scorer_errors FROM {db}.decisions_current "
        f"WHERE decided_at >= toDateTime64({since}, 6) GROUP BY rule ORDER BY rule"
    )
    failed = dict(reader.query(
        f"SELECT rule, countIf(passed = false) FROM {db}.scores_current WHERE scored_at >= toDateTime64({since}, 6) GROUP BY rule"
    ).rows)
    table = Table("rule", "seen", "filtered", "sampled out", "scored", "failed", "errors",
                  title="Per-rule counts (failed = score did not pass; errors = scorer raised)",
                  title_justify="left")
    table.columns[0].no_wrap = True
    for rule, seen, filtered, sampled, scored, errors in counts.rows:
        table.add_row(rule, str(seen), str(filtered), str(sampled), str(scored), str(failed.get(rule, 0)),
                      str(errors))
    console.print(table)
    statuses = reader.query(
        f"SELECT status, count() FROM {db}.traces_current WHERE closed_at >= toDateTime64({since}, 6) GROUP BY status ORDER BY status"
    ).rows
    console.print("Traces: " + ", ".join(f"{n} {s}" for s, n in statuses))
    alerts = reader.query(
        f"SELECT fired_at, title, delivery_status FROM {db}.alerts FINAL WHERE fired_at >= toDateTime64({since}, 6) ORDER BY fired_at"
    ).rows
    console.print(f"Alert messages so far: {len(alerts)} (printed on the pipeline's console: no Slack configured)")
    for fired_at, title, status in alerts[:10]:
        console.print(f"  {str(fired_at)[11:19]}  {escape(title)}  ({status})")
    if len(alerts) > 10:
        console.print(f"  … and {len(alerts) - 10} more (evalstream alerts history)")
    dead = reader.query(
        f"SELECT stage, error_type, reason FROM {db}.dead_letters FINAL WHERE at >= toDateTime64({since}, 6) ORDER BY at"
    ).rows
    console.print(f"Dead letters: {len(dead)}")
    for stage, error_type, reason in dead[:5]:
        console.print(f"  {stage}: {error_type}: {reason[:100]}")
    failing = reader.query(
        f"SELECT trace_id FROM {db}.scores_current WHERE scored_at >= toDateTime64({since}, 6) AND passed = false "
        f"ORDER BY scored_at LIMIT 1"
    ).rows
    if failing:
        console.print(f"A failing trace to explore: evalstream why {failing[0][0]}")
    _report_sessions(reader, since, console)


def _report_sessions(reader, since: float, console: Console, timeout_s: float = 30) -> None:
    """Conversations: the closing verdicts, and the ones flagged while they were still going."""
    db = reader.database
    deadline = time.monotonic() + timeout_s
    while True:  # the last conversation's verdict comes a moment after its last turn's trace closes
        closed, judged = reader.query(
            f"SELECT countIf(status != 'open'), (SELECT count() FROM {db}.session_scores_current "
            f"WHERE scored_at >= toDateTime64({since}, 6)) FROM {db}.sessions_current "
            f"WHERE updated_at >= toDateTime64({since}, 6)").rows[0]
        if (closed and judged >= closed) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    failed = reader.query(
        f"SELECT count() FROM {db}.session_scores_current WHERE scored_at >= toDateTime64({since}, 6) "
        f"AND passed = false").rows[0][0]
    console.print(f"Conversations: {closed} closed, {judged} judged at their close, {failed} failed")
    flagged = reader.query(
        f"SELECT session_id, min(turn) FROM {db}.session_scores FINAL WHERE scored_at >= toDateTime64({since}, 6) "
        f"AND NOT final AND passed = false GROUP BY session_id ORDER BY session_id").rows
    for session_id, turn in flagged[:5]:
        console.print(f"  {escape(session_id)}: flagged after turn {turn}, while it was still going")
    if flagged:
        console.print(f"  the transcript with its verdicts: evalstream sessions show {flagged[0][0]}")
