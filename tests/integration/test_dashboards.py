"""deploy/grafana: the provisioning parses and points at real files, the dashboards are well-formed, and every
query of every dashboard (panels, variables, annotations) runs on chDB with the migrations applied, once its
macros and variables are substituted the way Grafana and the ClickHouse plugin do. The key panels return
the numbers the inserted rows say.

Grafana cannot run here, so the substitution is re-implemented for exactly what the dashboards use:
- the plugin's frontend: `$__conditionalAll(condition, $var)` is `1=1` when `var` is All or empty;
- Grafana's template variables: `${var}`, `$var` and `${var:singlequote}`;
- the plugin's backend macros (pkg/macros/macros.go of grafana/clickhouse-datasource): `$__timeFilter(col)`,
  `$__fromTime`, `$__toTime`, `$__timeInterval(col)` and `$__interval_s`.
Anything else, or any `$` left over, fails the test.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.storage.client import connect, embedded_dsn
from pipeline.storage.migrations import migrate
from pipeline.storage.rows import (
    ALERT_COLUMNS,
    DEAD_LETTER_COLUMNS,
    DECISION_COLUMNS,
    SCORE_COLUMNS,
    SPAN_COLUMNS,
    TRACE_COLUMNS,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DS = {"type": "grafana-clickhouse-datasource", "uid": "evalstream-clickhouse"}
DB = "evalstream"
ALL = "$__all"

# The schema another change adds in migration 005_worker_metrics.sql; created here while it is absent.
CONSUMER_LAG = f"""CREATE TABLE IF NOT EXISTS {DB}.consumer_lag (
    at DateTime64(6), worker String, consumer_group LowCardinality(String), topic LowCardinality(String),
    partition Int32, lag_records Int64, lag_seconds Float64, ingested_at DateTime64(6) DEFAULT now64(6)
) ENGINE = MergeTree ORDER BY (consumer_group, topic, partition, at)"""


# ----------------------------------------------------------------------------------------- substitution
@dataclass(frozen=True)
class Context:
    start_s: int
    end_s: int
    interval_s: int
    variables: dict[str, str | list[str]] = field(default_factory=dict)


def _args(sql: str, open_at: int) -> tuple[list[str], int]:
    """The comma-separated arguments of the call whose '(' is at `open_at`, and the index after ')'."""
    depth, args, start = 0, [], open_at + 1
    for i in range(open_at, len(sql)):
        char = sql[i]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i].strip())
                return args, i + 1
        elif char == "," and depth == 1:
            args.append(sql[start:i].strip())
            start = i + 1
    raise AssertionError(f"unbalanced parentheses in {sql[open_at:open_at + 80]!r}")


def conditional_all(sql: str, variables: dict[str, str | list[str]]) -> str:
    macro = "$__conditionalAll("
    while (at := sql.rfind(macro)) != -1:
        (condition, var), end = _args(sql, at + len(macro) - 1)
        value = variables[var.removeprefix("$")]
        selected = ",".join(value) if isinstance(value, list) else value
        sql = sql[:at] + ("1=1" if selected in ("", ALL) else condition) + sql[end:]
    return sql


def _format(name: str, fmt: str | None, variables: dict[str, str | list[str]]) -> str:
    value = variables[name]
    values = value if isinstance(value, list) else [value]
    assert ALL not in values, f"${name} is All outside $__conditionalAll: Grafana would expand every value"
    if fmt is None:
        return ",".join(values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    raise AssertionError(f"variable format {fmt!r} of ${name} is not implemented here")


def template_variables(sql: str, variables: dict[str, str | list[str]]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name.startswith("__"):  # a plugin macro, expanded by the backend
            return match.group(0)
        assert name in variables, f"${name} is not a variable of the dashboard"
        return _format(name, match.group(2), variables)

    return re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)", replace, sql)


def macros(sql: str, ctx: Context) -> str:
    interval = max(ctx.interval_s, 1)
    plain = {"fromTime": f"toDateTime({ctx.start_s})", "toTime": f"toDateTime({ctx.end_s})",
             "interval_s": str(interval)}
    out, pos = [], 0
    for match in re.finditer(r"\$__(\w+)", sql):
        if match.start() < pos:
            continue
        name = match.group(1)
        out.append(sql[pos:match.start()])
        if name in plain:
            out.append(plain[name])
            pos = match.end()
            continue
        assert sql[match.end():match.end() + 1] == "(", f"unknown macro $__{name}"
        (column,), pos = _args(sql, match.end())
        if name == "timeFilter":
            out.append(f"{column} >= toDateTime({ctx.start_s}) AND {column} <= toDateTime({ctx.end_s})")
        elif name == "timeInterval":
            out.append(f"toStartOfInterval(toDateTime({column}), INTERVAL {interval} second)")
        else:
            raise AssertionError(f"macro $__{name} is not implemented here")
    return "".join(out) + sql[pos:]


def render(sql: str, ctx: Context) -> str:
    rendered = macros(template_variables(conditional_all(sql, ctx.variables), ctx.variables), ctx)
    assert "$" not in rendered, f"unsubstituted: {rendered}"
    return rendered


def test_substitution_matches_the_plugin() -> None:
    ctx = Context(100, 200, 30, {"rule": ["a", "o'b"], "project": ALL, "database": "db", "t": ""})
    sql = ("SELECT $__timeInterval(m) AS time FROM ${database}.x WHERE $__timeFilter(m) AND "
           "$__conditionalAll(rule IN (${rule:singlequote}), $rule) AND $__conditionalAll(p IN ($project), $project) "
           "AND $__conditionalAll(f(a, b) = ${t:singlequote}, $t) AND h >= $__fromTime AND h <= $__toTime "
           "AND s = $__interval_s")
    assert render(sql, ctx) == (
        "SELECT toStartOfInterval(toDateTime(m), INTERVAL 30 second) AS time FROM db.x WHERE "
        "m >= toDateTime(100) AND m <= toDateTime(200) AND rule IN ('a','o\\'b') AND 1=1 AND 1=1 "
        "AND h >= toDateTime(100) AND h <= toDateTime(200) AND s = 30")
    with pytest.raises(AssertionError, match="unknown macro"):
        render("SELECT $__timeFilter_ms", ctx)
    with pytest.raises(AssertionError, match="not a variable"):
        render("SELECT ${nope}", ctx)


# ----------------------------------------------------------------------------------------- static checks
def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(kind, name, rawSql) of every ClickHouse query: panel targets, query variables, annotations."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield "panel", panel["title"], target["rawSql"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            yield "variable", var["name"], var["query"]["rawSql"]
    for annotation in dashboard["annotations"]["list"]:
        if not annotation.get("builtIn"):
            yield "annotation", annotation["name"], annotation["target"]["rawSql"]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def env_example() -> dict[str, str]:
    lines = (ROOT / "deploy" / "env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_compose_runs_grafana_with_the_provisioning_mounted() -> None:
    spec = compose()
    grafana = spec["services"]["grafana"]
    assert re.fullmatch(r"grafana/grafana-oss:\d+\.\d+\.\d+", grafana["image"])
    assert re.fullmatch(r"grafana-clickhouse-datasource \d+\.\d+\.\d+", grafana["environment"]["GF_INSTALL_PLUGINS"])
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert grafana["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert grafana["healthcheck"]["test"] and "grafana-data" in spec["volumes"]
    assert grafana["env_file"] == "deploy/.env" and env_example()["GF_SECURITY_ADMIN_PASSWORD"] == "CHANGEME"
    mounts = {v.split(":")[1]: v.split(":") for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == ["./deploy/grafana/provisioning", "/etc/grafana/provisioning", "ro"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    host_dir, _, _ = mounts[str(Path(home).parent)]
    assert (ROOT / host_dir / Path(home).name).is_file()


def test_provisioning_points_at_the_datasource_and_the_dashboard_files() -> None:
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text())[
        "datasources"]
    assert {"type": source["type"], "uid": source["uid"]} == DS
    assert source["jsonData"]["host"] in compose()["services"]
    assert (source["jsonData"]["port"], source["jsonData"]["protocol"]) == (8123, "http")
    env = env_example()
    for value in [source["jsonData"]["username"], source["jsonData"]["defaultDatabase"],
                  source["secureJsonData"]["password"]]:
        assert value.startswith("$") and value[1:] in env, f"{value} is not set in deploy/env.example"

    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "evalstream.yaml").read_text())[
        "providers"]
    assert provider["type"] == "file"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose()["services"]["grafana"]["volumes"]}
    host_dir = ROOT / mounts[provider["options"]["path"]]
    assert host_dir == GRAFANA / "dashboards"
    assert sorted(host_dir.glob("*.json")) == DASHBOARD_FILES and len(DASHBOARD_FILES) == 3


def test_dashboards_are_well_formed_and_use_the_provisioned_datasource() -> None:
    dashboards = [load(path) for path in DASHBOARD_FILES]
    uids = [d["uid"] for d in dashboards]
    assert len(set(uids)) == len(uids)
    variables_of = {d["uid"]: {v["name"] for v in d["templating"]["list"]} for d in dashboards}
    for dashboard in dashboards:
        panels = list(all_panels(dashboard))
        ids = [p["id"] for p in panels]
        assert len(set(ids)) == len(ids), f"{dashboard['uid']}: duplicate panel ids"
        for panel in panels:
            assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == DS, panel["title"]
            assert panel["targets"] and len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
            for target in panel["targets"]:
                assert target["datasource"] == DS and target["editorType"] == "sql" and target["rawSql"]
            for override in panel["fieldConfig"]["overrides"]:
                for prop in override["properties"]:
                    for link in prop["value"] if prop["id"] == "links" else []:
                        target_uid, var = re.fullmatch(r"/d/([\w-]+)/[\w-]+\?var-(\w+)=\$\{__value\.raw\}.*",
                                                       link["url"]).groups()
                        assert var in variables_of[target_uid], link["url"]
        for var in dashboard["templating"]["list"]:
            if var["type"] == "query":
                assert var["datasource"] == DS
        for annotation in dashboard["annotations"]["list"]:
            if not annotation.get("builtIn"):
                assert annotation["datasource"] == DS
    titles = {d["uid"]: {p["title"] for p in all_panels(d)} for d in dashboards}
    assert {"Pass rate per rule", "Failures by agent and model", "Span latency by name", "Judge tokens and cost",
            "Incidents"} <= titles["evalstream-overview"]
    assert {"Dead letters by stage", "Consumer lag per partition (latest)"} <= titles["evalstream-pipeline"]
    assert {"Spans and their scores", "Recent failing traces"} <= titles["evalstream-trace"]


# ----------------------------------------------------------------------------------------- data
H0 = (int(time.time()) // 3600 - 2) * 3600  # the start of the hour two hours ago: recent, inside every TTL
JUDGE = {"judge": {"model": "gpt-4o-mini", "input_tokens": 120, "output_tokens": 30, "cost_usd": 0.0004}}


def us(minute: float) -> int:
    return int((H0 + minute * 60) * 1_000_000)


def insert(client: Any, table: str, columns: list[str], rows: list[dict[str, Any]], defaults: dict[str, Any]) -> None:
    values = [[{**defaults, **row}[c] for c in columns] for row in rows]
    client.insert(f"{DB}.{table}", values, column_names=columns)


TRACE_DEFAULTS = {"version": 1, "project": "shop", "status": "complete", "close_reason": "quiet", "root_span_id": "",
                  "name": "handle", "end_time": us(1), "duration_ms": 100.0, "span_count": 3, "error_count": 0,
                  "agents": ["planner"], "total_tokens": 0, "cost_usd": 0.0, "closed_at": us(2), "waited_for": "",
                  "reopened_by": "", "late_by_s": None}
SPAN_DEFAULTS = {"trace_version": 1, "parent_span_id": "", "project": "shop", "service": "api", "span_type": "function",
                 "status": "ok", "error_type": "", "error_message": "", "agent_name": "planner", "agent_id": "",
                 "session_id": "", "model": "", "input_tokens": None, "output_tokens": None, "total_tokens": None,
                 "cost_usd": None, "attributes": "{}", "inputs": "", "outputs": "", "kind": ""}
SCORE_DEFAULTS = {"scorer_version": "1", "trace_version": 1, "span_id": "", "request_index": 0, "span_name": "", "project": "shop", "agent_name": "planner",
                  "model": "gpt-4o", "status": "scored", "value": None, "label": "", "passed": None, "threshold": 0.5,
                  "reason": "", "criteria": "[]", "metadata": "", "error_type": "", "error_message": "", "attempts": 1,
                  "latency_ms": 12.0, "source": "live", "evaluation_trace_id": "", "rules_version": ""}


def spans_of(trace_id: str, version: int, minute: float, extra: tuple[dict[str, Any], ...] = (),
             project: str = "shop") -> list[dict[str, Any]]:
    """root `handle` > `chat` (llm) > `search` (tool), starting at `minute`, and `extra`."""
    def sp(span_id: str, parent: str, name: str, offset_ms: int, dur_ms: float, **kw: Any) -> dict[str, Any]:
        start = us(minute) + offset_ms * 1000
        return {"trace_id": trace_id, "span_id": f"{trace_id}-{span_id}", "trace_version": version, "project": project,
                "parent_span_id": f"{trace_id}-{parent}" if parent else "", "name": name, "start_time": start,
                "end_time": start + int(dur_ms * 1000), "duration_ms": dur_ms, **kw}

    return [sp("r", "", "handle", 0, 200.0), sp("c", "r", "chat", 5, 120.0, span_type="llm", model="gpt-4o"),
            sp("s", "c", "search", 10, 10.0 * (1 + len(trace_id) % 5), span_type="tool")] + [
        sp(**e) for e in extra]


def score(job: str, rule: str, trace_id: str, minute: float, passed: bool | None, **kw: Any) -> dict[str, Any]:
    scorer = "llm_judge" if rule == "helpful" else "error_spans"
    return {"job_id": job, "rule": rule, "scorer": scorer, "trace_id": trace_id, "scored_at": us(minute),
            "passed": passed, "value": None if passed is None else float(passed), **kw}


SCORES = [
    score("j1", "helpful", "t-ok-1", 5, True, value=0.9, metadata=json.dumps(JUDGE)),
    score("j2", "helpful", "t-ok-2", 10, True, value=0.8, agent_name="support", metadata=json.dumps(JUDGE)),
    score("j3", "helpful", "t-fail-1", 15, False, value=0.2, reason="made up a refund policy",
          metadata=json.dumps(JUDGE)),
    score("j4", "helpful", "t-fail-1", 40, False, value=0.1, trace_version=2, reason="still wrong",
          metadata=json.dumps(JUDGE)),
    score("j5", "helpful", "t-err-1", 20, None, status="error", agent_name="support", error_type="TimeoutError",
          error_message="judge timed out"),
    score("j6", "helpful", "t-fixed", 12, False, value=0.3, reason="rude"),
    score("j7", "helpful", "t-fixed", 45, True, value=0.9, trace_version=2),
    score("l1", "helpful", "t-lab-1", 30, True, project="lab", agent_name="lab-bot"),
    score("e1", "tool-errors", "t-ok-1", 5, True),
    score("e2", "tool-errors", "t-ok-2", 10, True, agent_name="support"),
    score("e3", "tool-errors", "t-fail-1", 40, False, trace_version=2, span_id="t-fail-1-s",
          reason="search raised TimeoutError"),
]
REDELIVERED = [SCORES[9]]  # e2 stored twice (at-least-once): counted once

FAIL_V2_EXTRA = (  # version 2 of t-fail-1: a retry under the root, and a span whose parent never arrived
    {"span_id": "retry", "parent": "r", "name": "retry-search", "offset_ms": 150, "dur_ms": 20.0, "span_type": "tool"},
    {"span_id": "late", "parent": "", "name": "late-callback", "offset_ms": 900, "dur_ms": 1.0,
     "parent_span_id": "never-arrived"},
)
SPANS = [
    *spans_of("t-ok-1", 1, 4), *spans_of("t-ok-2", 1, 9), *spans_of("t-fail-1", 1, 14),
    *spans_of("t-fail-1", 2, 14, FAIL_V2_EXTRA), *spans_of("t-err-1", 1, 19), *spans_of("t-lab-1", 1, 29, project="lab"),
]


def alert(alert_id: str, incident: str, kind: str, minute: float, **kw: Any) -> dict[str, Any]:
    return {"alert_id": alert_id, "incident_id": incident, "alert_rule": "helpful-drop", "kind": kind,
            "level": kw.pop("level", "warning" if kind == "firing" else ""), "rule": "helpful", "scorer": "llm_judge",
            "project": "shop", "group_values": {}, "title": f"helpful-drop {kind}", "text": "", "measure": "rate",
            "observed": kw.pop("observed", None), "threshold": 0.3, "failures": kw.pop("failures", 0),
            "samples": None, "suppressed": 0, "window_s": 600.0, "window_start": None, "incident_started": None,
            "trace_ids": [], "fired_at": us(minute), "channel": "console", "thread_ts": "", "delivery_status": "sent",
            "delivery_error": "", "delivery_attempts": 1, **kw}


ALERTS = [
    alert("a1", "inc-1", "firing", 16, observed=0.5, failures=2),
    alert("a2", "inc-1", "escalated", 18, level="critical", observed=0.7, failures=4),
    alert("a3", "inc-1", "resolved", 50),
    alert("a4", "inc-2", "firing", 60, observed=0.4, failures=1),
    alert("a5", "", "test", 61),
]


def dead_letter(stage: str, offset: int, minute: float, **kw: Any) -> dict[str, Any]:
    return {"stage": stage, "source_topic": f"evalstream.{stage}.v1", "partition": 0, "offset": offset, "job_id": "",
            "item": "", "key": "", "trace_id": "", "error_type": "ValidationError", "reason": f"{stage} could not parse",
            "payload_size": 10, "payload_excerpt": "{", "at": us(minute), **kw}


DEAD_LETTERS = [dead_letter("scorer", 1, 21, trace_id="t-err-1", error_type="TimeoutError"),
                dead_letter("sink", 2, 22), dead_letter("router", 3, 70)]

LAG_COLUMNS = ["at", "worker", "consumer_group", "topic", "partition", "lag_records", "lag_seconds"]


def lag(minute: float, group: str, topic: str, partition: int, records: int, seconds: float) -> dict[str, Any]:
    return {"at": us(minute), "worker": f"w{partition}", "consumer_group": group, "topic": topic,
            "partition": partition, "lag_records": records, "lag_seconds": seconds}


LAG = [lag(10, "evalstream", "evalstream.jobs.v1", 0, 100, 9.0), lag(10, "evalstream", "evalstream.jobs.v1", 1, 50, 4.0),
       lag(20, "evalstream", "evalstream.jobs.v1", 0, 30, 2.5), lag(20, "evalstream", "evalstream.jobs.v1", 1, 5, 0.5),
       lag(20, "evalstream", "evalstream.spans.v1", 0, 7, 1.0),
       lag(20, "evalstream-sink", "evalstream.scores.v1", 0, 1000, 60.0)]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    ch = connect(embedded_dsn(tmp_path_factory.mktemp("dashboards") / "chdb"))
    migrate(ch, DB, ttl_days=30)
    tables = {row[0] for row in ch.query(f"SELECT name FROM system.tables WHERE database = '{DB}'").result_rows}
    if "consumer_lag" not in tables:
        ch.command(CONSUMER_LAG)
    traces = [{"trace_id": t, "start_time": us(m)} for t, m in
              [("t-ok-1", 4), ("t-ok-2", 9), ("t-fail-1", 14), ("t-err-1", 19), ("t-fixed", 11)]]
    traces += [{"trace_id": "t-lab-1", "start_time": us(29), "project": "lab"},
               {"trace_id": "t-fail-1", "start_time": us(14), "version": 2, "span_count": 5}]
    insert(ch, "traces", TRACE_COLUMNS, traces, TRACE_DEFAULTS)
    insert(ch, "spans", SPAN_COLUMNS, SPANS, SPAN_DEFAULTS)
    insert(ch, "scores", SCORE_COLUMNS, SCORES, SCORE_DEFAULTS)
    insert(ch, "scores", SCORE_COLUMNS, REDELIVERED, SCORE_DEFAULTS)
    decision = {"reason": "", "job_id": "", "project": "shop", "source": "live", "span_id": "", "request_index": 0,
                "rules_version": ""}
    insert(ch, "decisions", DECISION_COLUMNS, [
        {"rule": "helpful", "trace_id": "t-fail-1", "trace_version": 1, "outcome": "scored", "decided_at": us(15)},
        {"rule": "helpful", "trace_id": "t-fail-1", "trace_version": 2, "outcome": "scored", "decided_at": us(40)},
        {"rule": "tool-errors", "trace_id": "t-fail-1", "trace_version": 1, "outcome": "sampled_out",
         "decided_at": us(15)},
        {"rule": "tool-errors", "trace_id": "t-fail-1", "trace_version": 2, "outcome": "scored", "decided_at": us(40)},
    ], decision)
    insert(ch, "alerts", ALERT_COLUMNS, ALERTS, {})
    insert(ch, "dead_letters", DEAD_LETTER_COLUMNS, DEAD_LETTERS, {})
    insert(ch, "dead_letters", DEAD_LETTER_COLUMNS, DEAD_LETTERS[:1], {})  # redelivered: replaced, not added
    insert(ch, "consumer_lag", LAG_COLUMNS, LAG, {})
    yield ch
    ch.close()


RANGE = {"start_s": H0 - 3600, "end_s": H0 + 3 * 3600, "interval_s": 300}
CONTEXTS = {
    "all": Context(**RANGE, variables={"database": DB, "project": ALL, "rule": ALL, "consumer_group": ALL,
                                       "trace_id": "t-fail-1"}),
    "selected": Context(**RANGE, variables={"database": DB, "project": ["shop"], "rule": ["helpful"],
                                            "consumer_group": ["evalstream"], "trace_id": "t-fail-1"}),
    "quoted": Context(**RANGE, variables={"database": DB, "project": ["o'brien"], "rule": ["a", "b'c"],
                                          "consumer_group": ["x'y"], "trace_id": "o'brien"}),
}


Results = dict[str, dict[tuple[str, str, str], list[dict[str, Any]]]]


def run_all(client: Any, ctx: Context) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Every query of every dashboard, rendered for `ctx`: {(dashboard uid, kind, name): rows}."""
    results = {}
    for path in DASHBOARD_FILES:
        dashboard = load(path)
        for kind, name, sql in queries(dashboard):
            try:
                result = client.query(render(sql, ctx))
            except Exception as exc:
                raise AssertionError(f"{path.name}: {kind} {name!r} failed: {exc}") from exc
            key = (dashboard["uid"], kind, name)
            assert key not in results, f"two queries for {key}"
            results[key] = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    return results


@pytest.fixture(scope="module")
def results(client: Any) -> Results:
    return {name: run_all(client, ctx) for name, ctx in CONTEXTS.items()}


def rows(results: Results, context: str, uid: str, title: str, kind: str = "panel") -> list[dict[str, Any]]:
    return results[context][(f"evalstream-{uid}", kind, title)]


def expected_pass_rate(project: str | None = None, rule: str | None = None) -> float:
    chosen = {s["job_id"]: s for s in SCORES + REDELIVERED if (project is None or s.get("project", "shop") == project)
              and (rule is None or s["rule"] == rule)}
    return sum(1 for s in chosen.values() if s.get("status", "scored") == "scored" and s["passed"]) / len(chosen)


def test_every_query_runs_with_every_variable_choice(results: Results) -> None:
    total = sum(1 for path in DASHBOARD_FILES for _ in queries(load(path)))
    assert total >= 30 and all(len(by_query) == total for by_query in results.values())
    assert rows(results, "all", "overview", "rule", "variable") == [{"rule": "helpful"}, {"rule": "tool-errors"}]
    assert rows(results, "all", "trace", "project", "variable") == [{"project": "lab"}, {"project": "shop"}]


def test_pass_rate_is_passed_over_results(results: Results) -> None:
    (everything,) = rows(results, "all", "overview", "Pass rate")
    assert everything["pass_rate"] == pytest.approx(expected_pass_rate()) == pytest.approx(6 / 11)
    (shop_helpful,) = rows(results, "selected", "overview", "Pass rate")
    assert shop_helpful["pass_rate"] == pytest.approx(expected_pass_rate("shop", "helpful")) == pytest.approx(3 / 7)
    (counts,) = rows(results, "all", "overview", "Results")
    assert counts == {"results": 11, "passed": 6, "failed": 4, "errors": 1}  # e2, stored twice, counts once
    by_rule = {r["rule"]: r for r in rows(results, "all", "overview", "Rules")}
    assert by_rule["tool-errors"]["pass_rate"] == pytest.approx(2 / 3) and by_rule["tool-errors"]["results"] == 3
    assert by_rule["helpful"]["pass_rate"] == pytest.approx(expected_pass_rate(rule="helpful"))
    series = rows(results, "selected", "overview", "Pass rate per rule")
    assert {r["rule"] for r in series} == {"helpful"}
    assert sum(r["pass_rate"] for r in series) > 0


def test_failures_by_agent_and_model(results: Results) -> None:
    table = {(r["agent"], r["model"], r["rule"]): r for r in rows(results, "all", "overview",
                                                                   "Failures by agent and model")}
    assert (table["planner", "gpt-4o", "helpful"]["results"], table["planner", "gpt-4o", "helpful"]["failed"]) == (5, 3)
    assert table["support", "gpt-4o", "helpful"]["errors"] == 1
    assert table["planner", "gpt-4o", "tool-errors"]["failed"] == 1
    bars = rows(results, "all", "overview", "Failures by agent")
    assert sum(r["failures"] for r in bars if r["agent"] == "planner") == 4


def test_failing_traces_are_the_current_failures_with_links(results: Results) -> None:
    for uid in ("overview", "trace"):
        failing = {r["trace_id"]: r for r in rows(results, "all", uid, "Recent failing traces")}
        assert set(failing) == {"t-fail-1", "t-err-1"}  # t-fixed failed in version 1 only
        assert sorted(failing["t-fail-1"]["rules"].split(", ")) == ["helpful", "tool-errors"]
        assert failing["t-err-1"]["reason"] == "error TimeoutError: judge timed out"
    assert not rows(results, "quoted", "overview", "Recent failing traces")


def test_latency_quantiles_per_span_name(results: Results) -> None:
    table = {r["name"]: r for r in rows(results, "all", "overview", "Span latency by name")}
    # t-fail-1 was re-opened: its version 2 repeats its spans, which the rollup does not count twice
    searches = sorted(s["duration_ms"] for s in SPANS if s["name"] == "search" and s["trace_version"] == 1)
    assert table["search"]["spans"] == len(searches) == 5
    assert table["search"]["p50_ms"] == pytest.approx(searches[2])
    assert searches[-2] <= table["search"]["p95_ms"] <= searches[-1]
    (shop_only,) = [r for r in rows(results, "selected", "overview", "Span latency by name") if r["name"] == "search"]
    assert shop_only["spans"] == 4


def test_judge_tokens_and_cost(results: Results) -> None:
    (judged,) = rows(results, "all", "overview", "Judge tokens and cost")
    assert judged["rule"] == "helpful" and judged["judge_model"] == "gpt-4o-mini"
    assert (judged["judgments"], judged["input_tokens"], judged["output_tokens"]) == (4, 480, 120)
    assert judged["cost_usd"] == pytest.approx(0.0016)
    assert sum(r["cost_usd"] for r in rows(results, "all", "overview", "Judge cost per rule")) == pytest.approx(0.0016)


def test_incidents_firing_and_resolved(results: Results) -> None:
    incidents = rows(results, "all", "overview", "Incidents")
    assert [(r["incident"], r["state"]) for r in incidents] == [("inc-2", "firing"), ("inc-1", "resolved")]
    assert (incidents[1]["level"], incidents[1]["observed"], incidents[1]["messages"]) == ("critical", 0.7, 2)
    kinds: dict[str, int] = {}
    for r in rows(results, "all", "overview", "Alert messages"):
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + r["messages"]
    assert kinds == {"firing": 2, "escalated": 1, "resolved": 1}  # the test message is left out
    assert len(rows(results, "all", "overview", "Alerts", "annotation")) == 4


def test_dead_letters_and_consumer_lag(results: Results) -> None:
    assert rows(results, "all", "pipeline", "Dead letters") == [{"dead_letters": 3}]
    latest = rows(results, "all", "pipeline", "Latest dead letters")
    assert [r["stage"] for r in latest] == ["router", "sink", "scorer"] and latest[2]["trace_id"] == "t-err-1"
    assert sum(r["dead_letters"] for r in rows(results, "all", "pipeline", "Dead letters by stage")) == 3

    assert rows(results, "all", "pipeline", "Consumer lag (latest)") == [{"lag_records": 1042, "max_lag_seconds": 60.0}]
    assert rows(results, "selected", "pipeline", "Consumer lag (latest)") == [
        {"lag_records": 42, "max_lag_seconds": 2.5}]
    partitions = rows(results, "selected", "pipeline", "Consumer lag per partition (latest)")
    assert [(r["topic"], r["partition"], r["lag_records"]) for r in partitions] == [
        ("evalstream.jobs.v1", 0, 30), ("evalstream.spans.v1", 0, 7), ("evalstream.jobs.v1", 1, 5)]
    per_topic = rows(results, "selected", "pipeline", "Consumer lag per topic (records)")
    assert {(r["series"], r["lag_records"]) for r in per_topic} == {
        ("evalstream · evalstream.jobs.v1", 150), ("evalstream · evalstream.jobs.v1", 35),
        ("evalstream · evalstream.spans.v1", 7)}


def test_trace_view_shows_the_spans_of_the_newest_version_with_their_scores(results: Results) -> None:
    (trace,) = rows(results, "all", "trace", "Trace")
    assert (trace["trace_id"], trace["version"], trace["span_count"]) == ("t-fail-1", 2, 5)
    tree = rows(results, "all", "trace", "Spans and their scores")
    assert [(r["depth"], r["span"], r["rule"], r["verdict"]) for r in tree] == [
        (0, "handle", "helpful", "fail"),  # the trace-level score sits on the root
        (1, "· chat", "", ""),
        (2, "· · search", "tool-errors", "fail"),
        (1, "· retry-search", "", ""),
        (0, "late-callback", "", ""),  # its parent never arrived: shown as a root, not hidden
    ]
    assert (tree[0]["value"], tree[0]["reason"]) == (0.1, "still wrong")  # version 2's score, not version 1's
    assert tree[2]["reason"] == "search raised TimeoutError"
    waterfall = rows(results, "all", "trace", "Waterfall")
    assert len(waterfall) == 5 and {r["traceID"] for r in waterfall} == {"t-fail-1"}
    scores = {r["rule"]: r for r in rows(results, "all", "trace", "Scores")}
    assert (scores["helpful"]["trace_version"], scores["helpful"]["judge_model"]) == (2, "gpt-4o-mini")
    decisions = {r["rule"]: (r["outcome"], r["trace_version"]) for r in rows(results, "all", "trace", "Decisions")}
    assert decisions == {"helpful": ("scored", 2), "tool-errors": ("scored", 2)}
    assert not rows(results, "quoted", "trace", "Spans and their scores")
