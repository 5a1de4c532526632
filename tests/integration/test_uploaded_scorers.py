"""Uploaded scorers through the real pipeline: `evalstream scorers upload` -> the scorer topic ->
a running worker picks each version up without a restart -> scores in ClickHouse; a hostile
upload gives error rows while the other rules keep scoring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.scoring.uploads import build_upload
from tests.integration.harness import WorkerProcess, batch, produce, span

pytestmark = pytest.mark.integration

RULES = """
rules:
  - name: mentions
    scorer: package_mentions
    params: {word: package}
  - name: crashy
    scorer: crashy
  - name: tool-mentions
    subject: span
    scorer: package_mentions
    params: {word: package}
    filter: {span_type: tool}
  - name: errors
    scorer: error_spans
"""

MENTIONS_V1 = '''
from packaging.version import Version

from scorers import Score, Scorer, SpanSubject


class PackageMentions(Scorer):
    """Counts the word in the trace's span outputs, or in one span's (a span rule's subject)."""

    name = "package_mentions"
    subjects = frozenset({"trace", "span"})

    def __init__(self, word: str) -> None:
        self.word = word

    def score(self, target):
        spans = [target.span] if isinstance(target, SpanSubject) else target.spans
        hits = sum(str(s.outputs).lower().count(self.word) for s in spans)
        return Score(value=float(hits), passed=hits > 0, reason=f"{hits} mention(s), packaging {Version('1.0')}")
'''
MENTIONS_V2 = MENTIONS_V1.replace("value=float(hits)", "value=100.0 + hits")

CRASHY = '''
import os

from scorers import scorer


@scorer("crashy")
def crashy(trace):
    os._exit(3)
'''


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, f"evalstream {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def traces(prefix: str, n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        trace_id = f"{prefix}{i}"
        root = span(trace_id, f"{trace_id}-r", None, "handle", outputs="Your package ships today")
        tool = span(trace_id, f"{trace_id}-t", root["span_id"], "track", span_type="tool",
                    outputs={"status": "package in transit"})
        out.append((trace_id.encode(), batch(trace_id, [root, tool], final=True)))
    return out


def test_uploaded_scorers_are_scored_hot_swapped_and_contained(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    mentions, requirements, crashy = tmp_path / "mentions.py", tmp_path / "requirements.txt", tmp_path / "crashy.py"
    mentions.write_text(MENTIONS_V1)
    requirements.write_text("packaging>=20\n")
    crashy.write_text(CRASHY)
    data = tmp_path / "data"
    env = {**os.environ, "EVALSTREAM_KAFKA_BOOTSTRAP": broker, "EVALSTREAM_DATA_DIR": str(data),
           "EVALSTREAM_TOPIC_PARTITIONS": "4"}
    worker = WorkerProcess(data, broker, rules, {"EVALSTREAM_SANDBOX_TIMEOUT_S": "5"}).start()
    db = "evalstream"

    def rows(sql: str) -> dict[tuple[str, str], list]:
        return {(r[0], r[1]): r[2:] for r in worker.query(sql)}

    def logged(text: str) -> bool:
        return text in worker.log_path.read_text(errors="replace")

    try:
        pid = worker.process.pid
        # Before any version is uploaded, a rule naming it gives error rows that say so.
        produce(broker, traces("early", 1))
        worker.wait_for(lambda: len(rows(f"SELECT rule, trace_id, error_type FROM {db}.scores_current "
                                         "WHERE trace_id = 'early0'")) == 4, what="the early trace scored")
        early = rows(f"SELECT rule, trace_id, status, error_type, error_message FROM {db}.scores_current "
                     "WHERE trace_id = 'early0'")
        assert early[("mentions", "early0")][:2] == ["error", "ScorerNotFoundError"]
        assert "no uploaded version has arrived" in early[("mentions", "early0")][2]
        assert early[("errors", "early0")][0] == "scored"
        assert early[("tool-mentions", "early0")][:2] == ["error", "ScorerNotFoundError"]

        # Upload v1 and the hostile scorer; the running worker picks both up.
        v1 = build_upload(mentions, requirements).version
        assert f"Uploaded package_mentions version {v1}" in " ".join(cli(env, "scorers", "upload", str(mentions),
                                                                           str(requirements)).split())
        cli(env, "scorers", "upload", str(crashy))
        worker.wait_for(lambda: logged(f"package_mentions is now version {v1}"), what="v1 picked up")
        produce(broker, traces("one", 3))
        worker.wait_for(lambda: len(rows(f"SELECT rule, trace_id, 1 FROM {db}.scores_current "
                                         "WHERE trace_id LIKE 'one%'")) == 12, what="batch one scored by every rule")
        one = rows(f"SELECT rule, trace_id, status, value, passed, scorer_version, error_type, error_message "
                   f"FROM {db}.scores_current WHERE trace_id LIKE 'one%'")
        for i in range(3):
            assert one[("mentions", f"one{i}")][:4] == ["scored", 2.0, True, v1]
            # The span rule's scorer ran in the sandbox on the tool span alone: one mention, on its span id.
            assert one[("tool-mentions", f"one{i}")][:4] == ["scored", 1.0, True, v1]
            assert one[("errors", f"one{i}")][0] == "scored"
            status, _, _, _, error_type, message = one[("crashy", f"one{i}")]
            assert (status, error_type) == ("error", "SandboxExitError") and "exited with code 3" in message

        assert worker.query(f"SELECT trace_id, span_id FROM {db}.scores_current WHERE rule = 'tool-mentions' "
                            "AND trace_id LIKE 'one%' ORDER BY trace_id") == [[f"one{i}", f"one{i}-t"] for i in range(3)]

        # A new version replaces v1 in the same worker process.
        mentions.write_text(MENTIONS_V2)
        v2 = build_upload(mentions, requirements).version
        cli(env, "scorers", "upload", str(mentions), str(requirements))
        worker.wait_for(lambda: logged(f"package_mentions is now version {v2}"), what="v2 picked up")
        produce(broker, traces("two", 2))
        worker.wait_for(lambda: len(rows(f"SELECT rule, trace_id, 1 FROM {db}.scores_current "
                                         "WHERE trace_id LIKE 'two%'")) == 8, what="batch two scored")
        two = rows(f"SELECT rule, trace_id, status, value, scorer_version FROM {db}.scores_current "
                   "WHERE trace_id LIKE 'two%' AND rule = 'mentions'")
        assert {k: v for k, v in two.items()} == {("mentions", f"two{i}"): ["scored", 102.0, v2] for i in range(2)}
        assert worker.process.pid == pid and worker.process.poll() is None

        # Every upload is listed and stored for audit.
        listed = [json.loads(line) for line in cli(env, "scorers", "list", "--format", "json").splitlines()]
        assert {(r["name"], r["version"]) for r in listed} == {("package_mentions", v2),
                                                               ("crashy", build_upload(crashy).version)}
        assert next(r for r in listed if r["name"] == "package_mentions")["requirements"] == ["packaging>=20"]
        worker.wait_for(lambda: worker.scalar(f"SELECT count() FROM {db}.scorer_versions FINAL") == 3,
                        what="the uploads in scorer_versions")
        assert worker.query(f"SELECT version FROM {db}.scorer_versions FINAL WHERE name = 'package_mentions' "
                            "ORDER BY uploaded_at") == [[v1], [v2]]
    finally:
        started = time.monotonic()
        worker.stop()
        assert time.monotonic() - started < 30
