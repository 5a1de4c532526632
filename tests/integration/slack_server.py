"""A local stand-in for Slack that slack-sdk's real clients talk to.

It serves an incoming webhook at `.url` and the Web API's `chat.postMessage` and `chat.update` under
`.api_base_url` (pass it as `AsyncWebClient(base_url=...)`). `down` (503) and `rate_limited` (429
with Retry-After) apply to both.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

CHANNEL_ID = "C123"


class SlackServer:
    def __init__(self, token: str = "xoxb-test-token") -> None:
        self.token = token  # the only bot token the Web API accepts
        self.messages: list[dict[str, Any]] = []  # webhook posts
        self.posts: list[dict[str, Any]] = []  # chat.postMessage bodies, plus the "ts" they were given
        self.updates: list[dict[str, Any]] = []  # chat.update bodies
        self.down = False  # answer `down_status`, as Slack (or a proxy in front of it) does in an outage
        self.down_status = 503
        self.refused = 0
        self.rate_limited = 0  # answer the next N requests with 429 and Retry-After
        self.retry_after_s = 1
        self.arrivals: list[float] = []  # monotonic time of every request
        self._ts = itertools.count(100)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server._lock:
                    server.arrivals.append(time.monotonic())
                    if server.rate_limited > 0:
                        server.rate_limited -= 1
                        self._answer(429, b"rate_limited", {"Retry-After": str(server.retry_after_s)})
                        return
                    if server.down:
                        server.refused += 1
                        self._answer(server.down_status, b"service_unavailable")
                        return
                    if self.path.startswith("/api/"):
                        self._api(self.path.removeprefix("/api/"), body)
                        return
                    server.messages.append(json.loads(body))
                self._answer(200, b"ok")

            def _api(self, method: str, body: bytes) -> None:
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    self._json({"ok": False, "error": "invalid_auth"})
                    return
                payload = json.loads(body or b"{}")
                if method == "chat.postMessage":
                    ts = f"1700000000.{next(server._ts):06d}"
                    server.posts.append({**payload, "ts": ts})
                    self._json({"ok": True, "channel": CHANNEL_ID, "ts": ts,
                                "message": {"text": payload.get("text"), "ts": ts,
                                            "thread_ts": payload.get("thread_ts")}})
                elif method == "chat.update":
                    if payload.get("channel") != CHANNEL_ID:
                        self._json({"ok": False, "error": "channel_not_found"})
                        return
                    server.updates.append(payload)
                    self._json({"ok": True, "channel": CHANNEL_ID, "ts": payload.get("ts"),
                                "text": payload.get("text")})
                else:
                    self._json({"ok": False, "error": "unknown_method"})

            def _json(self, answer: dict[str, Any]) -> None:
                self._answer(200, json.dumps(answer).encode(), {"Content-Type": "application/json; charset=utf-8"})

            def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{port}/services/T000/B000/XXXX"
        self.api_base_url = f"http://127.0.0.1:{port}/api/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
