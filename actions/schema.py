"""The action space: one pydantic model per action GLM-4.5V was trained on (desktop).

Names and argument names are the trained ones (see ``shared/GLM45V.md``), so a reply in
the model's own text format and a tool call validate into the same objects. The tool
JSON schemas sent to the model are generated from these models (``tool_schemas``), so
the two can never drift.

Pointing arguments (``start_box``, ``end_box``) hold *model space* coordinates:
thousandths of the image the model was sent. They accept a point ``[x, y]`` or a box
``[x1, y1, x2, y2]`` (the centre is used), as a list or as a string such as
``'[586,446]'``, ``'[[1,2,3,4]]'`` or ``'(1,2)'``. Values outside 0-1000 are a model error.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    WithJsonSchema,
    model_serializer,
)

from agent.errors import CoordinateOutOfRange, InvalidArguments, UnknownAction
from agent.geometry import check_model

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_model_box(value: Any) -> tuple[int, ...]:
    """Turn a point or box in any of the model's bracket styles into 2 or 4 ints.

    Raises CoordinateOutOfRange for values outside 0-1000 and InvalidArguments for
    anything that is not 2 or 4 numbers.
    """
    if isinstance(value, dict):  # {"x": .., "y": ..} seen from some tool-call servers
        keys = [k for k in ("x1", "y1", "x2", "y2") if k in value] or [k for k in ("x", "y") if k in value]
        value = [value[k] for k in keys]
    if isinstance(value, str):
        numbers = _NUMBER.findall(value)
    elif isinstance(value, (list, tuple)):
        flat: list[Any] = []
        for item in value:
            flat.extend(item if isinstance(item, (list, tuple)) else [item])
        numbers = flat
    else:
        raise InvalidArguments(f"expected a point [x,y] or a box [x1,y1,x2,y2], got {value!r}")
    try:
        coords = tuple(float(n) for n in numbers)
    except (TypeError, ValueError):
        raise InvalidArguments(f"coordinates must be numbers, got {value!r}") from None
    if len(coords) not in (2, 4):
        raise InvalidArguments(f"expected a point [x,y] or a box [x1,y1,x2,y2], got {len(coords)} numbers in {value!r}")
    for c in coords:
        check_model(c, value)
    return tuple(int(round(c)) for c in coords)


ModelBox = Annotated[
    tuple[int, ...],
    BeforeValidator(parse_model_box),
    WithJsonSchema(
        {
            "type": "string",
            "description": "A point '[x,y]' (or a box '[x1,y1,x2,y2]') in thousandths (0-999) "
            "of the screenshot's width and height.",
        }
    ),
]
ElementInfo = Annotated[str, Field(description="What is being pointed at, e.g. 'OK button'.")]


class _Action(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    # How the action is written in the prompt's action space (``action_space_text``): a short
    # comment, and placeholders that differ from the defaults ('[x,y]' for a point, '' for text).
    prompt_hint: ClassVar[str] = ""
    prompt_placeholders: ClassVar[dict[str, str]] = {}


class _Pointing(_Action):
    start_box: ModelBox
    element_info: ElementInfo = ""


class LeftClick(_Pointing):
    """Click the left mouse button on an element."""

    kind: Literal["left_click"] = "left_click"
    prompt_hint: ClassVar[str] = "click the element at [x,y]"


class RightClick(_Pointing):
    """Click the right mouse button on an element."""

    kind: Literal["right_click"] = "right_click"


class MiddleClick(_Pointing):
    """Click the middle mouse button on an element."""

    kind: Literal["middle_click"] = "middle_click"


class Hover(_Pointing):
    """Move the mouse over an element without clicking."""

    kind: Literal["hover"] = "hover"
    prompt_hint: ClassVar[str] = "move the mouse without clicking"


class LeftDoubleClick(_Pointing):
    """Double-click the left mouse button on an element."""

    kind: Literal["left_double_click"] = "left_double_click"


class LeftDrag(_Action):
    """Press the left button at start_box, move to end_box, release."""

    kind: Literal["left_drag"] = "left_drag"
    prompt_placeholders: ClassVar[dict[str, str]] = {"start_box": "[x1,y1]", "end_box": "[x2,y2]"}
    start_box: ModelBox
    end_box: ModelBox
    element_info: ElementInfo = ""


class Key(_Action):
    """Press a key or a combination joined by '+', e.g. 'ctrl+c', 'enter'."""

    kind: Literal["key"] = "key"
    prompt_hint: ClassVar[str] = "a key or a combination joined by '+', e.g. 'ctrl+c', 'enter', 'alt+f4'"
    keys: Annotated[str, Field(min_length=1, description="Keys joined by '+', e.g. 'ctrl+s'.")]


class Type(_Action):
    """Type text into the focused element (does not click or clear it first)."""

    kind: Literal["type"] = "type"
    prompt_hint: ClassVar[str] = "types into the focused element; click the field first, it does not clear it"
    content: Annotated[str, Field(description="The exact text to type.")]
    start_box: ModelBox | None = None
    """Where to click first, then type (the mobile ``input_text`` shape carries a box); None: the focused element."""

    @model_serializer(mode="wrap")
    def _without_unset_box(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A type action without a box dumps exactly as before the box existed (recordings compare equal)."""
        data = handler(self)
        if data.get("start_box") is None:
            data.pop("start_box", None)
        return data


class Scroll(_Action):
    """Scroll with the mouse over an element."""

    kind: Literal["scroll"] = "scroll"
    prompt_placeholders: ClassVar[dict[str, str]] = {"direction": "down or up"}
    start_box: ModelBox
    direction: Annotated[
        Literal["up", "down"], BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v)
    ]
    step: Annotated[int, Field(ge=1, le=50, description="How many wheel clicks.")] = 5
    element_info: ElementInfo = ""


class Wait(_Action):
    """Wait about 5 seconds for the screen to change."""

    kind: Literal["WAIT"] = "WAIT"
    prompt_hint: ClassVar[str] = "wait about 5 seconds for the screen to change"


class Done(_Action):
    """The task is complete. For a question about the screen, give the answer."""

    kind: Literal["DONE"] = "DONE"
    prompt_hint: ClassVar[str] = "the task is complete; if the task asks a question, put the answer in answer"
    answer: Annotated[str | None, Field(description="The answer, if the task asked a question.")] = None


class Fail(_Action):
    """The task cannot be completed."""

    kind: Literal["FAIL"] = "FAIL"
    prompt_hint: ClassVar[str] = "the task cannot be done"
    reason: Annotated[str | None, Field(description="Why the task is infeasible.")] = None


class CallUser(_Action):
    """Ask the person at the computer a question (information only they have, or a choice that is
    theirs to make); their answer comes with the next step. Offered only when someone can answer."""

    kind: Literal["call_user"] = "call_user"
    prompt_hint: ClassVar[str] = (
        "ask the person at this computer what only they can tell (a password, a choice that is theirs); "
        "their answer comes with the next step"
    )
    question: Annotated[str, Field(min_length=1, description="The question, in one or two sentences.")]


Action = Annotated[
    Union[
        LeftClick,
        RightClick,
        MiddleClick,
        Hover,
        LeftDoubleClick,
        LeftDrag,
        Key,
        Type,
        Scroll,
        Wait,
        Done,
        Fail,
        CallUser,
    ],
    Field(discriminator="kind"),
]
ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)
# kind -> model, in the order above (the order of the tools and of the prompt's action space)
ACTION_TYPES: dict[str, type[_Action]] = {
    cls.model_fields["kind"].default: cls for cls in get_args(get_args(Action)[0])
}
POINTING_KINDS = frozenset(k for k, c in ACTION_TYPES.items() if "start_box" in c.model_fields)
TERMINAL_KINDS = frozenset({"DONE", "FAIL"})
ASK_KIND = "call_user"  # neither pointing nor terminal: the loop asks the person, nothing is executed

# Names the model is known to use for the same actions, mapped to the trained ones.
_ALIASES = {
    "click": "left_click",
    "tap": "left_click",
    "double_click": "left_double_click",
    "doubleclick": "left_double_click",
    "drag": "left_drag",
    "hotkey": "key",
    "press": "key",
    "keypress": "key",
    "type_text": "type",
    "input": "type",
    "input_text": "type",
    "move": "hover",
    "mouse_move": "hover",
    "finished": "DONE",
    "finish": "DONE",
    "answer": "DONE",
    "infeasible": "FAIL",
    "wait": "WAIT",
    "done": "DONE",
    "fail": "FAIL",
    "left_single": "left_click",
    "left_double": "left_double_click",
    "right_single": "right_click",
    "double_left_click": "left_double_click",
    "press_key": "key",
    "key_press": "key",
    "write": "type",
    "ask_user": "call_user",  # GLM's own OSWorld agent names it ASK_USER
}
# Argument names seen in the wild, mapped to the trained ones.
_ARG_ALIASES = {
    "box_2d": "start_box",
    "box": "start_box",
    "point": "start_box",
    "coordinate": "start_box",
    "start_point": "start_box",
    "end_point": "end_box",
    "text": "content",
    "key": "keys",
    "hotkey": "keys",
    "element": "element_info",
    "description": "element_info",
}


def canonical_action_name(name: str) -> str:
    """Map a name the model used to the trained action name, or raise UnknownAction."""
    bare = name.strip()
    if bare in ACTION_TYPES:
        return bare
    lowered = bare.lower()
    if lowered in ACTION_TYPES:
        return lowered
    if lowered in _ALIASES:
        return _ALIASES[lowered]
    if bare.upper() in ACTION_TYPES:
        return bare.upper()
    known = ", ".join(ACTION_TYPES)
    raise UnknownAction(f"unknown action {name!r}; the action space is: {known}")


def build_action(name: str, arguments: dict[str, Any]) -> Action:
    """Validate a named action with its arguments into an Action, or raise a ModelError."""
    kind = canonical_action_name(name)
    args: dict[str, Any] = {}
    for key, value in arguments.items():
        key = _ARG_ALIASES.get(key, key)
        args.setdefault(key, value)
    if kind == "key" and isinstance(args.get("keys"), (list, tuple)):
        args["keys"] = "+".join(str(k) for k in args["keys"])
    if kind == "DONE" and "answer" not in args and isinstance(args.get("content"), str):
        args["answer"] = args.pop("content")
    if kind == "FAIL" and "reason" not in args:
        for other in ("content", "answer"):
            if isinstance(args.get(other), str):
                args["reason"] = args.pop(other)
                break
    if kind == ASK_KIND and "question" not in args:
        for other in ("content", "message", "query", "prompt"):
            if isinstance(args.get(other), str):
                args["question"] = args.pop(other)
                break
    args["kind"] = kind
    try:
        return ACTION_ADAPTER.validate_python(args)
    except CoordinateOutOfRange:
        raise
    except ValueError as exc:  # pydantic.ValidationError, or our own from a validator
        cause = _model_error_inside(exc)
        if cause is not None:
            raise cause from None
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or kind}: {err['msg']}"
            for err in getattr(exc, "errors", lambda: [])()
        ) or str(exc)
        raise InvalidArguments(f"bad arguments for {kind}: {problems}") from None


def _model_error_inside(exc: Exception) -> Exception | None:
    """pydantic wraps errors raised in validators; dig ours back out."""
    for err in getattr(exc, "errors", lambda: [])():
        ctx = err.get("ctx") or {}
        inner = ctx.get("error")
        if isinstance(inner, (CoordinateOutOfRange, InvalidArguments)):
            return inner
    return None


def offered_kinds(ask_user: bool) -> tuple[str, ...]:
    """The action names offered to the model: every action, call_user only when someone can answer."""
    return tuple(kind for kind in ACTION_TYPES if ask_user or kind != ASK_KIND)


def tool_schemas(ask_user: bool = False) -> list[dict[str, Any]]:
    """OpenAI-style tool definitions, one per offered action, generated from the models above."""
    return copy.deepcopy(_tool_schemas(ask_user))


@functools.lru_cache(maxsize=2)
def _tool_schemas(ask_user: bool) -> list[dict[str, Any]]:
    # pydantic builds JSON schemas slowly (~9 ms for all actions): once per process
    tools = []
    for kind in offered_kinds(ask_user):
        cls = ACTION_TYPES[kind]
        schema = cls.model_json_schema()
        props = {k: v for k, v in schema.get("properties", {}).items() if k != "kind"}
        for prop in props.values():
            prop.pop("title", None)
        required = [r for r in schema.get("required", []) if r != "kind"]
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": kind,
                    "description": (cls.__doc__ or "").strip(),
                    "parameters": {"type": "object", "properties": props, "required": required},
                },
            }
        )
    return tools


@functools.lru_cache(maxsize=8)
def action_space_text(kinds: frozenset[str] | None = None) -> str:
    """The action space in the trained text format, one line per action, generated from the models
    (like the tool schemas): ``left_click(start_box='[x,y]', element_info='')  # click ...``.
    Optional arguments the model was not trained with (e.g. type's start_box) are left out."""
    lines = []
    for kind, cls in ACTION_TYPES.items():
        if kinds is not None and kind not in kinds:
            continue
        args = []
        for name, info in cls.model_fields.items():
            if name == "kind" or (not info.is_required() and info.default is None and kind not in TERMINAL_KINDS):
                continue
            if name in cls.prompt_placeholders:
                value = repr(cls.prompt_placeholders[name])
            elif name in ("start_box", "end_box"):
                value = "'[x,y]'"
            elif isinstance(info.default, int) and not isinstance(info.default, bool):
                value = str(info.default)
            elif get_origin(info.annotation) is Literal:
                value = repr(" or ".join(get_args(info.annotation)))
            else:
                value = "''"
            args.append(f"{name}={value}")
        line = f"{kind}({', '.join(args)})"
        lines.append(f"{line}  # {cls.prompt_hint}" if cls.prompt_hint else line)
    return "\n".join(lines)


def action_to_call(action: Action) -> str:
    """Render an action in the trained text format, e.g. left_click(start_box='[1,2]', ...)."""
    parts = []
    for name, value in action.model_dump(exclude={"kind"}, exclude_none=True).items():
        if name in ("start_box", "end_box"):
            value = "[" + ",".join(str(v) for v in value) + "]"
        if name == "element_info" and not value:
            continue
        parts.append(f"{name}={json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else _quote(value)}")
    return f"{action.kind}({', '.join(parts)})"


def _quote(text: str) -> str:
    """A Python string literal of ``text`` that holds no raw control, format or separator
    character (each is written as its escape), so the call can be printed, recorded and put
    in a prompt safely, and ``ast.literal_eval`` reads it back to ``text``."""
    from agent.text import quoted

    return quoted(text)
