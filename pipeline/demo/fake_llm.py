"""A stand-in for an LLM provider in the demo: an OpenAI-compatible `/v1/chat/completions` that
answers YES when the line after "Agent response:" mentions a package and NO otherwise.

The machines this project runs on cannot reach real providers, and the demo must run anywhere.
Point a judge at it with `api_base=<url>/v1` (litellm) — nothing else changes.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

JUDGED_MARKER = "Agent response:"


def verdict_for(messages: list[dict[str, Any]]) -> str:
    text = " ".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
    judged = text.split(JUDGED_MARKER, 1)[-1].split("\n", 1)[0]  # the response's line, not the question
    return "YES" if "package" in judged.lower() else "NO"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        time.sleep(self.server.latency_s)
        content = verdict_for(body.get("messages") or [])
        prompt_tokens = sum(len(str(m.get("content") or "")) for m in body.get("messages") or []) // 4 + 1
        self.server.calls += 1
        self._send(200, {
            "id": f"chatcmpl-demo-{self.server.calls}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "demo-judge"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
        })

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    latency_s = 0.0
    calls = 0


class FakeLLM:
    """`with FakeLLM() as llm:` serves on 127.0.0.1 at a free port; `llm.api_base` is the base URL."""

    def __init__(self, latency_s: float = 0.05) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.latency_s = latency_s
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-llm", daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def calls(self) -> int:
        return self._server.calls

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
