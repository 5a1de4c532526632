"""pipeline/storage/filters.py: typed filters -> SQL conditions with quoted literals, and its users' SQL: the
lists of `traces list` and `sessions list`, and the backfill's window and decisions."""

from __future__ import annotations

import pytest

from pipeline.backfill.run import decisions_sql
from pipeline.backfill.stored import Window
from pipeline.storage.filters import (
    Eq,
    Fixed,
    Has,
    InSelect,
    MicrosRange,
    OneOf,
    Range,
    conjunction,
    literal,
    parse_time,
    quote,
    where,
)
from pipeline.views.session_view import SessionFilter
from pipeline.views.trace_list import TraceFilter

NOW = 1_800_000_000.0


def test_values_become_literals_and_unset_conditions_are_left_out() -> None:
    assert quote("o'brien \\ x") == "'o\\'brien \\\\ x'"
    assert [literal(v) for v in ("a'", 3, 2.5, True, False)] == ["'a\\''", "3", "2.5", "true", "false"]
    assert where() == "" and where(Eq("a", None), Eq("b", ""), Has("c", None), Range("d"), None) == ""
    assert where(Eq("project", "o'k"), Eq("version", 0), OneOf("rule", ["a", "b'"]), Has("agents", "x")) == (
        "WHERE project = 'o\\'k' AND version = 0 AND rule IN ('a', 'b\\'') AND has(agents, 'x') ")
    assert OneOf("rule", []).sql() == "false"  # nothing to match, not a syntax error
    assert conjunction(Range("t", NOW - 60, NOW), MicrosRange("c", 5), InSelect("id", "SELECT 1"), Fixed("ok")) == (
        "t >= toDateTime64(1799999940.000000, 6) AND t < toDateTime64(1800000000.000000, 6) AND "
        "toUnixTimestamp64Micro(c) >= 5 AND id IN (SELECT 1) AND ok")


def test_parse_time_takes_durations_and_iso_dates() -> None:
    assert parse_time("30m", NOW) == NOW - 1800
    assert parse_time("7d", NOW) == NOW - 7 * 86400
    assert parse_time("2026-11-20", NOW) == 1_795_132_800.0  # midnight UTC
    with pytest.raises(ValueError, match="use a duration like 30m"):
        parse_time("yesterday", NOW)


def test_trace_list_filters_become_sql_conditions_with_quoted_values() -> None:
    sql = TraceFilter(failed_rule="tool-errors", agent="o'brien", status="complete", since=NOW - 60,
                      limit=5).sql("evalstream")
    assert "has(t.agents, 'o\\'brien')" in sql
    assert "rule = 'tool-errors' AND (passed = false OR status = 'error')" in sql
    assert "t.status = 'complete'" in sql and "t.closed_at >= toDateTime64(1799999940.000000, 6)" in sql
    assert sql.endswith("ORDER BY t.closed_at DESC LIMIT 5")
    assert "WHERE t.project != 'evalstream-judges' ORDER BY" in TraceFilter().sql("db")


def test_trace_list_leaves_out_the_judges_own_traces_unless_their_project_is_asked_for() -> None:
    assert "t.project != 'evalstream-judges'" in TraceFilter(agent="a").sql("db")
    judges = TraceFilter(project="evalstream-judges").sql("db")
    assert "t.project = 'evalstream-judges'" in judges and "!=" not in judges


def test_session_list_filters_become_sql_conditions_with_quoted_values() -> None:
    sql = SessionFilter(failed_rule="goal", project="o'brien", status="open", since=NOW - 60, until=NOW,
                        limit=5).sql("evalstream")
    assert "s.project = 'o\\'brien'" in sql and "s.status = 'open'" in sql
    assert "s.updated_at >= toDateTime64(1799999940.000000, 6)" in sql
    assert "s.updated_at < toDateTime64(1800000000.000000, 6)" in sql
    assert ") WHERE rule = 'goal' GROUP BY session_id" in sql
    assert "FROM evalstream.sessions_current AS s" in sql
    assert sql.endswith("LIMIT 5")
    plain = SessionFilter().sql("db")
    assert "WHERE rule =" not in plain and plain.split("ON f.session_id = s.session_id ")[1].startswith("ORDER BY")


def test_the_backfill_window_pages_by_cursor_and_counts_its_own_decisions() -> None:
    window = Window("evalstream", 100, 200, project="o'brien")
    page_sql = window.page_sql((150, "x'y"), 10)
    assert "project = 'o\\'brien'" in page_sql and "trace_id > 'x\\'y'" in page_sql
    assert "toUnixTimestamp64Micro(closed_at) > 150" in page_sql and page_sql.endswith("LIMIT 10")
    assert ("toUnixTimestamp64Micro(closed_at) >= 100 AND toUnixTimestamp64Micro(closed_at) < 200 AND "
            "(trace_id, version) IN (SELECT trace_id, max(version) FROM evalstream.traces WHERE "
            "toUnixTimestamp64Micro(closed_at) >= 100 GROUP BY trace_id)") in window.count_sql()
    assert "LIMIT" not in window.page_sql(None, 5).split("ORDER BY")[0]

    sql = decisions_sql("evalstream", Window("evalstream", 100, 200), ["half", "o'k"], 150)
    assert "source = 'backfill'" in sql and "rule IN ('half', 'o\\'k')" in sql
    assert "toUnixTimestamp64Micro(decided_at) >= 150" in sql and "< 200" in sql
    assert sql.endswith("< 200) GROUP BY outcome")
