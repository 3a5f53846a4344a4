"""The Planner seam: given a step's request, return the model's raw reply.

``GLMPlanner`` talks to any OpenAI-compatible chat-completions endpoint over httpx,
with the provider's own parameters, transport retries (exponential backoff with jitter,
honouring Retry-After) and HTTP errors mapped to our exceptions in one place
(``_raise_for_status``). ``ScriptedPlanner`` is the fake that ships in the package: a
queue of replies that records every call; dry runs, replay and tests use it.

Planners return *raw* replies; the loop parses them, so a scripted replay of recorded
replies goes through today's parser exactly like a live run.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

import httpx

from agent.config import Settings
from agent.errors import AuthRejected, EndpointError, Interrupted, UsageError
from agent.protocol import RawReply, StepRequest, build_body

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})


@dataclass
class PlannerResult:
    """A raw reply plus what it took to get it."""

    raw: RawReply
    prompt_text: str = ""
    estimated_tokens: int = 0
    history_images: int = 0
    latency_s: float = 0.0
    transport_retries: list[str] = field(default_factory=list)  # one note per retried attempt
    protocol: str = "text"


class Planner(Protocol):
    """Decides the next action for a step (by asking a model, or a script)."""

    def decide(self, request: StepRequest) -> PlannerResult:
        """Return the raw reply for ``request``; raise EndpointError when the endpoint fails."""
        ...


class GLMPlanner:
    """GLM-4.5V over an OpenAI-compatible endpoint (SiliconFlow, Z.ai, OpenRouter, vLLM...)."""

    def __init__(
        self,
        settings: Settings,
        transport: httpx.BaseTransport | None = None,
        stop_event: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        scrub: Callable[[str], str] | None = None,
    ) -> None:
        self.settings = settings
        self.use_tools = settings.protocol in ("auto", "tools")
        self._stop = stop_event
        self._sleep = sleep
        headers = {"Content-Type": "application/json"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        try:
            self._client = httpx.Client(
                base_url=settings.base_url, headers=headers, timeout=timeout, transport=transport
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise UsageError(f"bad --base-url {settings.base_url!r}: {exc}") from None

    def close(self) -> None:
        self._client.close()

    def decide(self, request: StepRequest) -> PlannerResult:
        body, message = build_body(request, self.settings, self.use_tools)
        started = time.monotonic()
        try:
            data, notes = self._post(body)
        except _ToolsRejected:
            # A server without a tool parser (e.g. vLLM without --enable-auto-tool-choice)
            # rejects tools: fall back to the trained text format for the rest of the run.
            self.use_tools = False
            body, message = build_body(request, self.settings, False)
            data, notes = self._post(body)
            notes.insert(0, "tools rejected by the server: switched to the text protocol")
        raw = RawReply.from_completion(data)
        return PlannerResult(
            raw,
            message.prompt_text,
            message.estimated_tokens,
            message.history_images,
            time.monotonic() - started,
            notes,
            "tools" if self.use_tools and request.grounding is None else "text",
        )

    def _post(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """POST with retries; returns the decoded JSON and a note per retried attempt."""
        notes: list[str] = []
        attempts = self.settings.max_retries + 1
        for attempt in range(attempts):
            self._check_stop()
            retry_after: float | None = None
            try:
                response = self._client.post("/chat/completions", json=body)
            except httpx.TimeoutException as exc:
                problem = f"timeout ({type(exc).__name__})"
            except httpx.TransportError as exc:
                problem = f"connection error ({exc})"
            else:
                if response.status_code < 400:
                    try:
                        return response.json(), notes
                    except ValueError:
                        problem = f"HTTP {response.status_code} with a body that is not JSON"
                elif response.status_code in RETRY_STATUS:
                    problem = f"HTTP {response.status_code}"
                    retry_after = _retry_after(response)
                else:
                    self._raise_for_status(response, body)
            if attempt == attempts - 1:
                raise EndpointError(
                    f"the model endpoint {self.settings.base_url} failed {attempts} times "
                    f"(last: {problem}); check the URL, the network and the provider's status"
                )
            delay = retry_after if retry_after is not None else min(30.0, 0.5 * 2**attempt)
            delay = delay * (1 + 0.25 * random.random())
            notes.append(f"{problem}; retrying in {delay:.1f}s")
            self._wait(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_for_status(self, response: httpx.Response, body: dict[str, Any]) -> None:
        """Map a non-retryable HTTP error to our own exception (the one place that does)."""
        status = response.status_code
        message = _server_message(response)
        if status in (401, 403):
            raise AuthRejected(
                f"the key was rejected by {self.settings.provider} (HTTP {status}: {message}); "
                f"check {self.settings.preset.key_env or 'DESKPILOT_API_KEY'}"
            )
        if status == 400 and "tools" in body and self.settings.protocol == "auto" and _about_tools(message):
            raise _ToolsRejected(message)
        if status == 404:
            raise EndpointError(
                f"HTTP 404 from {self.settings.base_url}/chat/completions ({message}): "
                f"check --base-url and --model (now {self.settings.model!r})"
            )
        raise EndpointError(f"the model endpoint answered HTTP {status}: {message}")

    def _check_stop(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise Interrupted("stopped while waiting for the model")

    def _wait(self, seconds: float) -> None:
        if self._stop is not None:
            if self._stop.wait(seconds):
                raise Interrupted("stopped while waiting for the model")
        else:
            self._sleep(seconds)


class _ToolsRejected(Exception):
    pass


def _about_tools(message: str) -> bool:
    lowered = message.lower()
    return "tool" in lowered or "function" in lowered


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, min(60.0, float(value)))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _server_message(response: httpx.Response) -> str:
    """The server's own error message, short, from the usual JSON shapes or the text."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            text = error.get("message") or error.get("msg") or data.get("message")
            if text:
                return str(text)[:300]
        elif isinstance(error, str):
            return error[:300]
    return str(data)[:300]


Scripted = Union[RawReply, str, dict, Callable[[StepRequest], Any]]


class ScriptedPlanner:
    """A planner that answers from a queue: RawReply, content string, completion/message
    dict, or a function of the request returning any of those. Records every call.

    ``repeat_last`` keeps answering with the last reply once the queue is empty.
    """

    def __init__(self, replies: list[Scripted], repeat_last: bool = False) -> None:
        self.replies = list(replies)
        self.repeat_last = repeat_last
        self.calls: list[StepRequest] = []
        self._last: Scripted | None = None

    def decide(self, request: StepRequest) -> PlannerResult:
        self.calls.append(request)
        if self.replies:
            item = self._last = self.replies.pop(0)
        elif self.repeat_last and self._last is not None:
            item = self._last
        else:
            raise EndpointError(f"the scripted planner has no reply left for step {request.step}")
        if callable(item) and not isinstance(item, (RawReply, str, dict)):
            item = item(request)
        return PlannerResult(to_raw_reply(item), protocol="scripted")

    def assert_complete(self) -> None:
        """Fail if scripted replies were left unused."""
        if self.replies:
            raise AssertionError(f"{len(self.replies)} scripted replies were never asked for")


def to_raw_reply(item: Any) -> RawReply:
    if isinstance(item, RawReply):
        return item
    if isinstance(item, str):
        return RawReply(content=item)
    if isinstance(item, dict):
        if "choices" in item:
            return RawReply.from_completion(item)
        if "content" in item or "tool_calls" in item:  # a message
            return RawReply.from_completion({"choices": [{"message": item}]})
        return RawReply.model_validate(item)
    raise TypeError(f"cannot turn {type(item).__name__} into a reply")
