"""Every reply shape GLM-4.5V is known to produce, parsed into the right action (agent/parsing.py)."""

from __future__ import annotations

import json
import os

import pytest

from agent.errors import (
    CoordinateOutOfRange,
    EmptyReply,
    InvalidArguments,
    ModelError,
    UnknownAction,
    UnparseableReply,
)
from agent.parsing import MAX_MEMORY_CHARS, MAX_THOUGHT_CHARS, ParsedReply, parse_reply, strip_markup

BOX = "<|begin_of_box|>{}<|end_of_box|>"


def tool_call(name: str, arguments) -> list[dict]:
    return [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}]


# (id, content, tool_calls, expected kind, expected start_box, other expected fields, source)
SHAPES = [
    (
        "tool_call_string_args",
        "",
        tool_call("left_click", '{"start_box": "[586,446]", "element_info": "OK"}'),
        "left_click",
        (586, 446),
        {"element_info": "OK"},
        "tool_call",
    ),
    (
        "tool_call_object_args",
        None,
        tool_call("right_click", {"start_box": [10, 20]}),
        "right_click",
        (10, 20),
        {},
        "tool_call",
    ),
    ("tool_call_empty_args", None, tool_call("WAIT", ""), "WAIT", None, {}, "tool_call"),
    (
        "tool_call_scroll",
        None,
        tool_call("scroll", {"start_box": "[500,500]", "direction": "up", "step": 3}),
        "scroll",
        (500, 500),
        {"direction": "up", "step": 3},
        "tool_call",
    ),
    (
        "tool_call_key_list",
        None,
        tool_call("key", '{"keys": ["ctrl", "c"]}'),
        "key",
        None,
        {"keys": "ctrl+c"},
        "tool_call",
    ),
    (
        "xml_json_values",
        "Drag it.\n<tool_call>left_drag\n<arg_key>start_box</arg_key>\n<arg_value>[100,200]</arg_value>\n"
        "<arg_key>end_box</arg_key>\n<arg_value>[300,400]</arg_value>\n</tool_call>",
        None,
        "left_drag",
        (100, 200),
        {"end_box": (300, 400)},
        "tool_call_xml",
    ),
    (
        "xml_python_literal_values",
        "<tool_call>scroll\n<arg_key>start_box</arg_key>\n<arg_value>(250, 750)</arg_value>\n"
        "<arg_key>direction</arg_key>\n<arg_value>down</arg_value>\n"
        "<arg_key>step</arg_key>\n<arg_value>7</arg_value>\n</tool_call>",
        None,
        "scroll",
        (250, 750),
        {"direction": "down", "step": 7},
        "tool_call_xml",
    ),
    (
        "xml_python_list_keys",
        "<tool_call>key\n<arg_key>keys</arg_key>\n<arg_value>['ctrl', 'shift', 't']</arg_value>\n</tool_call>",
        None,
        "key",
        None,
        {"keys": "ctrl+shift+t"},
        "tool_call_xml",
    ),
    (
        "xml_text_stays_raw",
        "<tool_call>type\n<arg_key>content</arg_key>\n<arg_value>12345</arg_value>\n</tool_call>",
        None,
        "type",
        None,
        {"content": "12345"},
        "tool_call_xml",
    ),
    (
        "xml_json_body",
        '<tool_call>{"name": "hover", "arguments": {"start_box": "[7,8]"}}</tool_call>',
        None,
        "hover",
        (7, 8),
        {},
        "tool_call_xml",
    ),
    (
        "box_call",
        "The OK button.\n" + BOX.format("left_click(start_box='[586,446]', element_info='OK')"),
        None,
        "left_click",
        (586, 446),
        {"element_info": "OK"},
        "box_call",
    ),
    (
        "box_call_double_brackets",
        BOX.format("left_double_click(start_box='[[100,200,300,400]]')"),
        None,
        "left_double_click",
        (100, 200, 300, 400),
        {},
        "box_call",
    ),
    (
        "box_call_parens",
        BOX.format("middle_click(start_box='(586,446)')"),
        None,
        "middle_click",
        (586, 446),
        {},
        "box_call",
    ),
    (
        "box_call_unterminated",
        "Now:\n<|begin_of_box|>hover(start_box='[1,999]')",
        None,
        "hover",
        (1, 999),
        {},
        "box_call",
    ),
    (
        "leading_newline",
        "\n\nI click Save.\nleft_click(start_box='[512,384]', element_info='Save')",
        None,
        "left_click",
        (512, 384),
        {"element_info": "Save"},
        "call",
    ),
    (
        "dangling_think_then_box",
        "<think>The menu is closed, I need to open it" + BOX.format("left_click(start_box='[20,10]')"),
        None,
        "left_click",
        (20, 10),
        {},
        "box_call",
    ),
    (
        "closed_think",
        "<think>left_click(start_box='[1,1]') maybe?</think>\nOpen menu.\nleft_click(start_box='[30,15]')",
        None,
        "left_click",
        (30, 15),
        {},
        "call",
    ),
    (
        "answer_wrapper",
        "<answer>right_click(start_box='[640,360]')</answer>",
        None,
        "right_click",
        (640, 360),
        {},
        "call",
    ),
    (
        "drag",
        "left_drag(start_box='[10,20]', end_box='[900,800]')",
        None,
        "left_drag",
        (10, 20),
        {"end_box": (900, 800)},
        "call",
    ),
    (
        "scroll_double_quotes",
        'scroll(start_box="[500,600]", direction="down", step=5)',
        None,
        "scroll",
        (500, 600),
        {"direction": "down", "step": 5},
        "call",
    ),
    ("key_combo", "Copy it.\nkey(keys='ctrl+c')", None, "key", None, {"keys": "ctrl+c"}, "call"),
    ("key_positional", "key('enter')", None, "key", None, {"keys": "enter"}, "call"),
    (
        "type_escapes",
        "type(content='it\\'s \"quoted\"\\nline2')",
        None,
        "type",
        None,
        {"content": 'it\'s "quoted"\nline2'},
        "call",
    ),
    ("type_raw_newline", "type(content='line1\nline2')", None, "type", None, {"content": "line1\nline2"}, "call"),
    (
        "type_unicode",
        BOX.format("type(content='Crème brûlée, Grüße 世界 ✓')"),
        None,
        "type",
        None,
        {"content": "Crème brûlée, Grüße 世界 ✓"},
        "box_call",
    ),
    (
        "type_quoting_a_call",
        "type(content=\"left_click(start_box='[1,1]')\")",
        None,
        "type",
        None,
        {"content": "left_click(start_box='[1,1]')"},
        "call",
    ),
    ("wait", "Loading.\nWAIT()", None, "WAIT", None, {}, "call"),
    ("wait_lowercase", BOX.format("wait()"), None, "WAIT", None, {}, "box_call"),
    ("done", BOX.format("DONE()"), None, "DONE", None, {"answer": None}, "box_call"),
    ("done_answer", "The total is 42.\nDONE(answer='42 apples')", None, "DONE", None, {"answer": "42 apples"}, "call"),
    ("fail", "FAIL()", None, "FAIL", None, {}, "call"),
    ("alias_click", "click(start_box='[5,6]')", None, "left_click", (5, 6), {}, "call"),
    (
        "last_call_wins",
        "I could left_click(start_box='[1,1]') but rather right_click(start_box='[2,2]')",
        None,
        "right_click",
        (2, 2),
        {},
        "call",
    ),
    (
        "prose_call_then_box",
        "I will click(the button) now.\n" + BOX.format("[300,301]"),
        None,
        "left_click",
        (300, 301),
        {},
        "bare_box",
    ),
    (
        "fenced_json",
        'Here:\n```json\n{"action": "left_click", "start_box": "[11,22]"}\n```',
        None,
        "left_click",
        (11, 22),
        {},
        "json",
    ),
    (
        "bare_json",
        '{"action": "scroll", "start_box": [5, 5], "direction": "up", "step": 2}',
        None,
        "scroll",
        (5, 5),
        {"direction": "up", "step": 2},
        "json",
    ),
    (
        "python_dict_true",
        "{'action': 'hover', 'start_box': '[40,50]', 'visible': True}",
        None,
        "hover",
        (40, 50),
        {},
        "json",
    ),
    (
        "action_type_box_2d",
        '{"action_type": "click", "box_2d": [[100,200,300,400]]}',
        None,
        "left_click",
        (100, 200, 300, 400),
        {},
        "json",
    ),
    (
        "name_arguments",
        '{"name": "type", "arguments": {"text": "hello"}}',
        None,
        "type",
        None,
        {"content": "hello"},
        "json",
    ),
    (
        "nested_action",
        '{"thought": "x", "action": {"name": "left_double_click", "start_box": [3, 4]}}',
        None,
        "left_double_click",
        (3, 4),
        {},
        "json",
    ),
    (
        "openai_function_json",
        '{"type": "function", "function": {"name": "key", "arguments": "{\\"keys\\": \\"enter\\"}"}}',
        None,
        "key",
        None,
        {"keys": "enter"},
        "json",
    ),
    (
        "json_quoting_json",
        """{'action': 'type', 'content': '{"action": "WAIT"}'}""",
        None,
        "type",
        None,
        {"content": '{"action": "WAIT"}'},
        "json",
    ),
    ("json_x_y", '{"action": "left_click", "x": 10, "y": 20}', None, "left_click", (10, 20), {}, "json"),
    ("json_done_content", '{"action": "DONE", "content": "Paris"}', None, "DONE", None, {"answer": "Paris"}, "json"),
    (
        "box_json",
        BOX.format('{"action": "right_click", "coordinate": [9, 8]}'),
        None,
        "right_click",
        (9, 8),
        {},
        "json",
    ),
    (
        "bare_box_text",
        "The target is here:\n[[100,200,300,400]]",
        None,
        "left_click",
        (100, 200, 300, 400),
        {},
        "bare_box",
    ),
    ("bare_box_line", "Click:\n[586,446]\n", None, "left_click", (586, 446), {}, "bare_box"),
    ("bare_box_token", BOX.format("[586,446]"), None, "left_click", (586, 446), {}, "bare_box"),
    (
        "prose_box_without_tokens",
        "The button is at [835,626,931,883].",
        None,
        "left_click",
        (835, 626, 931, 883),
        {},
        "bare_box",
    ),
    (
        "prose_point_repeated",
        "<think>maybe [1,2,3,4]?</think>Click at [500, 300]; yes, [500,300] is the OK button.",
        None,
        "left_click",
        (500, 300),
        {},
        "bare_box",
    ),
    (
        "mobile_input_text_keeps_its_box",
        "{'action_type': 'input_text', 'text': 'hello', 'box_2d': [[100,200,300,400]]}",
        None,
        "type",
        (100, 200, 300, 400),
        {"content": "hello"},
        "json",
    ),
    (
        "expression_call_then_box",
        "left_click(start_box=get_pos())\n" + BOX.format("[40,41]"),
        None,
        "left_click",
        (40, 41),
        {},
        "bare_box",
    ),
]


@pytest.mark.parametrize(
    "content,tool_calls,kind,start_box,fields,source", [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES]
)
def test_reply_shapes(content, tool_calls, kind, start_box, fields, source):
    reply = parse_reply(content, tool_calls)
    assert isinstance(reply, ParsedReply)
    assert reply.action.kind == kind
    assert reply.source == source
    if start_box is not None:
        assert reply.action.start_box == start_box
        assert all(isinstance(v, int) for v in reply.action.start_box)
    for name, value in fields.items():
        assert getattr(reply.action, name) == value


def test_at_least_25_shapes():
    assert len({s[0] for s in SHAPES}) >= 25
    assert {s[-1] for s in SHAPES} == {"tool_call", "tool_call_xml", "box_call", "call", "json", "bare_box"}


@pytest.mark.parametrize(
    "content,thought",
    [
        (
            "The OK button closes it.\n" + BOX.format("left_click(start_box='[1,2]')") + "\nMemory: []",
            "The OK button closes it.",
        ),
        ("<think>secret plan</think>\nOpening the menu.\nAction: left_click(start_box='[1,2]')", "Opening the menu."),
        (
            "\nSave first.\n<tool_call>key\n<arg_key>keys</arg_key>\n<arg_value>ctrl+s</arg_value>\n</tool_call>",
            "Save first.",
        ),
        ('Here it is:\n```json\n{"action": "WAIT"}\n```', "Here it is:"),
        (BOX.format("WAIT()"), ""),
        ('{"thought": "from the json", "action": "WAIT"}', "from the json"),
    ],
)
def test_thought(content, thought):
    assert parse_reply(content).thought == thought


def test_thought_and_memory_beside_a_tool_call():
    reply = parse_reply('Scrolling down.\nMemory: ["price 12"]', tool_call("WAIT", "{}"))
    assert (reply.thought, reply.memory, reply.action.kind) == ("Scrolling down.", ["price 12"], "WAIT")


@pytest.mark.parametrize(
    "content,memory",
    [
        (
            BOX.format("WAIT()") + '\nMemory:\n```json\n["total is 42", "next: save"]\n```',
            ["total is 42", "next: save"],
        ),
        (BOX.format("WAIT()") + "\nMemory: ['python', 'style']", ["python", "style"]),
        (BOX.format("WAIT()") + "\nMemory: []", []),
        (BOX.format("WAIT()"), None),
        # the memory list must not be read as an action or a box
        (
            "right_click(start_box='[7,7]')\nMemory: [\"left_click(start_box='[9,9]')\", \"[[1,2,3,4]]\"]",
            ["left_click(start_box='[9,9]')", "[[1,2,3,4]]"],
        ),
    ],
)
def test_memory(content, memory):
    reply = parse_reply(content)
    assert reply.memory == memory
    assert reply.action.kind in ("WAIT", "right_click")
    if reply.action.kind == "right_click":
        assert reply.action.start_box == (7, 7)


def test_memory_alone_is_not_an_action():
    with pytest.raises(UnparseableReply):
        parse_reply("I am not sure yet.\nMemory: [[100, 200, 300, 400]]")


@pytest.mark.parametrize(
    "content,reasoning,budget",
    [
        (None, None, False),
        ("", None, False),
        ("\n  \n", None, False),
        (None, "long thinking", True),
        ("", "long thinking", True),
        ("<think>I should open the", None, True),
    ],
)
def test_empty_reply(content, reasoning, budget):
    with pytest.raises(EmptyReply) as info:
        parse_reply(content, None, reasoning)
    assert ("token budget" in str(info.value)) is budget


@pytest.mark.parametrize(
    "content",
    [
        "I am not sure what to do here.",
        "I will click(the button) to continue.",
        "Let me think (carefully) about this [step 1].",
        "<|begin_of_box|>the OK button<|end_of_box|>",
        'Memory: ["only a note"]',
    ],
)
def test_unparseable(content):
    with pytest.raises(UnparseableReply) as info:
        parse_reply(content)
    assert "action" in str(info.value) and len(str(info.value)) < 200


@pytest.mark.parametrize(
    "content,tool_calls,error",
    [
        (BOX.format("triple_click(start_box='[1,2]')"), None, UnknownAction),
        ("teleport(start_box='[1,2]')", None, UnknownAction),
        ('{"action": "launch_rockets", "start_box": "[1,2]"}', None, UnknownAction),
        (None, tool_call("launch_rockets", "{}"), UnknownAction),
        (BOX.format("left_click(start_box='[1500,446]')"), None, CoordinateOutOfRange),
        (None, tool_call("left_click", {"start_box": [1500, 2]}), CoordinateOutOfRange),
        ("[[1500,0,1600,10]]", None, CoordinateOutOfRange),
        ('{"action_type": "click", "box_2d": [[1,2,3,1500]]}', None, CoordinateOutOfRange),
        (BOX.format("left_click(element_info='OK')"), None, InvalidArguments),
        ("scroll(start_box='[1,2]')", None, InvalidArguments),
        (None, tool_call("left_drag", '{"start_box": "[1,2]"}'), InvalidArguments),
        (None, tool_call("type", '{"content": "hel'), InvalidArguments),
        (None, tool_call("left_click", '{"start_box": "[586,4'), InvalidArguments),
        (None, tool_call("left_click", '"just a string"'), InvalidArguments),
        ("<|begin_of_box|>left_click(start_box='[1,2,3]')<|end_of_box|>", None, InvalidArguments),
    ],
)
def test_model_errors(content, tool_calls, error):
    with pytest.raises(error):
        parse_reply(content, tool_calls)


def test_truncated_tool_arguments_say_so():
    with pytest.raises(InvalidArguments, match="JSON") as info:
        parse_reply(None, tool_call("type", '{"content": "hel'))
    assert "truncated" in str(info.value)


def test_unknown_action_lists_the_action_space():
    with pytest.raises(UnknownAction, match="left_click"):
        parse_reply(BOX.format("triple_click(start_box='[1,2]')"))


@pytest.mark.parametrize(
    "content",
    [
        "__import__('os').system('touch {marker}')",
        BOX.format("__import__('os').system('touch {marker}')"),
        "left_click(start_box=__import__('os').system('touch {marker}'))",
        BOX.format("type(content=open('{marker}', 'w').write('x'))"),
        "{{'action': 'type', 'content': __import__('os').system('touch {marker}')}}",
        "<tool_call>type\n<arg_key>step</arg_key>\n<arg_value>__import__('os').system('touch {marker}')</arg_value>\n</tool_call>",
    ],
)
def test_code_in_reply_is_never_run(content, tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    with pytest.raises(ModelError):
        parse_reply(content.format(marker=marker))
    assert calls == [] and not marker.exists()


def test_tool_call_wins_over_content():
    reply = parse_reply(BOX.format("left_click(start_box='[1,1]')"), tool_call("hover", {"start_box": "[2,2]"}))
    assert (reply.action.kind, reply.action.start_box, reply.source) == ("hover", (2, 2), "tool_call")


def test_tool_call_arguments_object_and_string_agree():
    args = {"start_box": "[100,900]", "direction": "down", "step": 4}
    by_object = parse_reply(None, tool_call("scroll", args)).action
    by_string = parse_reply(None, tool_call("scroll", json.dumps(args))).action
    assert by_object == by_string and by_object.start_box == (100, 900)


def test_strip_markup():
    text = "<think>hidden</think>\n<answer>Shown <|begin_of_box|>[1,2]<|end_of_box|></answer>\n"
    assert strip_markup(text) == "Shown [1,2]"
    assert strip_markup("before <think>never closed") == "before"
    assert strip_markup("Keep <think>drop</think>this") == "Keep this"


def test_several_prose_boxes_are_an_error_that_says_so():
    with pytest.raises(UnparseableReply, match="several different boxes"):
        parse_reply("It is either at [100,200,300,400] or at [500,600,700,800].")


@pytest.mark.parametrize(
    "content,error",
    [
        ("left_click(start_box=get_pos()) at [100,200,300,400]", InvalidArguments),  # an action call is present
        ("teleport(start_box='[1,2]') near [100,200,300,400]", UnknownAction),
        ("In 2024 I saw [2024,1999]; nothing else.", UnparseableReply),  # out of range: not a place
        ("The values are [1,2,3].", UnparseableReply),  # three numbers: neither a point nor a box
    ],
)
def test_prose_box_only_when_nothing_else_is_meant(content, error):
    with pytest.raises(error):
        parse_reply(content)


def test_the_last_call_wins_however_many_come_before():
    reply = parse_reply("I could left_click(start_box='[1,1]')." + " f(x)" * 300 + " right_click(start_box='[2,2]')")
    assert (reply.action.kind, reply.action.start_box) == ("right_click", (2, 2))


def test_a_call_quoted_among_many_calls_is_still_not_the_action():
    quoted = "type(content='" + "g(y) " * 2000 + 'left_click(start_box="[1,2]")\')'
    reply = parse_reply(quoted)
    assert reply.action.kind == "type" and reply.action.content.endswith('left_click(start_box="[1,2]")')


def test_thought_is_capped_and_the_cut_marked():
    reply = parse_reply("I read the page. " * 1000 + "\nleft_click(start_box='[1,2]')")
    assert len(reply.thought) == MAX_THOUGHT_CHARS and reply.thought.endswith("…")
    assert reply.thought.startswith("I read the page.")
    from_json = parse_reply(json.dumps({"thought": "t" * 5000, "action": "WAIT"}))
    assert len(from_json.thought) == MAX_THOUGHT_CHARS


def test_memory_is_plain_json_and_capped_keeping_the_latest():
    reply = parse_reply("WAIT()\nMemory: [{1, 2}, (3, 4), b'x', 'note']")
    assert reply.memory == ["{1, 2}", [3, 4], "b'x'", "note"]
    notes = [f"note {i}: " + "x" * 90 for i in range(200)]
    big = parse_reply("WAIT()\nMemory: " + json.dumps(notes)).memory
    assert len(json.dumps(big, ensure_ascii=False)) <= MAX_MEMORY_CHARS and big[-1] == notes[-1]
    assert big == notes[-len(big) :]
    huge_item = parse_reply("WAIT()\nMemory: " + json.dumps(["y" * 20_000])).memory
    assert len(json.dumps(huge_item)) <= MAX_MEMORY_CHARS and huge_item[0].endswith("…")


def test_long_model_error_messages_are_cut():
    with pytest.raises(InvalidArguments) as info:
        parse_reply("left_click(start_box='" + "1," * 20_000 + "')")
    assert len(str(info.value)) <= 400 and str(info.value).endswith("…")
