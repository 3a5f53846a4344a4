"""A small OpenAI-compatible chat-completions server on 127.0.0.1, for tests and demos.

It speaks real HTTP, so the whole client path (httpx, headers, JSON, retries) is
exercised. What it answers is up to a *brain*: a function of the request body that
returns a reply in any of these forms:

* a string: the message content;
* a dict with ``content`` and/or ``tool_calls`` (a message), or a full completion;
* a ``FakeHTTP(status, body, headers, delay_s, drip_s)`` for fault injection (429, 500, hangs,
  a body dripped one byte every ``drip_s`` seconds...).

A request with ``"stream": true`` is answered with server-sent events (GLM45V.md "Streaming"):
the reply cut into word-sized tokens (``tokens``), reasoning first, then content, then each tool
call's arguments in pieces, timed by a ``StreamProfile`` (first token after ``first_token_s``, then
``tokens_per_s``; a whole reply is sent after as long as its stream would take), the usage in a last chunk when ``stream_options.include_usage`` asks for it.
``refuse_stream=True`` makes it answer such requests with a 400 instead, like servers without streaming.

Every request body is kept in ``requests`` for assertions. ``images_in`` decodes the
data-URL images of a request, so a brain can look at the screenshot it was sent.

    with FakeModelServer(brain) as server:
        settings = Settings.resolve("vllm", base_url=server.base_url)
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image


@dataclass
class FakeHTTP:
    """A raw HTTP answer, for injecting faults."""

    status: int
    body: Any = None  # dict -> JSON, str -> text, None -> empty
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait before answering
    drip_s: float = 0.0  # send the body one byte at a time, this long apart (a server that never quite stops)


Brain = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class StreamProfile:
    """How fast a streamed reply comes: the first token after ``first_token_s``, then ``tokens_per_s``."""

    first_token_s: float = 0.0
    tokens_per_s: float = 0.0  # 0: as fast as the socket takes them

    def duration(self, events: int) -> float:
        """Seconds until the last of ``events`` chunks is sent (a whole reply waits this long too)."""
        return self.first_token_s + (events / self.tokens_per_s if self.tokens_per_s else 0.0)


def tokens(text: str) -> list[str]:
    """Text cut into word-sized tokens (a word with the space after it; a special token alone)."""
    return re.findall(r"<\|[a-z_]+\|>|\s*[^\s<]+\s*|\s+|<", text)


def stream_events(completion: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """The chunks (``chat.completion.chunk``) of a completion, one token each."""
    choices = completion.get("choices")
    choice: dict[str, Any] = (
        choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    )
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    base = {
        "id": completion.get("id", "chatcmpl-fake"),
        "object": "chat.completion.chunk",
        "model": completion.get("model"),
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    if not choice:  # a reply without choices streams as chunks without choices
        return [{**base, "choices": []}] + (
            [{**base, "choices": [], "usage": completion["usage"]}] if include_usage and completion.get("usage") else []
        )
    events = [chunk({"role": "assistant", "content": ""})]
    for field_name in ("reasoning_content", "reasoning", "content"):
        text = message.get(field_name)
        if isinstance(text, str):
            events += [chunk({field_name: piece}) for piece in tokens(text)]
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function", {})
        arguments = function.get("arguments", "")
        arguments = arguments if isinstance(arguments, str) else json.dumps(arguments)
        head = {"index": index, "id": call.get("id", f"call_{index}"), "type": "function"}
        events.append(chunk({"tool_calls": [{**head, "function": {"name": function.get("name"), "arguments": ""}}]}))
        events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]}) for p in tokens(arguments)]
    events.append(chunk({}, choice.get("finish_reason") or "stop"))
    if include_usage and completion.get("usage"):
        events.append({**base, "choices": [], "usage": completion["usage"]})
    return events


def images_in(body: dict[str, Any]) -> list[Image.Image]:
    """Decode every data-URL image of a chat-completions request, in order."""
    images = []
    for message in body.get("messages", []):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if part.get("type") == "image_url":
                url = part["image_url"]["url"]
                data = base64.b64decode(url.split(",", 1)[1])
                images.append(Image.open(io.BytesIO(data)).convert("RGB"))
    return images


def completion(reply: Any, model: str = "fake-glm") -> dict[str, Any]:
    """Wrap a brain's reply into an OpenAI chat completion."""
    if isinstance(reply, dict) and "choices" in reply:
        return reply
    message = {"role": "assistant", "content": reply} if isinstance(reply, str) else {"role": "assistant", **reply}
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    content = message.get("content") or ""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": 1000,
            "completion_tokens": max(1, len(content) // 4),
            "total_tokens": 1000 + max(1, len(content) // 4),
        },
    }


class FakeModelServer:
    """Serves POST */chat/completions and GET */models on 127.0.0.1 in a thread."""

    def __init__(
        self,
        brain: Brain,
        host: str = "127.0.0.1",
        port: int = 0,
        profile: StreamProfile | None = None,
        refuse_stream: bool = False,
    ) -> None:
        self.brain = brain
        self.profile = profile or StreamProfile()
        self.refuse_stream = refuse_stream
        self.finished: list[float] = []  # time.time() (wall clock) when each streamed reply was fully sent
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "fake-glm", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(400, {"error": {"message": "body is not JSON"}})
                    return
                with server._lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                try:
                    reply = server.brain(body)
                except Exception as exc:  # a broken brain is a 500, like a broken server
                    self._send(500, {"error": {"message": f"fake brain failed: {exc!r}"}})
                    return
                if isinstance(reply, FakeHTTP):
                    if reply.delay_s:
                        time.sleep(reply.delay_s)
                    self._send(reply.status, reply.body, reply.headers, reply.drip_s)
                elif body.get("stream") is True and server.refuse_stream:
                    self._send(400, {"error": {"message": "stream is not supported by this server"}})
                elif body.get("stream") is True:
                    options = body.get("stream_options") or {}
                    self._stream(completion(reply, body.get("model", "fake-glm")), bool(options.get("include_usage")))
                else:
                    whole = completion(reply, body.get("model", "fake-glm"))
                    if server.profile != StreamProfile():  # generated (as long as its stream would take), then sent
                        time.sleep(server.profile.duration(len(stream_events(whole, False))))
                    self._send(200, whole)

            def _stream(self, reply: dict[str, Any], include_usage: bool) -> None:
                profile = server.profile
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-cache")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    started = time.monotonic()
                    for n, event in enumerate(stream_events(reply, include_usage)):
                        due = (
                            started + profile.first_token_s + (n / profile.tokens_per_s if profile.tokens_per_s else 0)
                        )
                        time.sleep(max(0.0, due - time.monotonic()))
                        self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                    with server._lock:
                        server.finished.append(time.time())
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None, drip_s: float = 0.0) -> None:
                if isinstance(body, (dict, list)):
                    data, ctype = json.dumps(body).encode(), "application/json"
                else:
                    data, ctype = (body or "").encode(), "text/plain"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    if drip_s:
                        for i in range(len(data)):
                            self.wfile.write(data[i : i + 1])
                            self.wfile.flush()
                            time.sleep(drip_s)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to tell it

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> FakeModelServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
