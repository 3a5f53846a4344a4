"""A small OpenAI-compatible chat-completions server on 127.0.0.1, for tests and demos.

It speaks real HTTP, so the whole client path (httpx, headers, JSON, retries) is
exercised. What it answers is up to a *brain*: a function of the request body that
returns a reply in any of these forms:

* a string: the message content;
* a dict with ``content`` and/or ``tool_calls`` (a message), or a full completion;
* a ``FakeHTTP(status, body, headers, delay_s, drip_s)`` for fault injection (429, 500, hangs,
  a body dripped one byte every ``drip_s`` seconds...).

Every request body is kept in ``requests`` for assertions. ``images_in`` decodes the
data-URL images of a request, so a brain can look at the screenshot it was sent.

    with FakeModelServer(brain) as server:
        settings = Settings.resolve("vllm", base_url=server.base_url)
"""

from __future__ import annotations

import base64
import io
import json
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

    def __init__(self, brain: Brain, host: str = "127.0.0.1", port: int = 0) -> None:
        self.brain = brain
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
                else:
                    self._send(200, completion(reply, body.get("model", "fake-glm")))

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
