"""Turn one GLM-4.5V reply into one validated action: owns every reply shape the model emits.

``parse_reply`` tries, in order, and the first shape that yields an action wins:

1. ``tool_calls`` (OpenAI-shaped; arguments as a JSON string or an object; the first call);
2. a tool call leaked into ``content`` as ``<tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value></tool_call>``
   (or ``<tool_call>{"name": .., "arguments": ..}</tool_call>``);
3. an action call inside box tokens: ``<|begin_of_box|>left_click(start_box='[586,446]')<|end_of_box|>``;
4. a bare action call ``left_click(start_box='[586,446]')`` anywhere in the text;
5. a JSON or python-dict action (fenced or bare), e.g. ``{"action_type": "click", "box_2d": [[1,2,3,4]]}``;
6. a bare box, ``[[100,200,300,400]]`` or ``<|begin_of_box|>[586,446]<|end_of_box|>``: a left_click there;
   last, a single box in prose (``The button is at [835,626,931,883].``, box tokens stripped by the provider),
   only when it is the one in-range box of the text and no action call is present.

Where a shape occurs several times, the **last** one wins: the model explains first and acts last.
Unknown action names are reported (UnknownAction) only when no known action is found anywhere,
except inside box tokens or a tool call, which always name the intended action.

Calls are read with ``ast.parse`` and ``ast.literal_eval`` only: the reply's text is never evaluated.
The ``Memory:`` JSON list after the action is returned separately and never read as an action.

The reply is hostile input, so the work stays near-linear in its length: brackets are paired once
per text (``_Brackets``, quote-aware) and every finder reuses that pairing; candidates are read from
the last one back, each at most once; what is handed to json/ast is bounded per reply (``_Reader``).
A reply too large or too tangled to read within those bounds is an UnparseableReply, never a wrong
action. The thought and the memory returned are capped: they are recorded and sent back every step.
"""

from __future__ import annotations

import ast
import bisect
import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from actions.schema import POINTING_KINDS, Action, build_action, canonical_action_name, parse_model_box
from agent.errors import EmptyReply, InvalidArguments, ModelError, UnknownAction, UnparseableReply

MAX_THOUGHT_CHARS = 2_000  # ParsedReply.thought: recorded again and shown to the model in history lines
MAX_MEMORY_CHARS = 4_000  # ParsedReply.memory as JSON: sent back to the model at every later step
MAX_READ_CHARS = 65_536  # one call, JSON object or Memory list longer than this is not read
_READ_BUDGET_CHARS = 262_144  # characters handed to json/ast per reply, all candidates together
_READ_BUDGET_COUNT = 1_024  # candidates handed to json/ast per reply
_MAX_SPECIALS = 100_000  # brackets, quotes and backslashes in a text whose brackets are paired
_MAX_CALL_LIKE = 4_096  # `name(` occurrences looked at when searching for a known action name
_MAX_PROSE_BOXES = 64  # `[x,y]` / `[x1,y1,x2,y2]` occurrences looked at in prose
_MAX_BOXES = 256  # box-token sections looked at (the last ones)
_MAX_MEMORY_TRIES = 16  # `Memory:` sections tried (the last ones)
_MAX_NESTING = 8  # action dicts nested deeper than this are not actions
_MAX_MESSAGE = 400  # a ModelError's message (shown to the model, recorded) is cut here

_BOX = re.compile(r"<\|begin_of_box\|>(.*?)(?:<\|end_of_box\|>|\Z)", re.S)
_BOX_TOKENS = re.compile(r"<\|(?:begin|end)_of_box\|>")
_ANSWER_TAGS = re.compile(r"</?answer>")
_THINK_HINT = re.compile(r"<\|begin_of_box\|>|<tool_call>|<answer>|```|\{\s*[\"']")
_CALL = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\(")
_XML_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)
_MEMORY = re.compile(r"\bMemory\s*:\s*(?:```[a-z]*\s*)?(?=\[)", re.I)
_FENCE_END = re.compile(r"\s*```")
_NUM = r"\s*-?\d+(?:\.\d+)?\s*"
_BOX_BODY = rf"{_NUM}(?:,{_NUM}){{1,3}}"
_TOKEN_BOX = re.compile(rf"[\[(]{{1,2}}{_BOX_BODY}[\])]{{1,2}}")
_BARE_BOX = re.compile(rf"\[\s*\[{_BOX_BODY}\]\s*\]|^[ \t]*\[{_BOX_BODY}\][ \t]*$", re.M)
_PROSE_BOX = re.compile(rf"\[{_BOX_BODY}\]")
# the thought's tail (blank space, code fences, "Action:") matched on the REVERSED text, from its start:
# one anchored pass instead of a search that retries from every position
_REVERSED_TAIL = re.compile(r"(?:\s|\w*```|:\s*noitcA\b)+", re.I)
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_SPECIAL = re.compile(r"[()\[\]{}'\"\\]")
_CLOSERS = {"(": ")", "[": "]", "{": "}"}
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
_TOO_TANGLED = (
    "the reply is too long or too tangled to read (too many calls, brackets or JSON objects): "
    "give one short action call"
)


@dataclass(frozen=True)
class ParsedReply:
    """The action found in a reply, with the text around it."""

    action: Action
    thought: str  # the explanation before the action, markup stripped, at most MAX_THOUGHT_CHARS; may be ""
    memory: list | None  # the `Memory:` list the model keeps for itself (JSON values, capped), if present
    source: str  # "tool_call", "tool_call_xml", "box_call", "call", "json" or "bare_box"


def parse_reply(content: str | None, tool_calls: list[dict] | None = None, reasoning: str | None = None) -> ParsedReply:
    """Find the one action in a chat-completion message; raise a ModelError if there is none."""
    try:
        return _parse(content, tool_calls, reasoning)
    except RecursionError:
        raise UnparseableReply("the reply is nested too deeply to read: give one short action call") from None
    except _TooLong as exc:
        raise InvalidArguments(str(exc)) from None
    except ModelError as exc:
        message = str(exc)
        if len(message) <= _MAX_MESSAGE:
            raise
        raise type(exc)(message[: _MAX_MESSAGE - 1] + "…") from None


def strip_markup(text: str) -> str:
    """The text without think blocks, <answer> tags or box tokens, stripped."""
    return _BOX_TOKENS.sub("", _ANSWER_TAGS.sub("", _strip_think(text))).strip()


def _parse(content: str | None, tool_calls: list[dict] | None, reasoning: str | None) -> ParsedReply:
    text = _ANSWER_TAGS.sub("", _strip_think(content or "")).strip()
    if not text and not tool_calls:
        thinking = (reasoning or "").strip() or "<think>" in (content or "")
        raise EmptyReply(
            "the reply had no content and no tool call"
            + (" (the reasoning probably used up the token budget)" if thinking else "")
        )
    reader = _Reader()
    if tool_calls:
        action = _from_tool_call(tool_calls[0])
        try:
            memory, text = _take_memory(text, reader)
        except ModelError:  # content too tangled to find its memory in: the tool call still stands
            memory = None
        return ParsedReply(action, _thought(text), _fit_memory(memory), "tool_call")
    memory, text = _take_memory(text, reader)
    plain = _BOX_TOKENS.sub("", text)
    for source, finder, where in (
        ("tool_call_xml", _find_xml, text),
        ("box_call", _find_box_call, text),
        ("call", _find_call, plain),
        ("json", _find_json, plain),
        ("bare_box", _find_bare_box, text),
    ):
        found = finder(where, reader)
        if found is not None:
            action, before, extra = found
            thought = _thought(before) or _cap(extra.get("thought", ""), MAX_THOUGHT_CHARS)
            return ParsedReply(
                action, thought, _fit_memory(memory if memory is not None else extra.get("memory")), source
            )
    if reader.deferred:
        raise reader.deferred[-1]
    raise UnparseableReply(_EXPECTED)


# --- bounded reading ------------------------------------------------------------------------------


class _Brackets:
    """Quote-aware bracket pairing of one text, computed in one right-to-left pass.

    ``end(start, opener)`` is, for the opener at ``text[start]``, the index just past its closer: exactly
    what a scan from that opener finds (quotes open strings inside the group, a backslash escapes
    inside a string, a wrong or missing closer fails with -1), without rescanning from every
    candidate. The pass looks only at brackets, quotes and backslashes.
    """

    def __init__(self, text: str) -> None:
        pos = [m.start() for m in _SPECIAL.finditer(text)]
        chars = [text[p] for p in pos]
        n = len(pos)
        escaped = [False] * n  # preceded by an odd run of backslashes
        if "\\" in text:
            run = 0
            for k in range(n):
                adjacent = k > 0 and pos[k - 1] == pos[k] - 1
                escaped[k] = adjacent and run % 2 == 1
                run = (run + 1 if adjacent else 1) if chars[k] == "\\" else 0
        # first[k]: index (into pos) of the first closer met scanning from pos[k] at the same
        # depth, skipping strings and whole bracket groups; -1 if the scan fails first
        first = [-1] * (n + 1)
        next_single = next_double = -1  # the next unescaped quote of each kind
        ends: dict[str, list[tuple[int, int]]] = {"(": [], "[": [], "{": []}
        closers = _CLOSERS
        for k in range(n - 1, -1, -1):
            ch = chars[k]
            if ch in closers:
                e = first[k + 1]
                if e >= 0 and chars[e] == closers[ch]:
                    ends[ch].append((pos[k], pos[e] + 1))
                    first[k] = first[e + 1]
            elif ch == ")" or ch == "]" or ch == "}":
                first[k] = k
            elif ch == "\\":
                first[k] = first[k + 1]
            elif ch == "'":  # a quote opens a string up to the next unescaped quote of its kind
                first[k] = first[next_single + 1] if next_single >= 0 else -1
                if not escaped[k]:
                    next_single = k
            else:
                first[k] = first[next_double + 1] if next_double >= 0 else -1
                if not escaped[k]:
                    next_double = k
        self.groups = {ch: found[::-1] for ch, found in ends.items()}  # (start, end) by start
        self._starts = {ch: [s for s, _ in found] for ch, found in self.groups.items()}

    def end(self, start: int, opener: str) -> int:
        starts = self._starts[opener]
        i = bisect.bisect_left(starts, start)
        return self.groups[opener][i][1] if i < len(starts) and starts[i] == start else -1


class _Reader:
    """What the finders of one reply share: the bracket pairing of each text (built once, when
    first needed), the budget of what may be handed to json/ast, and the errors kept back for
    when no action is found at all."""

    def __init__(self) -> None:
        self.deferred: list[ModelError] = []
        self._brackets: dict[str, _Brackets] = {}
        self._chars = _READ_BUDGET_CHARS
        self._reads = _READ_BUDGET_COUNT

    def brackets(self, text: str) -> _Brackets:
        found = self._brackets.get(text)
        if found is None:
            if sum(map(text.count, "()[]{}'\"\\")) > _MAX_SPECIALS:
                raise UnparseableReply(_TOO_TANGLED)
            found = self._brackets[text] = _Brackets(text)
        return found

    def charge(self, source: str) -> str:
        """Account for reading ``source``; raise when the reply's reading budget is spent."""
        if len(source) > MAX_READ_CHARS:
            raise _TooLong(
                f"an action call or JSON object of {len(source):,} characters is too long to read "
                f"(the limit is {MAX_READ_CHARS:,}): give one short action"
            )
        self._chars -= len(source)
        self._reads -= 1
        if self._chars < 0 or self._reads < 0:
            raise UnparseableReply(_TOO_TANGLED)
        return source

    def literal(self, source: str) -> Any:
        return _literal(self.charge(source))


class _TooLong(InvalidArguments):
    """A candidate too long to read: it ends the search (what it holds cannot be told apart)."""


Read = tuple[Any, ModelError | None]  # (value, error): a value hides the groups inside


def _outermost_last(
    groups: list[tuple[int, int]], read: Callable[[int, int], Read]
) -> Iterator[tuple[int, int, Any, ModelError | None]]:
    """Yield ``(start, end, value, error)`` for bracket groups, the last one first, each read at most once.

    A group inside another whose read gave a value is skipped (a call or object quoted inside another's
    argument is not an action): the enclosing groups are read first, from the outside in. ``groups`` are
    (start, end) pairs sorted by start; groups that overlap (through quotes) count as enclosing.
    """
    parent: list[int] = []
    stack: list[int] = []
    for start, _ in groups:
        while stack and groups[stack[-1]][1] <= start:
            stack.pop()
        parent.append(stack[-1] if stack else -1)
        stack.append(len(parent) - 1)
    reads: dict[int, Read] = {}
    hides: dict[int, bool] = {}  # the group, or one around it, was read with a value

    def read_once(i: int) -> Read:
        if i not in reads:
            reads[i] = read(*groups[i])
        return reads[i]

    def hidden(i: int) -> bool:
        chain = []
        while i >= 0 and i not in hides:
            chain.append(i)
            i = parent[i]
        state = hides.get(i, False)
        for j in reversed(chain):  # outermost first: an enclosing value spares reading the inner ones
            state = state or read_once(j)[0] is not None
            hides[j] = state
        return state

    for i in range(len(groups) - 1, -1, -1):
        if hidden(parent[i]):
            continue
        value, error = read_once(i)
        if value is not None or error is not None:
            yield groups[i][0], groups[i][1], value, error


# --- text clean-up -------------------------------------------------------------------------------


def _strip_think(text: str) -> str:
    """Drop <think> blocks; a stray </think> drops what precedes it; a dangling <think>
    (truncated thinking) is dropped up to the first text that looks like an action."""
    kept, i = [], 0
    while (start := text.find("<think>", i)) >= 0 and (stop := text.find("</think>", start)) >= 0:
        kept.append(text[i:start])
        i = stop + len("</think>")
    text = "".join(kept) + text[i:]
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    start = text.find("<think>")
    if start < 0:
        return text
    rest = text[start + len("<think>") :]
    hints = [m.start() for m in (_THINK_HINT.search(rest),) if m]
    hints += [m.start() for m in (_first_known_call(rest),) if m]
    return text[:start] + (rest[min(hints) :] if hints else "")


def _first_known_call(text: str) -> re.Match | None:
    """The first call of a known action name among the first _MAX_CALL_LIKE `name(` of text."""
    return next((m for m in islice(_CALL.finditer(text), _MAX_CALL_LIKE) if _known(m.group(1))), None)


def _take_memory(text: str, reader: _Reader) -> tuple[list | None, str]:
    """Cut the last `Memory: [...]` section (maybe fenced, maybe python-literal) out of text."""
    matches = list(_MEMORY.finditer(text))
    for m in reversed(matches[-_MAX_MEMORY_TRIES:]):
        end = reader.brackets(text).end(m.end(), "[")
        if end < 0:
            continue
        if end - m.end() > MAX_READ_CHARS:
            value: Any = None  # too long to read, and never to be read as actions either: cut it out
        else:
            try:
                value = reader.literal(text[m.end() : end])
            except ValueError:
                continue
            if not isinstance(value, list):
                continue
        fence = _FENCE_END.match(text, end) if "```" in m.group() else None
        return value, text[: m.start()] + text[fence.end() if fence else end :]
    return None, text


def _thought(before: str) -> str:
    text = strip_markup(before)
    tail = _REVERSED_TAIL.match(text[::-1])
    return _cap(text[: len(text) - tail.end()] if tail else text, MAX_THOUGHT_CHARS)


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fit_memory(memory: Any) -> list | None:
    """The memory list as plain JSON values, at most MAX_MEMORY_CHARS of JSON: the latest items are kept."""
    if not isinstance(memory, list):
        return None
    try:
        pieces = [json.dumps(item, ensure_ascii=False, default=str) for item in memory]
    except (ValueError, RecursionError):
        return None
    kept: list[str] = []
    size = 2
    for piece in reversed(pieces):
        if size + len(piece) + 2 > MAX_MEMORY_CHARS:
            if not kept:  # the latest item alone is too long: keep its beginning, as text
                item = memory[-1] if isinstance(memory[-1], str) else piece
                limit = MAX_MEMORY_CHARS
                while len(cut := json.dumps(_cap(item, limit), ensure_ascii=False)) + 2 > MAX_MEMORY_CHARS:
                    limit = limit * 3 // 4
                kept.append(cut)
            break
        kept.append(piece)
        size += len(piece) + 2
    return json.loads("[" + ", ".join(reversed(kept)) + "]")


# --- shape finders: each returns (action, text before it, extras) or None ---------------------------


def _from_tool_call(call: Any) -> Action:
    function = call.get("function") or call if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name") or "", str):
        raise InvalidArguments("the tool call has no function name")
    name, raw = function.get("name") or "", function.get("arguments")
    if isinstance(raw, str):
        try:
            raw = _tool_arguments(raw)
        except ValueError:
            raise InvalidArguments(
                f"the arguments of tool call {name!r} are not valid JSON (truncated?): {raw[:80]!r}"
            ) from None
    if not isinstance(raw, (dict, type(None))):
        raise InvalidArguments(f"the arguments of tool call {name!r} must be a JSON object")
    return _build(name, raw or {})


def _tool_arguments(raw: str) -> Any:
    """JSON at any length (fast); the python-literal fallback only for a readable length."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        if len(raw) > MAX_READ_CHARS:
            raise ValueError("too long for a python literal") from None
    return _literal(raw)


def _find_xml(text: str, reader: _Reader) -> tuple | None:
    matches = list(_XML_CALL.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    inner = m.group(1).strip()
    if inner.startswith("{"):
        found = _dict_action(_literal_or(reader, inner, None))
        if found is None:
            raise UnparseableReply("the <tool_call> holds no action name")
        return _build(*found), text[: m.start()], {}
    name = re.split(r"<arg_key>|\n", inner, maxsplit=1)[0].strip()
    if not re.fullmatch(r"[A-Za-z_]\w{0,63}", name):
        raise UnparseableReply("the <tool_call> does not start with an action name")
    args = {k: v if k in _RAW_TEXT_ARGS else _literal_or(reader, v, v) for k, v in _xml_args(inner)}
    return _build(name, args), text[: m.start()], {}


def _xml_args(inner: str) -> Iterator[tuple[str, str]]:
    """The (key, value) pairs of ``<arg_key>K</arg_key><arg_value>V</arg_value>`` (the last value may be unclosed)."""
    i = 0
    while (key_at := inner.find("<arg_key>", i)) >= 0:
        key_end = inner.find("</arg_key>", key_at)
        if key_end < 0:
            return
        i = key_end + len("</arg_key>")
        value_at = inner.find("<arg_value>", i)
        if value_at < 0 or inner[i:value_at].strip():
            continue
        value_at += len("<arg_value>")
        value_end = inner.find("</arg_value>", value_at)
        value_end = len(inner) if value_end < 0 else value_end
        yield inner[key_at + len("<arg_key>") : key_end].strip(), inner[value_at:value_end]
        i = value_end


def _find_box_call(text: str, reader: _Reader) -> tuple | None:
    for m in reversed(list(_BOX.finditer(text))[-_MAX_BOXES:]):
        found = _last_call(m.group(1), strict=True, reader=reader)
        if found is not None:
            return _build(*found[1:]), text[: m.start()], {}
    return None


def _find_call(text: str, reader: _Reader) -> tuple | None:
    found = _last_call(text, strict=False, reader=reader)
    return None if found is None else (_build(*found[1:]), text[: found[0]], {})


def _find_json(text: str, reader: _Reader) -> tuple | None:
    if "{" not in text:
        return None
    errors: list[ModelError] = []

    def read(start: int, end: int) -> Read:
        value = _literal_or(reader, text[start:end], None)
        found = _dict_action(value)
        return (None, None) if found is None else ((found, value), None)

    for start, _, (found, value), _ in _outermost_last(reader.brackets(text).groups["{"], read):
        if _known(found[0]):
            extra = {k: value[k] for k, t in (("thought", str), ("memory", list)) if isinstance(value.get(k), t)}
            return _build(*found), text[:start], extra
        errors.append(_unknown(found[0]))
    reader.deferred.extend(reversed(errors))
    return None


def _find_bare_box(text: str, reader: _Reader) -> tuple | None:
    for m in reversed(list(_BOX.finditer(text))[-_MAX_BOXES:]):
        if _TOKEN_BOX.fullmatch(m.group(1).strip()):
            return build_action("left_click", {"start_box": m.group(1)}), text[: m.start()], {}
    plain = _BOX_TOKENS.sub("", text)
    boxes = list(_BARE_BOX.finditer(plain))
    if boxes:
        return build_action("left_click", {"start_box": boxes[-1].group()}), plain[: boxes[-1].start()], {}
    return _prose_box(plain, reader)


def _prose_box(text: str, reader: _Reader) -> tuple | None:
    """The one in-range box written in prose (a provider stripped the box tokens), when nothing else is meant."""
    if reader.deferred or text.count("(") > _MAX_CALL_LIKE or _first_known_call(text) is not None:
        return None
    boxes: dict[tuple[int, ...], None] = {}
    for m in islice(_PROSE_BOX.finditer(text), _MAX_PROSE_BOXES):
        try:
            boxes.setdefault(parse_model_box(m.group()))
        except ModelError:
            continue  # out of range or not 2/4 numbers: not a place on the screen
        if len(boxes) > 3:
            break
    if len(boxes) > 1:
        shown = ", ".join("[" + ",".join(map(str, box)) + "]" for box in list(boxes)[:3])
        raise UnparseableReply(
            f"several different boxes ({shown}) and no action call: "
            "give exactly one action, e.g. <|begin_of_box|>left_click(start_box='[x,y]')<|end_of_box|>"
        )
    if not boxes:
        return None
    (box,) = boxes
    return build_action("left_click", {"start_box": list(box)}), text, {}


# --- helpers --------------------------------------------------------------------------------------


def _unknown(name: str) -> UnknownAction:
    """The UnknownAction to report for a name that is not (an alias of) an action name."""
    try:
        canonical_action_name(name)
    except UnknownAction as exc:
        return exc
    raise AssertionError(f"{name!r} is an action name")  # pragma: no cover


@functools.lru_cache(maxsize=4096)
def _known(name: str) -> bool:
    if len(name) > 32:
        return False
    try:
        canonical_action_name(name)
    except UnknownAction:
        return False
    return True


def _last_call(text: str, strict: bool, reader: _Reader) -> tuple | None:
    """(start, name, positional, keywords) of the last well-formed action call in text.

    Only outermost calls count (a call quoted inside another's argument is not an action).
    Inside box tokens (``strict``) the last call decides: an unknown name or a non-literal
    argument raises. In free text they are kept in ``reader.deferred`` and only reported if
    no action is found at all.
    """
    if "(" not in text:
        return None
    groups = []  # (start of the name, end of the call)
    for paren, end in reader.brackets(text).groups["("]:
        start = paren  # the name is the whole word before the parenthesis, as _CALL reads it
        while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
            start -= 1
        if start < paren and text[start] in _NAME_START and (start == 0 or text[start - 1] != "."):
            groups.append((start, end))
    errors: list[ModelError] = []

    def read(start: int, end: int) -> Read:
        try:
            return _parse_call(text[start:end], reader), None
        except _TooLong:
            raise
        except InvalidArguments as exc:
            return None, exc

    for start, _, parsed, error in _outermost_last(groups, read):
        if error is not None:
            if strict:
                raise error
            errors.append(error)
        elif _known(parsed[0]):
            return (start, *parsed)
        elif strict:
            raise _unknown(parsed[0])
        elif parsed[2]:  # keyword arguments: meant as an action
            errors.append(_unknown(parsed[0]))
    reader.deferred.extend(reversed(errors))
    return None


def _parse_call(source: str, reader: _Reader) -> tuple[str, list, dict] | None:
    """Read `name(k=v, ...)` with ast (never evaluated). None if it is not such a call."""
    for attempt in (source, source.replace("\n", "\\n") if "\n" in source else None):  # raw newlines in quotes
        if attempt is None:
            return None
        try:
            node = ast.parse(reader.charge(attempt).strip(), mode="eval").body
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


def _dict_action(value: Any, depth: int = 0) -> tuple[str, dict] | None:
    """(name, arguments) of a JSON action in any of the usual layouts, or None."""
    if not isinstance(value, dict) or depth > _MAX_NESTING:
        return None
    for key in _NAME_KEYS:
        inner = value.get(key)
        rest = {k: v for k, v in value.items() if k != key}
        if isinstance(inner, dict) and (found := _dict_action(inner, depth + 1)):
            return found[0], {**rest, **found[1]}
        if isinstance(inner, str) and inner.strip():
            for args_key in _ARGS_KEYS:
                nested = rest.pop(args_key, None)
                if isinstance(nested, str):
                    try:
                        nested = _literal(nested)
                    except ValueError:
                        pass
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


def _literal_or(reader: _Reader, source: str, default: Any) -> Any:
    try:
        return reader.literal(source)
    except ValueError:
        return default


# --- the action of a reply that is still arriving ---------------------------------------------------

_MEMORY_HEAD = re.compile(r"\bMemory\s*:", re.I)
# a closing mark in the streamed content, and the shapes the text before it may give as a complete action
_CLOSING_MARKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("<|end_of_box|>", ("box_call",)),
    ("</tool_call>", ("tool_call_xml",)),
)
_BEFORE_MEMORY = ("box_call", "tool_call_xml", "call", "json")
_MAX_EARLY_TRIES = 16  # closing marks looked at per reply: after that the whole reply decides


class ActionWatch:
    """Fed a reply while it streams; tells as soon as its action is complete.

    Complete means closed, never guessed: a call inside box tokens followed by its ``<|end_of_box|>``;
    a ``<tool_call>`` block followed by ``</tool_call>``; a bare call or JSON action followed by the
    ``Memory:`` head the trained format puts after the action; or the first tool call once its arguments
    are a whole JSON object. The text up to that mark goes through ``parse_reply`` (the same finders as the
    whole reply); the watch only decides *when* to ask. Text inside an unclosed ``<think>`` never counts.
    Each reply is looked at a bounded number of times (``_MAX_EARLY_TRIES``), so hostile text costs
    at most that many parses; the whole reply is parsed again at the end and must agree.
    """

    def __init__(self) -> None:
        self.content = ""
        self.found: ParsedReply | None = None
        self._tries = 0

    def feed_content(self, delta: str) -> ParsedReply | None:
        """Add a piece of content; the action if this piece completed it (once), else None."""
        start = max(0, len(self.content) - 16)  # a mark may straddle two pieces
        self.content += delta
        if self.found is not None or self._tries >= _MAX_EARLY_TRIES:
            return None
        region = self.content[start:]
        candidates: list[tuple[int, tuple[str, ...]]] = []
        for mark, sources in _CLOSING_MARKS:
            at = region.find(mark)
            while at >= 0:
                candidates.append((start + at + len(mark), sources))
                at = region.find(mark, at + 1)
        candidates += [(start + m.start(), _BEFORE_MEMORY) for m in _MEMORY_HEAD.finditer(region)]
        for end, sources in sorted(candidates):
            if self._tries >= _MAX_EARLY_TRIES:
                break
            self._tries += 1
            found = self._complete(self.content[:end], None, sources)
            if found is not None:
                return found
        return None

    def feed_tool_call(self, name: str, arguments: str) -> ParsedReply | None:
        """The first tool call as assembled so far; its action once its arguments are a whole JSON object."""
        if self.found is not None or self._tries >= _MAX_EARLY_TRIES or not name:
            return None
        if not arguments.rstrip().endswith("}"):
            return None
        try:
            if not isinstance(json.loads(arguments), dict):
                return None
        except (ValueError, RecursionError):
            return None
        self._tries += 1
        return self._complete(None, [{"function": {"name": name, "arguments": arguments}}], ("tool_call",))

    def _complete(self, text: str | None, calls: list[dict] | None, sources: tuple[str, ...]) -> ParsedReply | None:
        if text is not None and text.rfind("<think>") > text.rfind("</think>"):
            return None  # still thinking aloud in the content
        try:
            parsed = parse_reply(text, calls)
        except ModelError:
            return None
        if parsed.source not in sources:
            return None
        self.found = parsed
        return parsed
