"""Turn one GLM-4.5V reply into one validated action: owns every reply shape the model emits.

``parse_reply`` tries, in order, and the first shape that yields an action wins:

1. ``tool_calls`` (OpenAI-shaped; arguments as a JSON string or an object; the first call);
2. a tool call leaked into ``content`` as ``<tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value></tool_call>``
   (or ``<tool_call>{"name": .., "arguments": ..}</tool_call>``);
3. an action call inside box tokens: ``<|begin_of_box|>left_click(start_box='[586,446]')<|end_of_box|>``;
4. a bare action call ``left_click(start_box='[586,446]')`` anywhere in the text;
5. a JSON or python-dict action (fenced or bare), e.g. ``{"action_type": "click", "box_2d": [[1,2,3,4]]}``;
6. a bare box, ``[[100,200,300,400]]`` or ``<|begin_of_box|>[586,446]<|end_of_box|>``: a left_click there.

Where a shape occurs several times, the **last** one wins: the model explains first and acts last.
Unknown action names are reported (UnknownAction) only when no known action is found anywhere,
except inside box tokens or a tool call, which always name the intended action.

Calls are read with ``ast.parse`` and ``ast.literal_eval`` only: the reply's text is never evaluated.
The ``Memory:`` JSON list after the action is returned separately and never read as an action.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from itertools import islice
from typing import Any

from actions.schema import POINTING_KINDS, Action, build_action, canonical_action_name
from agent.errors import EmptyReply, InvalidArguments, ModelError, UnknownAction, UnparseableReply

_BOX = re.compile(r"<\|begin_of_box\|>(.*?)(?:<\|end_of_box\|>|\Z)", re.S)
_BOX_TOKENS = re.compile(r"<\|(?:begin|end)_of_box\|>")
_ANSWER_TAGS = re.compile(r"</?answer>")
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S)
_THINK_HINT = re.compile(r"<\|begin_of_box\|>|<tool_call>|<answer>|```|\{\s*[\"']")
_CALL = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\(")
_XML_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)
_XML_ARG = re.compile(r"<arg_key>\s*(.*?)\s*</arg_key>\s*<arg_value>(.*?)(?:</arg_value>|\Z)", re.S)
_MEMORY = re.compile(r"\bMemory\s*:\s*(?:```[a-z]*\s*)?(?=\[)", re.I)
_FENCE_END = re.compile(r"\s*```")
_NUM = r"\s*-?\d+(?:\.\d+)?\s*"
_BOX_BODY = rf"{_NUM}(?:,{_NUM}){{1,3}}"
_TOKEN_BOX = re.compile(rf"[\[(]{{1,2}}{_BOX_BODY}[\])]{{1,2}}")
_BARE_BOX = re.compile(rf"\[\s*\[{_BOX_BODY}\]\s*\]|^[ \t]*\[{_BOX_BODY}\][ \t]*$", re.M)
_THOUGHT_TAIL = re.compile(r"(?:\s|```\w*|\bAction\s*:)+\Z", re.I)
_CLOSERS = {"(": ")", "[": "]", "{": "}"}
_MAX_CANDIDATES = 256  # calls or JSON objects looked at per reply: bounds the work on degenerate text
_LITERAL_ERRORS = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)

_NAME_KEYS = ("action", "action_type", "name", "function", "tool", "command")
_ARGS_KEYS = ("arguments", "args", "parameters", "params", "action_inputs", "input")
_RAW_TEXT_ARGS = frozenset({"content", "text", "answer", "reason", "question", "element_info", "direction"})
_TEXT_ARGS = _RAW_TEXT_ARGS | {"keys", "key", "hotkey"}
_POSITIONAL = {
    "key": ("keys",),
    "type": ("content",),
    "DONE": ("answer",),
    "FAIL": ("reason",),
    "call_user": ("question",),
    "left_drag": ("start_box", "end_box"),
    "scroll": ("start_box", "direction", "step"),
}
_EXPECTED = (
    "no action found: give exactly one action call, e.g. "
    "<|begin_of_box|>left_click(start_box='[x,y]', element_info='...')<|end_of_box|>"
)


@dataclass(frozen=True)
class ParsedReply:
    """The action found in a reply, with the text around it."""

    action: Action
    thought: str  # the explanation before the action, markup stripped; may be ""
    memory: list | None  # the `Memory:` list the model keeps for itself, if present
    source: str  # "tool_call", "tool_call_xml", "box_call", "call", "json" or "bare_box"


def parse_reply(content: str | None, tool_calls: list[dict] | None = None, reasoning: str | None = None) -> ParsedReply:
    """Find the one action in a chat-completion message; raise a ModelError if there is none."""
    text = _ANSWER_TAGS.sub("", _strip_think(content or "")).strip()
    if not text and not tool_calls:
        thinking = (reasoning or "").strip() or "<think>" in (content or "")
        raise EmptyReply(
            "the reply had no content and no tool call"
            + (" (the reasoning probably used up the token budget)" if thinking else "")
        )
    memory, text = _take_memory(text)
    if tool_calls:
        return ParsedReply(_from_tool_call(tool_calls[0]), _thought(text), memory, "tool_call")
    plain = _BOX_TOKENS.sub("", text)
    deferred: list[ModelError] = []  # errors reported only if no action is found at all
    for source, finder, where in (
        ("tool_call_xml", _find_xml, text),
        ("box_call", _find_box_call, text),
        ("call", _find_call, plain),
        ("json", _find_json, plain),
        ("bare_box", _find_bare_box, text),
    ):
        found = finder(where, deferred)
        if found is not None:
            action, before, extra = found
            return ParsedReply(
                action,
                _thought(before) or extra.get("thought", ""),
                memory if memory is not None else extra.get("memory"),
                source,
            )
    if deferred:
        raise deferred[-1]
    raise UnparseableReply(_EXPECTED)


def strip_markup(text: str) -> str:
    """The text without think blocks, <answer> tags or box tokens, stripped."""
    return _BOX_TOKENS.sub("", _ANSWER_TAGS.sub("", _strip_think(text))).strip()


# --- text clean-up -------------------------------------------------------------------------------


def _strip_think(text: str) -> str:
    """Drop <think> blocks; a stray </think> drops what precedes it; a dangling <think>
    (truncated thinking) is dropped up to the first text that looks like an action."""
    text = _THINK_BLOCK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    start = text.find("<think>")
    if start < 0:
        return text
    rest = text[start + len("<think>") :]
    hints = [m.start() for m in (_THINK_HINT.search(rest),) if m]
    hints += [m.start() for m in _CALL.finditer(rest) if _known(m.group(1))][:1]
    return text[:start] + (rest[min(hints) :] if hints else "")


def _take_memory(text: str) -> tuple[list | None, str]:
    """Cut the last `Memory: [...]` section (maybe fenced, maybe python-literal) out of text."""
    for m in reversed(list(_MEMORY.finditer(text))):
        end = _balanced_end(text, m.end())
        try:
            value = _literal(text[m.end() : end]) if end > 0 else None
        except ValueError:
            continue
        if isinstance(value, list):
            fence = _FENCE_END.match(text, end) if "```" in m.group() else None
            return value, text[: m.start()] + text[fence.end() if fence else end :]
    return None, text


def _thought(before: str) -> str:
    return _THOUGHT_TAIL.sub("", strip_markup(before))


# --- shape finders: each returns (action, text before it, extras) or None ---------------------------


def _from_tool_call(call: dict) -> Action:
    function = call.get("function") or call
    name, raw = function.get("name") or "", function.get("arguments")
    if isinstance(raw, str):
        try:
            raw = _literal(raw) if raw.strip() else {}
        except ValueError:
            raise InvalidArguments(
                f"the arguments of tool call {name!r} are not valid JSON (truncated?): {raw[:80]!r}"
            ) from None
    if not isinstance(raw, (dict, type(None))):
        raise InvalidArguments(f"the arguments of tool call {name!r} must be a JSON object")
    return _build(name, raw or {})


def _find_xml(text: str, deferred: list) -> tuple | None:
    matches = list(_XML_CALL.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    inner = m.group(1).strip()
    if inner.startswith("{"):
        found = _dict_action(_literal_or(inner, None))
        if found is None:
            raise UnparseableReply("the <tool_call> holds no action name")
        return _build(*found), text[: m.start()], {}
    name = re.split(r"<arg_key>|\n", inner, maxsplit=1)[0].strip()
    args = {k: v if k in _RAW_TEXT_ARGS else _literal_or(v, v) for k, v in _XML_ARG.findall(inner)}
    return _build(name, args), text[: m.start()], {}


def _find_box_call(text: str, deferred: list) -> tuple | None:
    for m in reversed(list(_BOX.finditer(text))):
        found = _last_call(m.group(1), strict=True, deferred=deferred)
        if found is not None:
            return _build(*found[1:]), text[: m.start()], {}
    return None


def _find_call(text: str, deferred: list) -> tuple | None:
    found = _last_call(text, strict=False, deferred=deferred)
    return None if found is None else (_build(*found[1:]), text[: found[0]], {})


def _find_json(text: str, deferred: list) -> tuple | None:
    last, pos = None, 0
    for m in islice(re.finditer(r"\{", text), _MAX_CANDIDATES):
        end = _balanced_end(text, m.start()) if m.start() >= pos else -1
        value = _literal_or(text[m.start() : end], None) if end > 0 else None
        found = _dict_action(value)
        if found is None:
            continue
        pos = end
        if _known(found[0]):
            last = (m.start(), found, value)
        else:
            deferred.append(_unknown(found[0]))
    if last is None:
        return None
    i, (name, args), value = last
    extra = {k: value[k] for k, t in (("thought", str), ("memory", list)) if isinstance(value.get(k), t)}
    return _build(name, args), text[:i], extra


def _find_bare_box(text: str, deferred: list) -> tuple | None:
    for m in reversed(list(_BOX.finditer(text))):
        if _TOKEN_BOX.fullmatch(m.group(1).strip()):
            return build_action("left_click", {"start_box": m.group(1)}), text[: m.start()], {}
    plain = _BOX_TOKENS.sub("", text)
    boxes = list(_BARE_BOX.finditer(plain))
    if not boxes:
        return None
    return build_action("left_click", {"start_box": boxes[-1].group()}), plain[: boxes[-1].start()], {}


# --- helpers --------------------------------------------------------------------------------------


def _unknown(name: str) -> UnknownAction | None:
    """The UnknownAction to report for name, or None when it is (an alias of) an action name."""
    try:
        canonical_action_name(name)
    except UnknownAction as exc:
        return exc
    return None


def _known(name: str) -> bool:
    return _unknown(name) is None


def _last_call(text: str, strict: bool, deferred: list) -> tuple | None:
    """(start, name, positional, keywords) of the last well-formed action call in text.

    Only outermost calls count (a call quoted inside another's argument is not an action).
    Inside box tokens (``strict``) an unknown name or a non-literal argument raises; in free
    text they are put in ``deferred`` and only reported if no action is found at all.
    """
    found, pos = None, 0
    for m in islice(_CALL.finditer(text), _MAX_CANDIDATES):
        end = _balanced_end(text, m.end() - 1) if m.start() >= pos else -1
        try:
            parsed = _parse_call(text[m.start() : end]) if end > 0 else None
        except InvalidArguments as exc:
            if strict:
                raise
            deferred.append(exc)
            continue
        if parsed is None:
            continue
        pos = end
        if _known(parsed[0]):
            found = (m.start(), *parsed)
        elif strict:
            raise _unknown(parsed[0])
        elif parsed[2]:  # keyword arguments: meant as an action
            deferred.append(_unknown(parsed[0]))
    return found


def _parse_call(source: str) -> tuple[str, list, dict] | None:
    """Read `name(k=v, ...)` with ast (never evaluated). None if it is not such a call."""
    for attempt in (source, source.replace("\n", "\\n")):  # raw newlines inside quotes
        try:
            node = ast.parse(attempt.strip(), mode="eval").body
            break
        except _LITERAL_ERRORS:
            continue
    else:
        return None
    if (
        not isinstance(node, ast.Call)
        or not isinstance(node.func, ast.Name)
        or any(k.arg is None for k in node.keywords)
    ):
        return None
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except _LITERAL_ERRORS:
        if not _known(node.func.id):
            return None
        raise InvalidArguments(
            f"arguments of {node.func.id} must be plain values such as '[500,500]', 'text' or 5, not expressions"
        ) from None
    return node.func.id, args, kwargs


def _dict_action(value: Any) -> tuple[str, dict] | None:
    """(name, arguments) of a JSON action in any of the usual layouts, or None."""
    if not isinstance(value, dict):
        return None
    for key in _NAME_KEYS:
        inner = value.get(key)
        rest = {k: v for k, v in value.items() if k != key}
        if isinstance(inner, dict) and (found := _dict_action(inner)):
            return found[0], {**rest, **found[1]}
        if isinstance(inner, str) and inner.strip():
            for args_key in _ARGS_KEYS:
                nested = rest.pop(args_key, None)
                nested = _literal_or(nested, nested) if isinstance(nested, str) else nested
                rest.update(nested if isinstance(nested, dict) else {})
            if "x" in rest and "y" in rest:
                rest.setdefault("start_box", [rest.pop("x"), rest.pop("y")])
            return inner, rest
    return None


def _build(name: str, args: list | dict, kwargs: dict | None = None) -> Action:
    """build_action with positional arguments mapped to names and numbers in text fields as text."""
    kwargs = dict(kwargs or {}) if isinstance(args, list) else dict(args)
    if isinstance(args, list) and args:
        kind = canonical_action_name(name)
        names = _POSITIONAL.get(kind, ("start_box", "element_info") if kind in POINTING_KINDS else ())
        if len(args) > len(names):
            raise InvalidArguments(f"too many positional arguments for {kind}; use key='value'")
        kwargs = {**dict(zip(names, args)), **kwargs}
    for key, value in kwargs.items():
        if key in _TEXT_ARGS and isinstance(value, (int, float)) and not isinstance(value, bool):
            kwargs[key] = str(value)
    return build_action(name, kwargs)


def _literal(source: str) -> Any:
    """JSON, else a python literal (ast.literal_eval: never evaluated). ValueError if neither."""
    try:
        return json.loads(source)
    except (ValueError, RecursionError):
        pass
    try:
        return ast.literal_eval(source.strip())
    except _LITERAL_ERRORS:
        raise ValueError(f"not JSON or a literal: {source[:80]!r}") from None


def _literal_or(source: str, default: Any) -> Any:
    try:
        return _literal(source)
    except ValueError:
        return default


def _balanced_end(text: str, start: int) -> int:
    """Index just past the bracket group opening at text[start] (quote-aware), or -1."""
    stack: list[str] = []
    quote, i = None, start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif ch in ")]}":
            if not stack or stack.pop() != ch:
                return -1
            if not stack:
                return i + 1
        i += 1
    return -1
