"""A small OpenAI-compatible HTTP server for tests: real clients (openai, litellm) talk to it over HTTP.

    with OpenAIServer() as server:
        client = OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        server.reply_with(content='{"score": 0.8}')     # optional: script the next reply
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        server.requests[-1].body["messages"]

Serves `POST /v1/chat/completions` and `POST /v1/responses`, plain JSON or SSE (`stream: true`; for chat,
`stream_options.include_usage` adds the final usage chunk), with bodies shaped like OpenAI's. Without a
scripted reply it echoes the last user message, or calls the first tool when the request has `tools`
(unless `tool_choice` is "none" or the last message is a tool result). A `tool_choice` naming a function
calls that function, and "required" calls the first tool even after a tool result. Default tool arguments
follow the tool's JSON schema: strings are "test", enums take their first value, integers their minimum.

More scripting, for judges and retry logic:

    server.respond_with(fn)            fn(body) -> Reply | None, asked per request before the FIFO queue
    server.fail_next(6, status=429, retry_after=0.2)   the next 6 requests fail (with a Retry-After header)
    server.latency_s = 0.5             every request waits this long before it is answered
    server.max_in_flight               the most requests it was answering at once since the last reset()

`python -m tests.support.openai_server --port 8089 --latency 0.5` serves in its own process (for benches).
Magic model names:

    error-<status>   an OpenAI-style error body with that HTTP status (e.g. error-400, error-500)
    stream-error     streams one delta, then fails: for chat an error payload (the openai client raises
                     mid-stream), for responses an `error` event and `response.failed`
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from pipeline.embedded import free_port

CREATED = 1_700_000_000
# What the API answers for an alias: the dated snapshot (so tests can tell requested from served model).
SNAPSHOTS = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               429: "rate_limit_exceeded"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    """A scripted assistant turn: text, tool calls ({"name", "arguments"} with arguments a JSON string), or both."""

    content: str | None = None
    tool_calls: list[dict[str, str]] = field(default_factory=list)


Responder = Callable[[dict[str, Any]], "Reply | None"]


@dataclass
class _Failure:
    status: int
    retry_after: float | None


class OpenAIServer:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self.requests: list[RecordedRequest] = []
        self.latency_s = 0.0
        self.max_in_flight = 0
        self._in_flight = 0
        self._generation = 0  # requests still running from before a reset() do not count after it
        self._replies: deque[Reply] = deque()
        self._failures: deque[_Failure] = deque()
        self._responder: Responder | None = None
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> OpenAIServer:
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = _HTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting --------------------------------------------------------------------------------
    def reply_with(self, content: str | None = None, tool_calls: list[dict[str, str]] | None = None) -> None:
        """Queue the next reply (FIFO); once the queue is empty the default behaviour resumes."""
        with self._lock:
            self._replies.append(Reply(content, list(tool_calls or [])))

    def respond_with(self, responder: Responder | None) -> None:
        """Answer each request with `responder(body)`; when it returns None the queue / default applies."""
        with self._lock:
            self._responder = responder

    def failures_left(self) -> int:
        """Scripted failures not yet answered."""
        with self._lock:
            return len(self._failures)

    def fail_next(self, count: int, status: int = 429, retry_after: float | None = None) -> None:
        """The next `count` requests get an OpenAI-style error with `status` (and a Retry-After header)."""
        with self._lock:
            self._failures.extend(_Failure(status, retry_after) for _ in range(count))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._replies.clear()
            self._failures.clear()
            self._responder = None
            self.latency_s = 0.0
            self.max_in_flight = 0
            self._in_flight = 0
            self._generation += 1

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _enter(self) -> tuple[int, _Failure | None]:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return self._generation, self._failures.popleft() if self._failures else None

    def _leave(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self._in_flight -= 1

    def _next_reply(self, body: dict[str, Any], tools: list[dict[str, Any]], last_user: str,
                    tool_result_last: bool) -> Reply:
        with self._lock:
            responder = self._responder
        scripted = responder(body) if responder is not None else None
        if scripted is not None:
            return scripted
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        choice = body.get("tool_choice")
        forced = _forced_tool(choice, tools)
        if forced is not None:
            return Reply(None, [_default_tool_call(forced)])
        if tools and choice != "none" and (not tool_result_last or choice == "required"):
            return Reply(None, [_default_tool_call(tools[0])])
        return Reply(f"Echo: {last_user}" if last_user else "Hello from the test server.")


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 refuses connections when a bench opens dozens at once


# -- request parsing --------------------------------------------------------------------------------

def _text_of(content: Any) -> str:
    """Text of a message's content: a string, or a list of parts (chat `text`, responses `input_text`)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _tool_name_and_params(tool: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool  # chat nests, responses not
    return str(fn.get("name", "tool")), fn.get("parameters") or {}


def _forced_tool(choice: Any, tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The tool a `tool_choice` names: chat's {"type": "function", "function": {"name"}} or responses' {"name"}."""
    if not isinstance(choice, dict):
        return None
    fn = choice.get("function")
    name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
    return next((t for t in tools if _tool_name_and_params(t)[0] == name), None)


def _example_value(schema: dict[str, Any]) -> Any:
    """A value that satisfies a (simple) JSON schema: enough for default tool-call arguments."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {key: _example_value(sub) for key, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    return "test"


def _default_tool_call(tool: dict[str, Any]) -> dict[str, str]:
    name, params = _tool_name_and_params(tool)
    return {"name": name, "arguments": json.dumps(_example_value({**params, "type": "object"}))}


def _count_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _words(text: str) -> list[str]:
    """Split into stream deltas that concatenate back to `text`."""
    parts = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


def _pieces(text: str, size: int = 7) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


# -- the handler ------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    server_state: OpenAIServer
    protocol_version = "HTTP/1.0"  # one request per connection: SSE bodies end when the connection closes

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        state = self.server_state
        state._record(RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        generation, failure = state._enter()
        try:
            if state.latency_s > 0:
                time.sleep(state.latency_s)
            if failure is not None:
                return self._error(failure.status, f"Simulated error {failure.status}.",
                                   retry_after=failure.retry_after)
            self._answer(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (a timeout test): nothing to answer
        finally:
            state._leave(generation)

    def _answer(self, body: Any) -> None:
        if not isinstance(body, dict):
            return self._error(400, "We could not parse the JSON body of your request.")
        model = str(body.get("model", ""))
        if model.startswith("error-"):
            status = int(model.removeprefix("error-") or 500)
            return self._error(status, f"Simulated error {status} for model {model!r}.")
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/chat/completions"):
            return self._chat(body, model)
        if path.endswith("/responses"):
            return self._responses(body, model)
        return self._error(404, f"Invalid URL (POST {self.path})")

    # -- plumbing ---------------------------------------------------------------------------------
    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{time.monotonic_ns():x}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, retry_after: float | None = None) -> None:
        kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        self._json(status, {"error": {"message": message, "type": kind, "param": None,
                                      "code": "simulated_error"}}, headers)

    def _sse(self, events: Iterator[tuple[str | None, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            for event, data in events:
                line = data if isinstance(data, str) else json.dumps(data)
                frame = (f"event: {event}\n" if event else "") + f"data: {line}\n\n"
                self.wfile.write(frame.encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client closed the stream before its end: what early-close tests do

    # -- chat completions -------------------------------------------------------------------------
    def _chat(self, body: dict[str, Any], model: str) -> None:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        last_user = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        tool_result_last = bool(messages) and messages[-1].get("role") == "tool"
        reply = self.server_state._next_reply(body, list(body.get("tools") or []), last_user, tool_result_last)
        served = SNAPSHOTS.get(model, model)
        completion_id = f"chatcmpl-{time.monotonic_ns():x}"
        calls = [{"id": f"call_{i}{time.monotonic_ns() % 10**8:08d}", "type": "function",
                  "function": {"name": c["name"], "arguments": c["arguments"]}}
                 for i, c in enumerate(reply.tool_calls)]
        finish = "tool_calls" if calls else "stop"
        prompt_tokens = _count_tokens(json.dumps(messages))
        completion_tokens = _count_tokens((reply.content or "") + (json.dumps(calls) if calls else ""))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens,
                 "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
        if not body.get("stream"):
            message = {"role": "assistant", "content": reply.content, "refusal": None, "annotations": []}
            if calls:
                message["tool_calls"] = calls
            return self._json(200, {
                "id": completion_id, "object": "chat.completion", "created": CREATED, "model": served,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage, "service_tier": "default", "system_fingerprint": "fp_evalstream",
            })
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self._sse(self._chat_chunks(completion_id, served, reply.content, calls, finish,
                                    usage if include_usage else None, fail=model == "stream-error"))

    @staticmethod
    def _chat_chunks(completion_id: str, model: str, content: str | None, calls: list[dict[str, Any]],
                     finish: str, usage: dict[str, Any] | None, fail: bool) -> Iterator[tuple[str | None, Any]]:
        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> tuple[None, dict[str, Any]]:
            data = {"id": completion_id, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                    "system_fingerprint": "fp_evalstream",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            if usage is not None:
                data["usage"] = None
            return None, data

        yield chunk({"role": "assistant", "content": "" if content is not None else None, "refusal": None})
        for piece in _words(content or "") if content else []:
            yield chunk({"content": piece})
            if fail:
                yield None, {"error": {"message": "The upstream model stopped responding.", "type": "server_error",
                                       "param": None, "code": "simulated_stream_error"}}
                return
        for index, call in enumerate(calls):
            yield chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                         "function": {"name": call["function"]["name"], "arguments": ""}}]})
            for piece in _pieces(call["function"]["arguments"]):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, finish)
        if usage is not None:
            yield None, {"id": completion_id, "object": "chat.completion.chunk", "created": CREATED,
                         "model": model, "system_fingerprint": "fp_evalstream", "choices": [], "usage": usage}
        yield None, "[DONE]"

    # -- responses --------------------------------------------------------------------------------
    def _responses(self, body: dict[str, Any], model: str) -> None:
        given = body.get("input")
        items = [{"role": "user", "content": given}] if isinstance(given, str) else list(given or [])
        last_user = next((_text_of(i.get("content")) for i in reversed(items)
                          if isinstance(i, dict) and i.get("role") == "user"), "")
        tool_result_last = bool(items) and isinstance(items[-1], dict) and \
            items[-1].get("type") == "function_call_output"
        reply = self.server_state._next_reply(body, list(body.get("tools") or []), last_user, tool_result_last)
        stamp = time.monotonic_ns()
        output: list[dict[str, Any]] = []
        if reply.content is not None:
            output.append({"type": "message", "id": f"msg_{stamp:x}", "status": "completed", "role": "assistant",
                           "content": [{"type": "output_text", "text": reply.content, "annotations": [],
                                        "logprobs": []}]})
        for i, call in enumerate(reply.tool_calls):
            output.append({"type": "function_call", "id": f"fc_{i}{stamp:x}", "call_id": f"call_{i}{stamp % 10**8}",
                           "name": call["name"], "arguments": call["arguments"], "status": "completed"})
        input_tokens = _count_tokens(json.dumps(items) + str(body.get("instructions") or ""))
        output_tokens = _count_tokens(json.dumps(output))
        response = {
            "id": f"resp_{stamp:x}", "object": "response", "created_at": CREATED, "status": "completed",
            "background": False, "error": None, "incomplete_details": None,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "model": SNAPSHOTS.get(model, model), "output": output, "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None}, "service_tier": "default", "store": True,
            "temperature": body.get("temperature", 1.0), "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0), "truncation": "disabled",
            "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": input_tokens + output_tokens},
            "user": None, "metadata": {},
        }
        if not body.get("stream"):
            return self._json(200, response)
        self._sse(self._response_events(response, fail=model == "stream-error"))

    @staticmethod
    def _response_events(response: dict[str, Any], fail: bool) -> Iterator[tuple[str | None, Any]]:
        sequence = iter(range(10**6))

        def event(kind: str, **data: Any) -> tuple[str, dict[str, Any]]:
            return kind, {"type": kind, "sequence_number": next(sequence), **data}

        pending = {**response, "status": "in_progress", "output": [], "usage": None}
        yield event("response.created", response=pending)
        yield event("response.in_progress", response=pending)
        for index, item in enumerate(response["output"]):
            if item["type"] == "message":
                text = item["content"][0]["text"]
                yield event("response.output_item.added", output_index=index,
                            item={**item, "status": "in_progress", "content": []})
                empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                yield event("response.content_part.added", item_id=item["id"], output_index=index, content_index=0,
                            part=empty)
                for piece in _words(text):
                    yield event("response.output_text.delta", item_id=item["id"], output_index=index,
                                content_index=0, delta=piece, logprobs=[])
                    if fail:
                        yield event("error", code="server_error", message="The upstream model stopped responding.",
                                    param=None)
                        failed = {**pending, "status": "failed",
                                  "error": {"code": "server_error",
                                            "message": "The upstream model stopped responding."}}
                        yield event("response.failed", response=failed)
                        return
                yield event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                            text=text, logprobs=[])
                yield event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                            part=item["content"][0])
            else:
                yield event("response.output_item.added", output_index=index,
                            item={**item, "status": "in_progress", "arguments": ""})
                for piece in _pieces(item["arguments"]):
                    yield event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                                delta=piece)
                yield event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                            name=item["name"], arguments=item["arguments"])
            yield event("response.output_item.done", output_index=index, item=item)
        yield event("response.completed", response=response)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the test OpenAI-compatible API in this process.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    server = OpenAIServer(args.host, args.port)
    server.latency_s = args.latency
    server.start()
    print(f"serving {server.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
