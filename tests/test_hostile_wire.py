"""Everything between the endpoint and the parsed action, fed hostile input (issue 8).

The parser stays near-linear on pathological text; replies are capped; a 200 that is not a
chat completion is an endpoint failure after the retries; a request lasts about --timeout in
all and never outlives the run's deadline; server messages are scrubbed before they are cut.
"""

from __future__ import annotations

import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import Settings
from agent.errors import EXIT_NOT_DONE, EmptyReply, EndpointError, ModelError, TimeBudgetExceeded
from agent.fakeserver import FakeHTTP, FakeModelServer, completion
from agent.parsing import MAX_READ_CHARS, MAX_THOUGHT_CHARS, _Brackets, parse_reply
from agent.planner import GLMPlanner
from agent.protocol import MAX_REPLY_CHARS, RawReply
from tests.test_protocol import request

KB = 1024
ACTION = "\n<|begin_of_box|>left_click(start_box='[10,20]')<|end_of_box|>"


def rep(piece: str, size: int) -> str:
    return piece * (size // len(piece))


HOSTILE = {
    "call_openers": rep("a(", 500 * KB),
    "call_openers_1mb": rep("a(", 1000 * KB),
    "square_openers": rep("[", 1000 * KB),
    "brace_quote": rep('{"', 500 * KB),
    "unclosed_single_quote": "left_click(start_box='" + rep("x", 800 * KB),
    "unclosed_quotes_mixed": rep("('", 600 * KB),
    "box_tokens": rep("<|begin_of_box|>", 800 * KB),
    "box_calls": rep("<|begin_of_box|>a(<|end_of_box|>", 600 * KB),
    "tool_call_tokens": rep("<tool_call>", 800 * KB),
    "arg_keys": "<tool_call>type\n" + rep("<arg_key>", 600 * KB),
    "deep_nesting": rep("a(", 400 * KB) + rep(")", 200 * KB),
    "deep_brackets": rep("[", 500 * KB) + rep("]", 500 * KB),
    "memory_openers": rep("Memory: [", 700 * KB),
    "memory_lists": rep("Memory: [x] ", 700 * KB),
    "think_openers": rep("<think>", 700 * KB),
    "closed_calls": rep("a()", 600 * KB),
    "nested_json": rep('{"a":', 400 * KB) + "1" + rep("}", 80 * KB),
    "wide_call": "f(" * 100 + rep("1,", 500 * KB) + ")" * 100,
    "blank_then_word": "Click." + " " * (800 * KB) + "x" + ACTION,
    "fences": "Click OK.\n" + rep("```", 800 * KB) + ACTION,
    "many_names": " ".join(f"a{i:06d}(" for i in range(60_000)),
    "backslashes": rep("\\", 800 * KB),
    "prose_boxes": rep("[1,2] ", 800 * KB),
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_reply_ends_quickly(text):
    started = time.perf_counter()
    try:
        reply = parse_reply(text)
    except ModelError as exc:
        assert len(str(exc)) <= 400  # the message goes back to the model and into the recording
    else:
        assert len(reply.thought) <= MAX_THOUGHT_CHARS
    assert time.perf_counter() - started < 2.0  # was 10 s to minutes for many of these


def test_long_reply_still_yields_its_action():
    started = time.perf_counter()
    reply = parse_reply("The dialog shows a long licence text. " * 20_000 + ACTION)  # 780 KB
    assert time.perf_counter() - started < 2.0
    assert (reply.action.kind, reply.action.start_box) == ("left_click", (10, 20))
    assert len(reply.thought) == MAX_THOUGHT_CHARS and reply.thought.endswith("…")


def test_a_call_quoted_in_a_group_too_long_to_read_is_never_the_action():
    quoted = "type(content='" + "x" * MAX_READ_CHARS + ' left_click(start_box="[1,2]")\')'
    with pytest.raises(ModelError, match="too long to read"):
        parse_reply(quoted)


def _reference_end(text: str, start: int) -> int:
    """The old per-candidate scan (quadratic when run from every opener): the pairing's specification."""
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
        elif ch in "([{":
            stack.append({"(": ")", "[": "]", "{": "}"}[ch])
        elif ch in ")]}":
            if not stack or stack.pop() != ch:
                return -1
            if not stack:
                return i + 1
        i += 1
    return -1


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="()[]{}'\"\\ax", max_size=40))
def test_bracket_pairing_matches_a_scan_from_each_opener(text):
    pairs = _Brackets(text)
    for i, ch in enumerate(text):
        if ch in "([{":
            assert pairs.end(i, ch) == _reference_end(text, i), (text, i)


# --- replies are capped ------------------------------------------------------------------------


def test_reply_texts_are_capped_and_the_cut_named():
    big = "x" * (MAX_REPLY_CHARS + 10)
    call = {"id": "1", "type": "function", "function": {"name": "type", "arguments": big}}
    data = {"choices": [{"message": {"content": big, "reasoning_content": big, "tool_calls": [call]}}]}
    raw = RawReply.from_completion(data)
    assert len(raw.content) == len(raw.reasoning) == MAX_REPLY_CHARS
    assert len(raw.tool_calls[0]["function"]["arguments"]) == MAX_REPLY_CHARS
    assert raw.cut == ["content", "reasoning", "tool_calls[0].arguments"]
    assert RawReply.from_completion({"choices": [{"message": {"content": "ok"}}]}).cut is None


# --- wrong-shaped 200 replies ------------------------------------------------------------------


def _planner(handler, retries: int = 2, key: str | None = None, **extra):
    slept: list[float] = []
    settings_ = Settings.resolve("vllm", api_key=key, max_retries=retries)
    planner = GLMPlanner(settings_, transport=httpx.MockTransport(handler), sleep=slept.append, **extra)
    return planner, slept


WRONG_SHAPES = {
    "choices_string": ({"choices": "DONE()"}, "choices should be a list"),
    "choices_number": ({"choices": 1}, "choices should be a list"),
    "choice_not_object": ({"choices": ["DONE()"]}, "choices[0] should be an object"),
    "message_not_object": ({"choices": [{"message": "DONE()"}]}, "choices[0].message should be an object"),
    "no_message": ({"choices": [{"finish_reason": "stop"}]}, "choices[0].message is missing"),
    "usage_text": ({"choices": [{"message": {"content": "DONE()"}}], "usage": "12 tokens"}, "usage should be"),
    "content_number": ({"choices": [{"message": {"content": 42}}]}, "content should be a string"),
    "content_object": ({"choices": [{"message": {"content": {"text": "DONE()"}}}]}, "content should be a string"),
    "tool_function_text": (
        {"choices": [{"message": {"tool_calls": [{"function": "DONE"}]}}]},
        "tool_calls[0].function should be an object",
    ),
    "empty_choices": ({"choices": []}, "no choices"),
    "no_choices": ({"id": "x", "object": "chat.completion"}, "no choices"),
    "json_list": ([{"message": {"content": "DONE()"}}], "JSON list"),
    "error_in_200": ({"error": {"message": "upstream overloaded"}}, "upstream overloaded"),
}


@pytest.mark.parametrize("body,problem", WRONG_SHAPES.values(), ids=WRONG_SHAPES.keys())
def test_wrong_shaped_200_is_retried_then_an_endpoint_error(body, problem):
    calls = []

    def handler(r):
        calls.append(r)
        return httpx.Response(200, json=body)

    planner, slept = _planner(handler)
    with pytest.raises(EndpointError, match="failed 3 times") as info:
        planner.decide(request())
    assert problem in str(info.value) and info.value.exit_code == 3
    assert len(calls) == 3 and len(slept) == 2  # retried with the planner's backoff


def test_body_that_is_not_json_is_an_endpoint_error():
    planner, _ = _planner(lambda r: httpx.Response(200, text="<html>gateway</html>"), retries=0)
    with pytest.raises(EndpointError, match="not JSON"):
        planner.decide(request())


def test_a_wrong_shape_then_a_good_reply_succeeds():
    answers = [{"choices": []}, completion("DONE()")]
    planner, slept = _planner(lambda r: httpx.Response(200, json=answers.pop(0)))
    result = planner.decide(request())
    assert result.raw.content == "DONE()" and "no choices" in result.transport_retries[0] and len(slept) == 1


@pytest.mark.parametrize(
    "message,content,reasoning",
    [
        ({"content": [{"type": "text", "text": "Click. "}, {"type": "text", "text": "DONE()"}]}, "Click. DONE()", None),
        ({"content": [{"type": "image_url", "image_url": {}}, "DONE()"]}, "DONE()", None),
        ({"content": "DONE()", "reasoning_content": "hmm"}, "DONE()", "hmm"),
        ({"content": "DONE()", "reasoning": "think"}, "DONE()", "think"),
        ({"content": None, "reasoning_content": None}, None, None),
    ],
)
def test_known_variants_are_accepted(message, content, reasoning):
    planner, _ = _planner(lambda r: httpx.Response(200, json={"choices": [{"message": message}]}), retries=0)
    raw = planner.decide(request()).raw
    assert (raw.content, raw.reasoning) == (content, reasoning)


def test_arguments_as_an_object_are_accepted():
    call = {"id": "1", "type": "function", "function": {"name": "DONE", "arguments": {"answer": "42"}}}
    planner, _ = _planner(lambda r: httpx.Response(200, json={"choices": [{"message": {"tool_calls": [call]}}]}))
    raw = planner.decide(request()).raw
    assert parse_reply(raw.content, raw.tool_calls).action.answer == "42"


# --- server messages: scrubbed, then cut ---------------------------------------------------------

KEY = "sk-live/0123456789abcdefghij0123456789"


@pytest.mark.parametrize("status", [401, 400, 500])
@pytest.mark.parametrize("shape", ["json_message", "plain_text", "escaped_in_text"])
def test_server_message_echoing_the_key_leaves_no_prefix_of_it(status, shape):
    echoed = KEY.replace("/", "\\/") if shape == "escaped_in_text" else KEY  # '/' escaped as some servers do
    text = "x" * 280 + echoed + " is not a valid key, see the docs" * 5
    if shape == "json_message":
        answer = httpx.Response(status, json={"error": {"message": text}})
    else:
        answer = httpx.Response(status, text=text)
    planner, _ = _planner(lambda r: answer, retries=1, key=KEY)
    with pytest.raises(EndpointError) as info:
        planner.decide(request())
    assert KEY[:4] not in str(info.value) and "***" in str(info.value)


def test_the_runs_scrubber_runs_before_the_cut():
    secret = "hunter2-the-password"
    text = "y" * 290 + secret

    def scrub(value: str) -> str:
        return value.replace(secret, "***")

    planner, _ = _planner(lambda r: httpx.Response(400, text=text), scrub=scrub)
    with pytest.raises(EndpointError) as info:
        planner.decide(request())
    assert "hunt" not in str(info.value) and "***" in str(info.value)


# --- deadlines -----------------------------------------------------------------------------------


def _served(reply_of, **settings_):
    server = FakeModelServer(lambda body: reply_of())
    server.start()
    planner = GLMPlanner(Settings.resolve("vllm", base_url=server.base_url, **settings_))
    return server, planner


def test_timeout_bounds_the_whole_request_against_a_dripping_server():
    dripping = FakeHTTP(200, completion("DONE() " + "x" * 200), drip_s=0.05)  # about 15 s to send
    server, planner = _served(lambda: dripping, read_timeout=2, max_retries=0)
    started = time.monotonic()
    try:
        with pytest.raises(EndpointError, match="timeout"):
            planner.decide(request())
    finally:
        planner.close()
        server.stop()
    assert time.monotonic() - started < 6


def test_deadline_raises_time_budget_exceeded_with_retries_left():
    hanging = FakeHTTP(200, completion("DONE()"), delay_s=10)
    server, planner = _served(lambda: hanging, read_timeout=120, max_retries=4)
    req = request()
    req.deadline = time.monotonic() + 1
    started = time.monotonic()
    try:
        with pytest.raises(TimeBudgetExceeded) as info:
            planner.decide(req)
    finally:
        planner.close()
        server.stop()
    assert time.monotonic() - started < 4
    assert info.value.exit_code == EXIT_NOT_DONE and len(server.requests) == 1


def test_no_backoff_sleep_starts_past_the_deadline():
    planner, slept = _planner(lambda r: httpx.Response(503, headers={"Retry-After": "30"}), retries=4)
    req = request()
    req.deadline = time.monotonic() + 5
    with pytest.raises(TimeBudgetExceeded, match="HTTP 503"):
        planner.decide(req)
    assert slept == []


def test_a_deadline_already_past_sends_nothing():
    calls = []
    planner, _ = _planner(lambda r: calls.append(r) or httpx.Response(200, json=completion("DONE()")))
    req = request()
    req.deadline = time.monotonic() - 1
    with pytest.raises(TimeBudgetExceeded):
        planner.decide(req)
    assert calls == []


def test_a_body_over_the_size_limit_is_an_endpoint_problem(monkeypatch):
    monkeypatch.setattr("agent.planner.MAX_BODY_BYTES", 1000)
    planner, _ = _planner(lambda r: httpx.Response(200, json=completion("x" * 5000)), retries=0)
    with pytest.raises(EndpointError, match="over"):
        planner.decide(request())


def test_empty_content_is_still_a_model_error_not_an_endpoint_one():
    planner, _ = _planner(lambda r: httpx.Response(200, json=completion("")), retries=0)
    raw = planner.decide(request()).raw
    with pytest.raises(EmptyReply):  # the loop shows it back to the model
        parse_reply(raw.content, raw.tool_calls, raw.reasoning)


def test_max_time_bounds_a_request_in_flight_and_ends_as_max_time(tmp_path):
    """--max-time ends the run as max_time (exit 1) even while the model is still answering."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from agent.fakeserver import FakeHTTP, FakeModelServer
    from tests.conftest import cli_env

    screens = Path(__file__).parent / "screens" / "dialog"
    with FakeModelServer(lambda body: FakeHTTP(200, {"choices": []}, delay_s=30)) as server:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "agent", "run", "x", "--provider", "vllm", "--base-url", server.base_url,
             "--screens", str(screens), "--recordings", str(tmp_path), "--max-time", "2"],
            capture_output=True, text=True, timeout=60, env=cli_env(),
        )  # fmt: skip
        elapsed = time.monotonic() - started
    assert proc.returncode == 1 and "time budget (2 s) ran out" in proc.stdout, proc.stdout + proc.stderr
    assert elapsed < 15  # without the deadline the request waits 30 s, then retries
    from agent.trajectory import load

    assert load(next(tmp_path.iterdir())).outcome.status == "max_time"
