"""The wire format: building one chat-completions request per step, and reading the reply.

Request: ONE user message per step in the trained layout (task, platform, action space,
history as text lines with the most recent screenshots at half size and older ones
marked omitted, the Memory list, the output format, the current full-size screenshot
last), plus each provider's own parameters exactly as GLM45V.md gives them. The request
is kept inside the model's 64K context by dropping the oldest history shots, then the
oldest history lines.

A zoom request (``StepRequest.grounding`` set, see ``agent.zoom``) is a short grounding
message instead: the task, the element to point at again, and the crop of the screen
(``prompts/zoom.md``), with no history, no Memory and no tools (its answer is one point).

Reply: ``RawReply`` keeps what the server said (content, reasoning, tool calls, finish
reason, usage), each text capped at MAX_REPLY_CHARS (``cut`` says what was cut), after
checking that the JSON is a chat completion at all (``MalformedCompletion`` if not: an
endpoint problem, retried by the planner). Parsing it into an action lives in ``agent.parsing``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

import prompts
from actions.schema import action_space_text, offered_kinds, tool_schemas
from agent.config import Settings
from agent.errors import MalformedCompletion
from agent.image import SentImage

CONTEXT_TOKENS = 65_536
CONTEXT_MARGIN = 1_024  # chat template, special tokens, our estimate's error
CHARS_PER_TOKEN = 3.0  # conservative for English prompt text; CJK is counted per char


@dataclass(frozen=True)
class HistoryEntry:
    """One earlier step as the model sees it again."""

    step: int
    thought: str
    action_text: str
    image: SentImage | None  # half-size screenshot, or None once it is too old
    result: str = ""  # e.g. an execution note


@dataclass(frozen=True)
class GroundingAsk:
    """A zoom request: point again at ``element`` in a crop of the screen."""

    element: str  # the element_info of the first answer (or its thought)
    kind: str  # the first answer's action, e.g. left_click: the reply repeats it
    crop_size: tuple[int, int]  # the crop in image pixels (the screenshot is it, enlarged)


@dataclass
class StepRequest:
    """What the planner is asked at one step (and one retry), or, with ``grounding``, the
    step's zoom request (``screenshot`` is then the crop as sent)."""

    task: str
    step: int
    screenshot: SentImage
    history: list[HistoryEntry] = field(default_factory=list)
    memory: list[Any] = field(default_factory=list)
    feedback: str | None = None  # what was wrong with the previous reply, on a retry
    no_thinking: bool = False  # thinking starved the answer last time: switch it off
    ask_user: bool = False  # call_user is offered: someone can answer
    deadline: float | None = None  # time.monotonic() by which the planner must answer (the run's --max-time)
    grounding: GroundingAsk | None = None  # a zoom request: point again at one element


MAX_REPLY_CHARS = 1_000_000  # content, reasoning and each tool call's arguments are cut here
MAX_TOOL_CALLS = 16  # tool calls kept from one reply (the parser reads the first)


class RawReply(BaseModel):
    """What the server answered, kept verbatim for the recording and for replay (capped: see ``cut``)."""

    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str | None = None
    cut: list[str] | None = None  # what was cut at MAX_REPLY_CHARS, e.g. ["content", "tool_calls[0].arguments"]

    @classmethod
    def from_completion(cls, data: Any) -> RawReply:
        """Read an OpenAI-style chat completion (with each provider's reasoning field).

        Raises MalformedCompletion naming the problem when ``data`` is not a chat completion
        with at least one choice holding a message object."""
        if not isinstance(data, dict):
            raise MalformedCompletion(f"the reply is a JSON {type(data).__name__}, not a chat completion object")
        if not data.get("choices") and isinstance(data.get("choices"), (list, type(None))):
            raise MalformedCompletion("the reply has no choices")
        try:
            completion = _Completion.model_validate(data)
        except ValidationError as exc:
            raise MalformedCompletion(f"the reply is not a chat completion: {_shape_problem(exc)}") from None
        choice = completion.choices[0]
        message = choice.message
        cut: list[str] = []

        def capped(text: str | None, name: str) -> str | None:
            if text is not None and len(text) > MAX_REPLY_CHARS:
                cut.append(name)
                return text[:MAX_REPLY_CHARS]
            return text

        reasoning = next((r for r in (message.reasoning_content, message.reasoning) if isinstance(r, str) and r), None)
        content, reasoning = capped(message.content, "content"), capped(reasoning, "reasoning")
        calls = data["choices"][0]["message"].get("tool_calls") or []
        if len(calls) > MAX_TOOL_CALLS:
            cut.append("tool_calls")
        tool_calls = [_capped_call(call, f"tool_calls[{i}]", capped) for i, call in enumerate(calls[:MAX_TOOL_CALLS])]
        usage = completion.usage or _Usage()
        return cls(
            content=content,
            reasoning=reasoning,
            tool_calls=tool_calls or None,
            finish_reason=choice.finish_reason if isinstance(choice.finish_reason, str) else None,
            prompt_tokens=max(0, usage.prompt_tokens or 0),
            completion_tokens=max(0, usage.completion_tokens or 0),
            model=completion.model if isinstance(completion.model, str) else None,
            cut=cut or None,
        )


def _capped_call(call: dict[str, Any], name: str, capped: Callable[[str | None, str], str | None]) -> dict[str, Any]:
    """The tool call as sent, its arguments string cut at MAX_REPLY_CHARS."""
    function = call.get("function")
    if isinstance(function, dict) and isinstance(function.get("arguments"), str):
        arguments = capped(function["arguments"], f"{name}.arguments")
        if arguments is not function["arguments"]:
            return {**call, "function": {**function, "arguments": arguments}}
    return call


def text_of(value: Any) -> Any:
    """Message content as one string: a list of parts (``[{"type": "text", "text": ...}, ...]``) is joined."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str) and part.get("type", "text") in ("text", "output_text"):
                    texts.append(part["text"])
            else:
                raise ValueError("should hold parts that are objects or strings")
        return "".join(texts)
    raise ValueError(f"should be a string, null or a list of parts, not {type(value).__name__}")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Function(_Lenient):
    name: str | None = None
    arguments: Any = None  # a JSON string or an object (Z.ai); the parser reads both


class _ToolCall(_Lenient):
    function: _Function | None = None


class _Message(_Lenient):
    content: Annotated[str | None, BeforeValidator(text_of)] = None
    reasoning_content: Any = None  # SiliconFlow, Z.ai, vLLM
    reasoning: Any = None  # OpenRouter
    tool_calls: list[_ToolCall] | None = None


class _Choice(_Lenient):
    message: _Message
    finish_reason: Any = None


class _Usage(_Lenient):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Completion(_Lenient):
    """The shape of a chat completion this program reads; anything else in it is kept out of the way."""

    choices: list[_Choice]
    usage: _Usage | None = None
    model: Any = None


def _shape_problem(exc: ValidationError) -> str:
    """The first problems of a validation, as ``choices[0].message: Input should be ...`` (no values)."""
    problems = []
    for error in exc.errors()[:2]:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
        kind = error["type"]
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            what = "should be an object"
        elif kind == "list_type":
            what = "should be a list"
        elif kind == "missing":
            what = "is missing"
        else:
            what = error["msg"].removeprefix("Value error, ").removeprefix("Input ")
        problems.append(f"{where or 'the reply'} {what}")
    return "; ".join(problems)


def platform_name() -> str:
    if sys.platform == "darwin":
        return "macOS"
    if sys.platform.startswith("win"):
        return "Windows"
    return "Linux"


def estimate_text_tokens(text: str) -> int:
    """A cautious token estimate: ASCII at 3 chars a token, anything else a token a char."""
    ascii_chars = len(text.encode("ascii", "ignore"))  # counted in C: a step's prompt is read at every step
    return int(ascii_chars / CHARS_PER_TOKEN) + (len(text) - ascii_chars) + 1


@functools.lru_cache(maxsize=2)
def _tools_tokens(ask_user: bool) -> int:
    """What the tool definitions cost (they never change within a process)."""
    return estimate_text_tokens(json.dumps(tool_schemas(ask_user)))


@dataclass(frozen=True)
class BuiltMessage:
    """The user message for one step and what it is estimated to cost."""

    content: list[dict[str, Any]]
    prompt_text: str  # all text parts joined, images as [image WxH]: safe to record
    estimated_tokens: int
    history_images: int
    history_lines: int


def _image_part(image: SentImage, settings: Settings) -> dict[str, Any]:
    url: dict[str, Any] = {"url": image.data_url}
    if settings.preset.image_detail:
        url["detail"] = settings.preset.image_detail  # SiliconFlow: "high"; never "auto"
    return {"type": "image_url", "image_url": url}


def build_message(request: StepRequest, settings: Settings, use_tools: bool) -> BuiltMessage:
    """The one user message of a step, fitted into the context window."""
    if request.grounding is not None:
        return _compose_grounding(request, request.grounding, settings)
    budget = CONTEXT_TOKENS - settings.max_tokens - CONTEXT_MARGIN
    if use_tools:
        budget -= _tools_tokens(request.ask_user)
    history = list(request.history)
    shots_allowed = settings.history_images
    while True:
        built = _compose(request, settings, history, shots_allowed, use_tools)
        if built.estimated_tokens <= budget:
            return built
        if built.history_images > 0:
            shots_allowed = built.history_images - 1  # drop the oldest shot first
        elif history:
            history = history[1:]  # then the oldest lines
        else:
            return built  # nothing left to drop: the server will say if it is too long


def _compose(
    request: StepRequest, settings: Settings, history: list[HistoryEntry], shots_allowed: int, use_tools: bool
) -> BuiltMessage:
    width, height = request.screenshot.size
    parts: list[dict[str, Any]] = []
    text_log: list[str] = []
    tokens = 0

    def add_text(text: str) -> None:
        nonlocal tokens
        if parts and parts[-1]["type"] == "text":
            parts[-1]["text"] += text
        else:
            parts.append({"type": "text", "text": text})
        text_log.append(text)
        tokens += estimate_text_tokens(text)

    def add_image(image: SentImage) -> None:
        nonlocal tokens
        parts.append(_image_part(image, settings))
        text_log.append(f"[image {image.size[0]}x{image.size[1]}]")
        tokens += image.tokens

    omitted_before = request.history[0].step if request.history else 1
    first_kept = history[0].step if history else request.step
    history_note = "" if history or not request.history else "(earlier steps omitted)\n"
    if not request.history:
        history_note = "(none: this is the first step)\n"
    elif first_kept > omitted_before:
        history_note = f"(steps {omitted_before}-{first_kept - 1} omitted)\n"
    add_text(
        prompts.render(
            "step_head",
            task=request.task,
            platform=platform_name(),
            width=width,
            height=height,
            action_space=action_space_text(frozenset(offered_kinds(request.ask_user))),
        ).rstrip("\n")
    )
    if history_note:
        add_text("\n" + history_note.rstrip("\n"))
    with_shot = {entry.step for entry in history if entry.image is not None}
    with_shot = set(sorted(with_shot)[-shots_allowed:]) if shots_allowed else set()
    for entry in history:
        shown = entry.step in with_shot
        line = prompts.render(
            "history_step",
            step=entry.step,
            screenshot="" if shown else "(omitted)",
            thought=" ".join(entry.thought.split()) or "-",
            action=entry.action_text,
            result=f" Result: {entry.result}" if entry.result else "",
        ).rstrip("\n")
        if shown:
            head, _, tail = line.partition("Screenshot: ")
            add_text("\n" + head + "Screenshot: ")
            add_image(entry.image)  # type: ignore[arg-type]
            add_text(" " + tail.lstrip())
        else:
            add_text("\n" + line)
    memory = json.dumps(request.memory, ensure_ascii=False) if request.memory else "[]"
    feedback = prompts.render("feedback", problem=request.feedback) if request.feedback else ""
    output_format = prompts.render("output_tools" if use_tools else "output_text").rstrip("\n")
    add_text(
        prompts.render("step_tail", memory=memory, feedback=feedback, output_format=output_format, step=request.step)
    )
    add_image(request.screenshot)
    return BuiltMessage(parts, "".join(text_log), tokens, len(with_shot), len(history))


def _compose_grounding(request: StepRequest, ask: GroundingAsk, settings: Settings) -> BuiltMessage:
    """The zoom request's message: the grounding prompt, then the crop."""
    sent = request.screenshot
    factor = sent.size[0] / ask.crop_size[0] if ask.crop_size[0] else 1.0
    text = prompts.render(
        "zoom",
        platform=platform_name(),
        task=request.task,
        width=ask.crop_size[0],
        height=ask.crop_size[1],
        kind=ask.kind,
        factor=f"{factor:.1f}",
        element=" ".join(ask.element.split()),
    )
    image = _image_part(sent, settings)
    prompt_text = text + f"[image {sent.size[0]}x{sent.size[1]}]"
    return BuiltMessage(
        [{"type": "text", "text": text}, image], prompt_text, estimate_text_tokens(text) + sent.tokens, 0, 0
    )


def thinking_params(settings: Settings) -> dict[str, Any]:
    """The thinking switch in the provider's own shape (GLM45V.md, Providers table)."""
    style = settings.preset.thinking_style
    if style == "siliconflow":
        params: dict[str, Any] = {"enable_thinking": settings.thinking}
        if settings.thinking and settings.thinking_budget:
            params["thinking_budget"] = max(128, min(32768, settings.thinking_budget))
        return params
    if style == "zai":
        return {"thinking": {"type": "enabled" if settings.thinking else "disabled"}}
    if style == "openrouter":
        reasoning: dict[str, Any] = {"enabled": settings.thinking}
        if settings.thinking and settings.thinking_budget:
            reasoning["max_tokens"] = settings.thinking_budget
        return {"reasoning": reasoning}
    if style == "vllm":
        return {"chat_template_kwargs": {"enable_thinking": settings.thinking}, "skip_special_tokens": False}
    return {}


def build_body(
    request: StepRequest, settings: Settings, use_tools: bool, stream: bool = False
) -> tuple[dict[str, Any], BuiltMessage]:
    """The JSON body of one chat-completions request, and the message it holds; ``stream`` asks for
    server-sent events with the usage in the last one."""
    if request.no_thinking and settings.thinking:
        settings = settings.model_copy(update={"thinking": False})
    if request.grounding is not None:
        use_tools = False  # the answer is one point: the tool definitions would cost tokens for nothing
    message = build_message(request, settings, use_tools)
    max_tokens = settings.max_tokens
    if settings.thinking and settings.thinking_budget:
        # reasoning counts against max_tokens: leave room for the answer after it
        max_tokens = max(max_tokens, settings.thinking_budget + 1024)
    body: dict[str, Any] = {
        "model": settings.model,
        "messages": [{"role": "user", "content": message.content}],
        "max_tokens": max_tokens,
        "temperature": settings.temperature,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    body.update(thinking_params(settings))
    if use_tools:
        body["tools"] = tool_schemas(request.ask_user)
        body["tool_choice"] = "auto"  # Z.ai accepts only auto; never "none" with tools
    return body, message
