"""The SDK, the contracts and the scorers must import without the pipeline's heavy dependencies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {k: v for k, v in os.environ.items() if k != "EVALSTREAM_KAFKA_BOOTSTRAP"}

BLOCKED = ("faust", "clickhouse_connect", "chdb", "slack_sdk", "litellm", "openai", "opentelemetry")

SCRIPT = textwrap.dedent(
    """
    import json, sys

    BLOCKED = {blocked!r}
    attempted = []

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                attempted.append(name)
                raise ImportError(f"blocked for the isolation test: {{name}}")
            return None

    sys.meta_path.insert(0, Blocker())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]

    import pipeline.sdk, pipeline.contracts, pipeline.sampling, scorers, scorers.builtin
    import pipeline.sdk.llm, pipeline.sdk.testing
    from pipeline.sdk import Tracer, wrap
    from scorers import scorer, Scorer, Score
    from scorers.builtin import BUILTINS

    tracer = Tracer(project="iso")

    @tracer.observe()
    def f(x):
        return x + 1

    assert f(1) == 2
    client = object()
    assert wrap(client, tracer=tracer) is client  # nothing to wrap, and no LLM library imported
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(BLOCKED))
    print(json.dumps({{"attempted": attempted, "loaded": loaded, "builtins": sorted(BUILTINS)}}))
    """
)


def test_sdk_contracts_and_scorers_import_without_pipeline_extras() -> None:
    blocker_check = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(blocked=BLOCKED) + "\nimport faust\n"],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120, check=False,
    )
    # the blocker really blocks: importing faust afterwards fails
    assert blocker_check.returncode != 0 and "blocked for the isolation test: faust" in blocker_check.stderr

    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(blocked=BLOCKED)], capture_output=True, text=True,
                          cwd=ROOT, env=ENV, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["attempted"] == []  # not even tried (and swallowed)
    assert report["loaded"] == []
    assert report["builtins"] == ["agent_judge", "error_spans", "groundedness", "helpfulness", "json_output",
                                  "llm_criteria", "llm_label", "llm_scale", "pii_leak", "repeated_tool_calls",
                                  "session_agent_judge", "session_criteria", "session_errors", "session_length",
                                  "session_repetition", "task_completion", "tool_errors", "trace_cost", "trace_latency"]
