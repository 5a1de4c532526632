"""`evalstream sessions show | list`: a stored conversation turn by turn with its verdicts, and a filtered
list of sessions. Building the view and the SQL is pure; `load_session` reads from storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.text import Text

from pipeline.storage.filters import Eq, InSelect, Range, where
from pipeline.storage.reader import Reader

STATUSES = ("open", "complete", "incomplete")
MAX_TEXT = 2_000  # characters of a turn's input or output shown


@dataclass
class Verdict:
    """One row of session_scores: a look after `turn` turns (final false) or the closing verdict."""

    rule: str
    scorer: str
    turn: int
    final: bool
    status: str  # scored / error
    passed: bool | None
    value: Any = None
    reason: str = ""
    scored_at: Any = None

    @property
    def outcome(self) -> str:
        """What a reader sees: a look says continue (no verdict yet) or finish (pass / fail)."""
        if self.status != "scored":
            return "error"
        if self.passed is None:
            return "continue" if not self.final else "no verdict"
        verdict = "pass" if self.passed else "fail"
        return verdict if self.final else f"finish: {verdict}"


@dataclass
class TurnView:
    turn: int
    trace_id: str
    trace_version: int
    status: str
    input: str
    output: str
    errors: int = 0
    agents: list[str] = field(default_factory=list)
    ends_session: bool = False
    looks: list[Verdict] = field(default_factory=list)  # judged right after this turn


@dataclass
class Pending:
    """A rule with no closing verdict on this version, and what its decision says."""

    rule: str
    outcome: str
    reason: str = ""


@dataclass
class SessionView:
    header: dict[str, Any]
    turns: list[TurnView]
    closing: list[Verdict]  # one per rule, by rule
    pending: list[Pending]
    stray: list[Verdict] = field(default_factory=list)  # looks naming a turn this version does not have


def build_view(header: dict[str, Any], turns: list[dict[str, Any]], scores: list[dict[str, Any]],
               decisions: list[dict[str, Any]]) -> SessionView:
    """Plain rows (column -> value) of one session version into what `render` shows."""
    by_turn = {int(r["turn"]): TurnView(
        turn=int(r["turn"]), trace_id=r["trace_id"], trace_version=int(r["trace_version"]), status=r["status"],
        input=r.get("input") or "", output=r.get("output") or "", errors=int(r.get("errors") or 0),
        agents=list(r.get("agents") or []), ends_session=bool(r.get("ends_session")))
        for r in turns}
    closing: dict[str, Verdict] = {}
    stray: list[Verdict] = []
    for row in scores:
        verdict = Verdict(rule=row["rule"], scorer=row.get("scorer") or "", turn=int(row.get("turn") or 0),
                          final=bool(row["final"]), status=row["status"], passed=row.get("passed"),
                          value=row.get("value"), reason=row.get("reason") or "", scored_at=row.get("scored_at"))
        if verdict.final:
            kept = closing.get(verdict.rule)  # a rescored session: the latest closing verdict
            if kept is None or str(verdict.scored_at or "") >= str(kept.scored_at or ""):
                closing[verdict.rule] = verdict
        elif verdict.turn in by_turn:
            by_turn[verdict.turn].looks.append(verdict)
        else:
            stray.append(verdict)
    for turn in by_turn.values():
        turn.looks.sort(key=lambda v: (v.rule, str(v.scored_at or "")))
    pending = [Pending(rule=d["rule"], outcome=d["outcome"], reason=d.get("reason") or "")
               for d in sorted(decisions, key=lambda d: d["rule"]) if d["rule"] not in closing]
    return SessionView(header=header, turns=[by_turn[n] for n in sorted(by_turn)],
                       closing=[closing[r] for r in sorted(closing)], pending=pending, stray=stray)


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _verdict_text(v: Verdict, with_turn: bool = False) -> str:
    colour = {"pass": "green", "fail": "red", "finish: pass": "green", "finish: fail": "red", "error": "red",
              "continue": "dim", "no verdict": "yellow"}[v.outcome]
    value = "" if v.value in (None, "") or v.status != "scored" else f" {escape(str(v.value))}"
    reason = f" — {escape(_cut(v.reason, 200))}" if v.reason else ""
    after = f" after turn {v.turn}" if with_turn else ""
    return (f"[magenta]◆ {escape(v.rule)}[/] ({escape(v.scorer)}){after}: [{colour}]{escape(v.outcome)}[/]"
            f"{value}{reason}")


def title(header: dict[str, Any]) -> str:
    status = header["status"]
    state = (f"open (running; as of turn {header['turn_count']})" if status == "open"
             else f"{status} ({header['close_reason']})")
    cost = f" · ${float(header['cost_usd']):.4f}" if header.get("cost_usd") else ""
    errors = f" · {header['error_count']} error span(s)" if header.get("error_count") else ""
    return (f"[bold]session {escape(str(header['session_id']))}[/] v{header['version']} · "
            f"{escape(str(header.get('project', '')))} · {state} · {header['turn_count']} turn(s) · "
            f"{float(header.get('duration_ms') or 0) / 1000:.1f} s{cost}{errors}")


def render(view: SessionView) -> Group:
    """Header, the transcript with each turn's looks under it, then the closing verdicts."""
    lines: list[Any] = [title(view.header), ""]
    for t in view.turns:
        marks = [f"trace {escape(t.trace_id)} v{t.trace_version}"]
        if t.status != "complete":
            marks.append(f"[yellow]{escape(t.status)}[/]")
        if t.errors:
            marks.append(f"[red]{t.errors} error(s)[/]")
        if t.agents:
            marks.append("agents " + escape(", ".join(t.agents)))
        if t.ends_session:
            marks.append("ended the session")
        lines.append(f"[bold]Turn {t.turn}[/] [dim]({' · '.join(marks)})[/]")
        lines.append(Text.assemble(("  User: ", "cyan"), _cut(t.input)))
        output = t.output or ("(no output: the turn did not finish)" if t.status != "complete" else "(no output)")
        lines.append(Text.assemble(("  Agent: ", "green"), _cut(output)))
        lines += [f"    {_verdict_text(v)}" for v in t.looks]
        lines.append("")
    for v in view.stray:
        lines.append(f"    {_verdict_text(v, with_turn=True)}")
    lines.append("[bold]Closing verdicts[/]" if view.header["status"] != "open"
                 else "[bold]Closing verdicts[/] [dim](the session is still open)[/]")
    lines += [f"  {_verdict_text(v)}" for v in view.closing]
    for p in view.pending:
        reason = f" — {escape(p.reason)}" if p.reason else ""
        lines.append(f"  [magenta]◆ {escape(p.rule)}[/]: [yellow]{escape(p.outcome)}[/]{reason}")
    if not view.closing and not view.pending:
        lines.append("  [dim]none yet[/]")
    return Group(*lines)


def _dicts(result: Any) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def load_session(reader: Reader, session_id: str, version: int | None = None) -> SessionView | None:
    """The session at `version` (default: the latest, an open snapshot while it runs), or None."""
    db, this = reader.database, Eq("session_id", session_id)
    header = _dicts(reader.query(
        f"SELECT session_id, version, project, status, close_reason, turn_count, error_count, duration_ms, "
        f"cost_usd, toString(started) AS started, toString(updated_at) AS updated_at FROM {db}.sessions FINAL "
        f"{where(this, Eq('version', version))}ORDER BY version DESC LIMIT 1"))
    if not header:
        return None
    of_version = where(this, Eq("session_version", int(header[0]["version"])))
    turns = _dicts(reader.query(
        f"SELECT turn, trace_id, trace_version, status, input, output, errors, agents, ends_session "
        f"FROM {db}.session_turns FINAL {of_version}ORDER BY turn"))
    scores = _dicts(reader.query(
        f"SELECT rule, scorer, turn, final, status, passed, coalesce(toString(value), label) AS value, "
        f"if(status = 'scored', reason, concat(error_type, ': ', error_message)) AS reason, "
        f"toString(scored_at) AS scored_at FROM {db}.session_scores FINAL {of_version}ORDER BY turn, rule"))
    decisions = _dicts(reader.query(
        f"SELECT rule, outcome, reason FROM {db}.session_decisions FINAL {of_version}"
        f"ORDER BY outcome IN ('scored', 'failed') DESC, decided_at DESC LIMIT 1 BY rule"))
    return build_view(header[0], turns, scores, decisions)


def _failed_sql(db: str, rule: str | None = None) -> str:
    """(session_id, failed rules): the current closing verdict failed (session_scores_current: the latest
    closed version's; an error counts as a fail there), or, while the latest version is open, a look on it
    finished with a fail (a look that errored did not finish anything)."""
    failed = "(passed = false OR status = 'error')"
    only = where(Eq("rule", rule))
    return (
        "SELECT session_id, groupUniqArray(rule) AS failed FROM ("
        f"SELECT session_id, rule FROM {db}.session_scores_current WHERE {failed} "
        "UNION ALL "
        "SELECT sc.session_id AS session_id, sc.rule AS rule "
        f"FROM (SELECT session_id, session_version, rule FROM {db}.session_scores FINAL "
        "WHERE NOT final AND passed = false AND status = 'scored') AS sc "
        f"INNER JOIN (SELECT session_id, version FROM {db}.sessions_current WHERE status = 'open') AS cur "
        "ON cur.session_id = sc.session_id AND cur.version = sc.session_version"
        f") {only}GROUP BY session_id"
    )


@dataclass(frozen=True)
class SessionFilter:
    failed_rule: str | None = None  # this rule failed the session (see _failed_sql)
    project: str | None = None
    status: str | None = None  # open / complete / incomplete
    since: float | None = None  # updated (closed, or the latest snapshot) at or after (epoch seconds)
    until: float | None = None
    limit: int = 20

    def sql(self, db: str) -> str:
        failed = None
        if self.failed_rule:
            failed = InSelect("s.session_id", f"SELECT session_id FROM ({_failed_sql(db, self.failed_rule)})")
        conditions = where(Range("s.updated_at", self.since, self.until), Eq("s.project", self.project),
                           Eq("s.status", self.status), failed)
        return (
            "SELECT s.session_id AS session_id, s.updated_at AS updated_at, s.project AS project, "
            "s.status AS status, s.close_reason AS close_reason, s.version AS version, s.turn_count AS turns, "
            "s.error_count AS errors, round(s.duration_ms, 1) AS duration_ms, round(s.cost_usd, 6) AS cost_usd, "
            "arrayStringConcat(arraySort(f.failed), ', ') AS failed_rules "
            f"FROM {db}.sessions_current AS s LEFT JOIN ({_failed_sql(db)}) AS f ON f.session_id = s.session_id "
            + conditions
            + f"ORDER BY s.updated_at DESC, s.session_id LIMIT {int(self.limit)}"
        )
