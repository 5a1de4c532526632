"""The package-inquiry judge (examples/package_inquiry), uploaded with its requirements file, scores
live traces in its sandbox against a local OpenAI-compatible server, with every judge call recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.demo.fake_llm import FakeLLM
from pipeline.sdk import Tracer
from tests.integration.harness import WorkerProcess

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "package_inquiry"
RULE = "sdk:package_inquiry"


def test_uploaded_package_inquiry_judge_scores_live_traces(broker: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n")
    with FakeLLM(latency_s=0.01) as llm:
        worker = WorkerProcess(tmp_path / "data", broker, rules, {
            "EVALSTREAM_JUDGE_MODEL": "openai/demo-judge", "EVALSTREAM_JUDGE_API_KEY": "test",
            "EVALSTREAM_JUDGE_API_BASE": llm.api_base, "EVALSTREAM_SANDBOX_ENV_ALLOW": "EVALSTREAM_JUDGE_*",
        }).start()
        try:
            upload = subprocess.run(
                [sys.executable, "-m", "pipeline.cli", "scorers", "upload", str(EXAMPLE / "package_inquiry.py"),
                 str(EXAMPLE / "requirements.txt"), "--network"],  # it calls the (fake) LLM: without, no network
                env={**os.environ, "EVALSTREAM_KAFKA_BOOTSTRAP": broker, "EVALSTREAM_DATA_DIR": str(tmp_path / "cli")},
                capture_output=True, text=True, timeout=120, check=False)
            assert upload.returncode == 0, upload.stdout + upload.stderr

            tracer = Tracer("support", bootstrap_servers=broker, flush_interval_s=0.05)
            replies = {f"q{i}": ("Your package arrives Tuesday." if i % 2 else "Thanks, we will get back to you.")
                       for i in range(8)}
            for question, response in replies.items():
                with tracer.span("handle_request", "agent", inputs=question):
                    tracer.async_evaluate("package_inquiry", {"request": f"{question}: where is my package?",
                                                              "response": response})
            assert tracer.flush(30)
            tracer.shutdown()

            worker.wait_for(lambda: worker.scalar(f"SELECT count() FROM evalstream.scores_current "
                                                  f"WHERE rule = '{RULE}'") == len(replies),
                            timeout_s=120, what="a verdict per request")
            rows = worker.query(f"SELECT status, passed, reason, metadata, scorer_version FROM "
                                f"evalstream.scores_current WHERE rule = '{RULE}'")
            assert {r[0] for r in rows} == {"scored"}
            assert sorted(r[1] for r in rows) == [False] * 4 + [True] * 4
            judge = json.loads(rows[0][3])["judge"]
            assert judge["model"] == "openai/demo-judge" and judge["input_tokens"] > 0
            (call,) = judge["calls"]
            assert "Agent response:" in json.dumps(call) and call.get("attempts", 1) >= 1
            assert all(r[4] and r[4] != "1" for r in rows)  # the uploaded version (a content hash) is recorded
            assert llm.calls == len(replies)
        finally:
            worker.stop()
