"""The Planner seam: given a step's request, return the model's raw reply.

``GLMPlanner`` talks to any OpenAI-compatible chat-completions endpoint over httpx,
with the provider's own parameters, transport retries (exponential backoff with jitter,
honouring Retry-After) and HTTP errors mapped to our exceptions in one place
(``_raise_for_status``). A 200 that is not a chat completion is retried like a 5xx. Each
request is bounded as a whole (``--timeout``), the run's deadline bounds all of them, and
server messages are scrubbed of secrets before they are cut. ``ScriptedPlanner`` is the fake that ships in the package: a
queue of replies that records every call; dry runs, replay and tests use it.

Planners return *raw* replies; the loop parses them, so a scripted replay of recorded
replies goes through today's parser exactly like a live run.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol, Union

import httpx

from agent.config import Settings
from agent.errors import (
    AuthRejected,
    EndpointError,
    Interrupted,
    MalformedCompletion,
    TimeBudgetExceeded,
    UsageError,
)
from agent.parsing import ActionWatch, ParsedReply
from agent.protocol import MAX_TOOL_CALLS, RawReply, StepRequest, build_body, estimate_text_tokens, text_of
from agent.text import printable

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})
MAX_BODY_BYTES = 32 * 2**20  # a reply body larger than this is an endpoint problem (replies are capped anyway)
MAX_SERVER_MESSAGE = 300  # characters of a server's error message shown, after scrubbing
_DEADLINE_SLACK_S = 0.05  # a deadline this close counts as reached: no request fits in it


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
    ttft_s: float | None = None  # streamed: from the request that answered to its first token
    action_s: float | None = None  # streamed: ... to the moment its action was complete (None: only at the end)
    total_s: float | None = None  # ... to the end of the reply


OnAction = Callable[[ParsedReply], None]


class Planner(Protocol):
    """Decides the next action for a step (by asking a model, or a script)."""

    def decide(self, request: StepRequest, on_action: OnAction | None = None) -> PlannerResult:
        """Return the raw reply for ``request``; raise EndpointError when the endpoint fails.

        A streaming planner calls ``on_action`` (at most once) as soon as the reply's action is
        complete, while the rest of the reply still arrives; after that it never asks again for
        this request (a stream that breaks then is returned as far as it came)."""
        ...


class GLMPlanner:
    """GLM-4.5V over an OpenAI-compatible endpoint (SiliconFlow, Z.ai, OpenRouter, vLLM...).

    Every request is bounded as a whole: the reply is read in chunks against a clock, so a
    server that drips its body still ends the request after about ``read_timeout`` seconds
    (then it counts as a timeout and is retried). A request's ``deadline`` (the run's
    --max-time) bounds everything: no request, retry or backoff sleep goes past it, and
    reaching it raises TimeBudgetExceeded. Server error messages are scrubbed (``scrub``,
    then this planner's own key, plain and JSON-escaped) before they are cut or shown.
    """

    def __init__(
        self,
        settings: Settings,
        transport: httpx.BaseTransport | None = None,
        stop_event: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        scrub: Callable[[str], str] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.use_tools = settings.protocol in ("auto", "tools")
        self.stream = settings.stream
        self.on_text = on_text  # gets the thought so far as a reply streams (the CLI's live line)
        self._last_exchange_s: float | None = None
        self._stop = stop_event
        self._sleep = sleep
        self._scrub = scrub
        headers = {"Content-Type": "application/json"}
        key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        forms = {key, json.dumps(key)[1:-1], json.dumps(key, ensure_ascii=False)[1:-1], key.replace("/", "\\/")}
        self._key_forms = sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        try:
            self._client = httpx.Client(
                base_url=settings.base_url, headers=headers, timeout=timeout, transport=transport
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise UsageError(f"bad --base-url {settings.base_url!r}: {exc}") from None

    def close(self) -> None:
        self._client.close()

    def decide(self, request: StepRequest, on_action: OnAction | None = None) -> PlannerResult:
        started = time.monotonic()
        notes: list[str] = []
        while True:
            body, message = build_body(request, self.settings, self.use_tools, stream=self.stream)
            live = _Live(message.estimated_tokens, on_action, self.on_text) if self.stream else None
            try:
                raw = self._post(body, request.deadline, live, notes)
            except _ToolsRejected:
                # A server without a tool parser (e.g. vLLM without --enable-auto-tool-choice)
                # rejects tools: fall back to the trained text format for the rest of the run.
                self.use_tools = False
                notes.append("tools rejected by the server: switched to the text protocol")
                continue
            except _StreamRejected:
                self.stream = False  # remembered for the run
                notes.append("streaming refused by the server: whole replies for the rest of the run")
                continue
            break
        return PlannerResult(
            raw,
            message.prompt_text,
            message.estimated_tokens,
            message.history_images,
            time.monotonic() - started,
            notes,
            "tools" if self.use_tools and request.grounding is None else "text",
            *(live.timings() if live is not None and live.streamed else (None, None, self._last_exchange_s)),
        )

    def _post(self, body: dict[str, Any], deadline: float | None, live: _Live | None, notes: list[str]) -> RawReply:
        """POST with retries, adding a note per retried attempt to ``notes``. Once ``live`` has handed
        the action out, a failure is not retried: the reply so far is returned."""
        attempts = self.settings.max_retries + 1
        problem = ""
        for attempt in range(attempts):
            self._check_stop()
            limit = self.settings.read_timeout
            if deadline is not None:
                limit = min(limit, deadline - time.monotonic())
                if limit <= 0:
                    raise _time_budget(problem)
            retry_after: float | None = None
            if live is not None:
                live.reset()
            try:
                status, headers, data = self._exchange(body, limit, live)
            except _Overtime:
                problem = f"timeout (no complete reply within {limit:.1f}s)"
            except httpx.TimeoutException as exc:
                problem = f"timeout ({type(exc).__name__})"
            except _TooLarge:
                problem = f"a reply body over {MAX_BODY_BYTES // 2**20} MB"
            except httpx.TransportError as exc:
                problem = self._clean(f"connection error ({exc})")
            except MalformedCompletion as exc:  # a broken stream
                problem = f"a broken stream: {exc}"
            else:
                if status < 400:
                    try:
                        completion = data if isinstance(data, dict) else self._completion(data)
                        return RawReply.from_completion(completion)
                    except MalformedCompletion as exc:
                        problem = f"HTTP {status}, but {exc}"
                elif status in RETRY_STATUS:
                    problem = f"HTTP {status}: {self._message(data, _reason(status))}"
                    retry_after = _retry_after(headers)
                else:
                    message = self._message(data, _reason(status))
                    if status in (400, 422) and body.get("stream") and "stream" in message.lower():
                        raise _StreamRejected(message)
                    self._raise_for_status(status, message, body)
            if live is not None and live.action_at is not None:
                # the action is out (and may be running): never ask again; keep what came
                notes.append(f"{problem}; the stream broke after the action was complete: kept the reply so far")
                live.finish = live.finish or "error"
                return RawReply.from_completion(live.completion())
            if deadline is not None and deadline - time.monotonic() < _DEADLINE_SLACK_S:
                raise _time_budget(problem)
            if attempt == attempts - 1:
                raise EndpointError(
                    f"the model endpoint {self.settings.base_url} failed {attempts} times "
                    f"(last: {problem}); check the URL, the network and the provider's status"
                )
            delay = retry_after if retry_after is not None else min(30.0, 0.5 * 2**attempt)
            delay = delay * (1 + 0.25 * random.random())
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise _time_budget(problem)
            notes.append(f"{problem}; retrying in {delay:.1f}s")
            self._wait(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(
        self, body: dict[str, Any], limit: float, live: _Live | None
    ) -> tuple[int, httpx.Headers, bytes | dict[str, Any]]:
        """One POST that lasts at most about ``limit`` seconds in all: the body is read chunk by
        chunk against the clock (httpx's read timeout alone is per read, so a stalled stream is a
        timeout too). A 2xx event stream is read by ``live`` into an assembled completion."""
        started = time.monotonic()
        until = started + limit
        timeout = httpx.Timeout(limit, connect=min(self.settings.connect_timeout, limit))
        try:
            with self._client.stream("POST", "/chat/completions", json=body, timeout=timeout) as response:
                ctype = response.headers.get("content-type", "")
                if live is not None and response.status_code < 400 and ctype.startswith("text/event-stream"):
                    return response.status_code, response.headers, live.read(response, until, started, self._clean)
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise _TooLarge()
                    chunks.append(chunk)
                    if time.monotonic() > until:
                        raise _Overtime()
                return response.status_code, response.headers, b"".join(chunks)
        finally:
            self._last_exchange_s = time.monotonic() - started

    def _completion(self, data: bytes) -> Any:
        """The JSON of a 2xx body; a body that is not JSON, or an error object, is a MalformedCompletion."""
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            raise MalformedCompletion("the body is not JSON") from None
        if isinstance(value, dict) and "choices" not in value and value.get("error"):
            raise MalformedCompletion(f"the body is an error: {self._clean(_message_text(value))}")
        return value

    def _message(self, data: bytes | dict[str, Any], reason: str) -> str:
        """The server's own error message from the usual JSON shapes or the text: scrubbed, then cut."""
        if isinstance(data, dict):
            return self._clean(_message_text(data)) or reason
        try:
            text = _message_text(json.loads(data))
        except (ValueError, RecursionError):
            text = data.decode("utf-8", errors="replace").strip()
        return self._clean(text) or reason

    def _clean(self, text: str) -> str:
        """Secrets out first (the run's scrubber, then this planner's key), then cut for a person to read."""
        if self._scrub is not None:
            text = self._scrub(text)
        for form in self._key_forms:
            text = text.replace(form, "***")
        return printable(text, limit=MAX_SERVER_MESSAGE)

    def _raise_for_status(self, status: int, message: str, body: dict[str, Any]) -> None:
        """Map a non-retryable HTTP error to our own exception (the one place that does)."""
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


class _Live:
    """One streamed reply as it arrives (server-sent events, GLM45V.md "Streaming"): the pieces of
    content, reasoning and tool calls joined, the action handed to ``on_action`` the moment an
    ``ActionWatch`` sees it complete, the thought so far to ``on_text``, and the times of the first
    token, the complete action and the end. ``completion()`` is the whole reply as the chat completion
    a non-streaming request would have returned (usage estimated when the provider sent none)."""

    def __init__(self, prompt_tokens: int, on_action: OnAction | None, on_text: Callable[[str], None] | None) -> None:
        self.prompt_tokens = prompt_tokens
        self.on_action = on_action
        self.on_text = on_text
        self.action_at: float | None = None  # survives reset(): once out, the action stays out
        self.streamed = False
        self.reset()

    def reset(self) -> None:
        """Forget a failed attempt's pieces (never the action already handed out)."""
        self.watch = ActionWatch()
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.started = time.monotonic()
        self.first_at: float | None = None
        self.end_at: float | None = None
        self.choice_seen = False

    def read(
        self, response: httpx.Response, until: float, started: float, clean: Callable[[str], str]
    ) -> dict[str, Any]:
        self.started, self.streamed = started, True
        size = 0
        for line in response.iter_lines():
            size += len(line) + 1
            if size > MAX_BODY_BYTES:
                raise _TooLarge()
            if time.monotonic() > until:
                raise _Overtime()
            if not line.startswith("data:"):
                continue  # blank separators, ": keep-alive" comments, event: and id: fields
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            try:
                chunk = json.loads(payload)
            except (ValueError, RecursionError):
                raise MalformedCompletion("a stream event is not JSON") from None
            if not isinstance(chunk, dict):
                raise MalformedCompletion(f"a stream event is a JSON {type(chunk).__name__}, not an object")
            if chunk.get("error"):
                raise MalformedCompletion(f"the stream ended in an error: {clean(_message_text(chunk))}")
            self._add(chunk)
        self.end_at = time.monotonic()
        if not self.choice_seen:
            raise MalformedCompletion("the stream has no choices")
        return self.completion()

    def _add(self, chunk: dict[str, Any]) -> None:
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            if choices is None:
                return
            raise MalformedCompletion("a stream event's choices is not a list")
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # only the first choice is read, as in a whole reply
            self.choice_seen = True
            if isinstance(choice.get("finish_reason"), str):
                self.finish = choice["finish_reason"]
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta)

    def _delta(self, delta: dict[str, Any]) -> None:
        found: ParsedReply | None = None
        got = False
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self.reasoning.append(reasoning)
            got = True
        content = delta.get("content")
        try:
            content = text_of(content)
        except ValueError:
            raise MalformedCompletion("a stream event's content is not text") from None
        if content:
            self.content.append(content)
            found = self.watch.feed_content(content)
            got = True
        pieces = delta.get("tool_calls")
        if isinstance(pieces, list):
            for position, piece in enumerate(pieces):
                if isinstance(piece, dict):
                    got = self._tool_piece(piece, position) or got
            first = self.calls[min(self.calls)] if self.calls else None
            if found is None and first is not None and isinstance(first["function"]["arguments"], str):
                found = self.watch.feed_tool_call(first["function"]["name"], first["function"]["arguments"])
        now = time.monotonic()
        if got and self.first_at is None:
            self.first_at = now
        if found is not None and self.action_at is None:
            self.action_at = now
            if self.on_action is not None:
                self.on_action(found)
        if got and self.on_text is not None:
            self.on_text("".join(self.content) or "".join(self.reasoning))

    def _tool_piece(self, piece: dict[str, Any], position: int) -> bool:
        index = piece.get("index", position)
        if not isinstance(index, int) or (index not in self.calls and len(self.calls) > MAX_TOOL_CALLS):
            return False
        call = self.calls.setdefault(index, {"type": "function", "function": {"name": "", "arguments": ""}})
        for key in ("id", "type"):
            if isinstance(piece.get(key), str):
                call[key] = piece[key]
        function = piece.get("function")
        if not isinstance(function, dict):
            return False
        if isinstance(function.get("name"), str):
            call["function"]["name"] += function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and isinstance(call["function"]["arguments"], str):
            call["function"]["arguments"] += arguments
        elif isinstance(arguments, dict):  # Z.ai sends an object
            call["function"]["arguments"] = arguments
        return True

    def completion(self) -> dict[str, Any]:
        """The reply so far as a chat completion (the shape RawReply.from_completion reads)."""
        content, reasoning = "".join(self.content), "".join(self.reasoning)
        message: dict[str, Any] = {"role": "assistant", "content": content or None}
        if reasoning:
            message["reasoning_content"] = reasoning
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        usage = self.usage
        if not isinstance(usage, dict) or not usage.get("completion_tokens"):
            arguments = "".join(json.dumps(c["function"]["arguments"]) for c in self.calls.values())
            usage = {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": estimate_text_tokens(content + reasoning + arguments),
            }
        return {"choices": [{"message": message, "finish_reason": self.finish}], "usage": usage, "model": self.model}

    def timings(self) -> tuple[float | None, float | None, float | None]:
        """Seconds from the request to the first token, to the complete action, to the end of the reply."""

        def since(at: float | None) -> float | None:
            return None if at is None else round(at - self.started, 4)

        return since(self.first_at), since(self.action_at), since(self.end_at or time.monotonic())


class _ToolsRejected(Exception):
    pass


class _StreamRejected(Exception):
    pass


class _Overtime(Exception):
    """The reply was still arriving when the request's time was up."""


class _TooLarge(Exception):
    """The reply body passed MAX_BODY_BYTES."""


def _time_budget(problem: str) -> TimeBudgetExceeded:
    last = f" (last: {problem})" if problem else ""
    return TimeBudgetExceeded(f"the time budget ran out while waiting for the model{last}")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "no message"


def _about_tools(message: str) -> bool:
    lowered = message.lower()
    return "tool" in lowered or "function" in lowered


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, min(60.0, float(value)))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _message_text(data: Any) -> str:
    """The message of an error body in the usual JSON shapes (not cut: secrets are scrubbed first)."""
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            text = error.get("message") or error.get("msg") or data.get("message")
            if text:
                return str(text)
        elif isinstance(error, str):
            return error
    return json.dumps(data, ensure_ascii=False)


Scripted = Union[RawReply, str, dict, Callable[[StepRequest], Any]]


class ScriptedPlanner:
    """A planner that answers from a queue: RawReply, content string, completion/message
    dict, or a function of the request returning any of those. Records every call.
    """

    def __init__(self, replies: Sequence[Scripted]) -> None:
        self.replies = list(replies)
        self.calls: list[StepRequest] = []

    def decide(self, request: StepRequest, on_action: OnAction | None = None) -> PlannerResult:
        """The next scripted reply (never streamed: ``on_action`` is not called)."""
        self.calls.append(request)
        if self.replies:
            item = self.replies.pop(0)
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
