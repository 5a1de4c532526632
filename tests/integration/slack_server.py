"""A local stand-in for Slack's incoming-webhook endpoint; slack-sdk's real client talks to it."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class SlackServer:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.down = False  # answer 503, as Slack does in an outage
        self.refused = 0
        self.rate_limited = 0  # answer the next N requests with 429 and Retry-After
        self.retry_after_s = 1
        self.arrivals: list[float] = []  # monotonic time of every request
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.arrivals.append(time.monotonic())
                if server.rate_limited > 0:
                    server.rate_limited -= 1
                    self.send_response(429)
                    self.send_header("Retry-After", str(server.retry_after_s))
                    self.end_headers()
                    self.wfile.write(b"rate_limited")
                    return
                if server.down:
                    server.refused += 1
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"service_unavailable")
                    return
                server.messages.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/services/T000/B000/XXXX"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
