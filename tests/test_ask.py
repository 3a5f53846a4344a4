"""The model asks the person: call_user in the action space, the parser, the loop and a terminal.

Offered (text action space and tools) only when someone can answer; the answer goes into the
next request's history and into the recording. With no one to ask (--no-ask, stdin not a
terminal, or no hook) a call_user ends the run as fail with the question as the reason.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actions.executor import DryRunExecutor
from actions.schema import CallUser, tool_schemas
from agent.capture import ImageScreen
from agent.config import Settings
from agent.fakeserver import FakeModelServer
from agent.loop import Limits, run_episode
from agent.parsing import parse_reply
from agent.planner import ScriptedPlanner
from agent.protocol import StepRequest, build_body
from agent.safety import Approver
from agent.trajectory import JsonlRecorder, load
from tests.conftest import cli_env

SCREENS = Path(__file__).parent / "screens" / "dialog"
SETTINGS = Settings.resolve("vllm")
QUESTION = "Which printer should I use, the office one or the home one?"


@pytest.mark.parametrize(
    "content,tool_calls",
    [
        (f"<|begin_of_box|>call_user(question='{QUESTION}')<|end_of_box|>", None),
        (f"I need to know.\nASK_USER('{QUESTION}')", None),
        (f'{{"action": "ask_user", "text": "{QUESTION}"}}', None),
        (f"<tool_call>ASK_USER<arg_key>question</arg_key><arg_value>{QUESTION}</arg_value></tool_call>", None),
        ("", [{"function": {"name": "call_user", "arguments": json.dumps({"question": QUESTION})}}]),
        ("", [{"function": {"name": "ask_user", "arguments": json.dumps({"content": QUESTION})}}]),
    ],
)
def test_every_shape_and_name_of_the_question_parses(content, tool_calls):
    assert parse_reply(content, tool_calls).action == CallUser(question=QUESTION)


def test_a_numeric_question_stays_text():
    reply = "<tool_call>ASK_USER<arg_key>question</arg_key><arg_value>42</arg_value></tool_call>"
    assert parse_reply(reply).action == CallUser(question="42")


def _request(ask_user: bool) -> StepRequest:
    from PIL import Image

    from agent.image import prepare_for_model

    return StepRequest("t", 1, prepare_for_model(Image.new("RGB", (640, 400), "white")), ask_user=ask_user)


@pytest.mark.parametrize("ask_user", [True, False])
def test_call_user_is_offered_only_when_someone_can_answer(ask_user):
    text_body, text_message = build_body(_request(ask_user), SETTINGS, use_tools=False)
    tools_body, _ = build_body(_request(ask_user), SETTINGS, use_tools=True)
    assert ("call_user(question=" in text_message.prompt_text) is ask_user
    names = [t["function"]["name"] for t in tools_body["tools"]]
    assert ("call_user" in names) is ask_user and "left_click" in names and "tools" not in text_body
    assert [t["function"]["name"] for t in tool_schemas(ask_user)] == names


def run(replies, tmp_path, **hooks):
    planner = ScriptedPlanner(replies)
    executor = DryRunExecutor()
    recorder = JsonlRecorder(tmp_path / "rec", "print the report", SETTINGS.public())
    result = run_episode(
        "print the report",
        screen=ImageScreen(SCREENS),
        planner=planner,
        executor=executor,
        settings=SETTINGS,
        limits=Limits(max_steps=5),
        recorder=recorder,
        **hooks,
    )
    return result, planner, executor, load(recorder.path)


def test_the_answer_reaches_the_next_request_and_the_recording(tmp_path):
    asked: list[str] = []

    def ask_user(question: str) -> str:
        asked.append(question)
        return "the office one"

    replies = [f"call_user(question='{QUESTION}')", "left_click(start_box='[500,497]')", "DONE()"]
    result, planner, executor, rec = run(replies, tmp_path, ask_user=ask_user)
    assert asked == [QUESTION] and result.outcome.status == "done"
    assert [p.kind for p in executor.performed] == ["left_click"]  # the question presses nothing
    assert all(call.ask_user for call in planner.calls)
    last = planner.calls[1].history[-1]
    assert last.result == "the person answered: 'the office one'"
    _, message = build_body(planner.calls[1], SETTINGS, use_tools=False)
    assert f"call_user(question='{QUESTION}') Result: the person answered: 'the office one'" in message.prompt_text
    step = rec.steps[0]
    assert step.action == {"kind": "call_user", "question": QUESTION} and step.user_answer == "the office one"


def test_with_no_one_to_ask_a_question_ends_the_run_as_fail(tmp_path):
    result, planner, executor, rec = run([f"ASK_USER('{QUESTION}')", "DONE()"], tmp_path)
    assert result.outcome.status == "fail" and QUESTION in result.outcome.message
    assert "--no-ask" in result.outcome.message and rec.outcome.status == "fail"
    assert not planner.calls[0].ask_user and len(planner.replies) == 1 and executor.performed == []


def test_no_answer_ends_the_run_as_fail(tmp_path):
    result, *_ = run([f"call_user(question='{QUESTION}')", "DONE()"], tmp_path, ask_user=lambda q: None)
    assert result.outcome.status == "fail" and QUESTION in result.outcome.message
    assert "no answer came" in result.outcome.message


def test_time_spent_answering_is_not_charged_to_the_time_budget(tmp_path):
    def slow_person(question: str) -> str:
        time.sleep(1.0)
        return "yes"

    planner = ScriptedPlanner(["call_user(question='Go on?')", "DONE()"])
    result = run_episode(
        "t",
        screen=ImageScreen(SCREENS),
        planner=planner,
        executor=DryRunExecutor(),
        settings=SETTINGS,
        limits=Limits(max_steps=5, max_time_s=0.8),
        ask_user=slow_person,
    )
    assert result.outcome.status == "done"


def test_confirm_does_not_ask_to_approve_a_question():
    assert not Approver(confirm_all=True).needs_approval(CallUser(question="Which one?"))


# --- the terminal ------------------------------------------------------------------------------


def asking_brain(body):
    """Ask at the first step; then answer DONE with what the person said (read from the prompt)."""
    text = "".join(p.get("text", "") for p in body["messages"][0]["content"] if p["type"] == "text")
    if "step 1:" not in text:
        return f"<|begin_of_box|>call_user(question='{QUESTION}\\x1b[2J')<|end_of_box|>"
    said = text.split("the person answered: ", 1)[1].split("\n", 1)[0]
    return f"DONE(answer={said})"


def deskpilot_args(server, tmp_path, *extra):
    return [sys.executable, "-m", "agent", "run", "print the report", "--provider", "vllm", "--protocol", "text"] + [
        "--base-url", server.base_url, "--screens", str(SCREENS), "--recordings", str(tmp_path / "rec"), *extra,
    ]  # fmt: skip


def run_in_terminal(args, answer: str | None, timeout: float = 60.0) -> tuple[int, str]:
    """Run ``args`` with a pseudo-terminal as stdin and stdout; type ``answer`` when asked."""
    main, child = pty.openpty()
    proc = subprocess.Popen(args, stdin=child, stdout=child, stderr=child, env=cli_env(), close_fds=True)
    os.close(child)
    output, typed = b"", answer is None
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if not typed and b"your answer" in output:
                os.write(main, answer.encode() + b"\n")  # type: ignore[union-attr]
                typed = True
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=10), output.decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)


def test_in_a_terminal_the_question_is_shown_and_the_answer_goes_to_the_model_and_the_recording(tmp_path):
    with FakeModelServer(asking_brain) as server:
        code, out = run_in_terminal(deskpilot_args(server, tmp_path), "the office one")
        first = server.requests[0]["messages"][0]["content"][0]["text"]
    assert code == 0, out
    assert f"the model asks: {QUESTION}\\x1b[2J" in out  # shown, its escape sequence made visible
    assert "answer: the office one" in out and "call_user(question=''" in first
    rec = load(next((tmp_path / "rec").iterdir()))
    assert rec.steps[0].user_answer == "the office one" and rec.outcome.answer == "the office one"


@pytest.mark.parametrize("how", ["--no-ask in a terminal", "no terminal"])
def test_without_asking_a_question_fails_the_run_with_the_question_as_reason(tmp_path, how):
    with FakeModelServer(asking_brain) as server:
        if how == "no terminal":
            proc = subprocess.run(
                deskpilot_args(server, tmp_path), input="the office one\n", capture_output=True, text=True,
                timeout=60, env=cli_env(),
            )  # fmt: skip
            code, out = proc.returncode, proc.stdout + proc.stderr
        else:
            code, out = run_in_terminal(deskpilot_args(server, tmp_path, "--no-ask"), None)
        first = server.requests[0]["messages"][0]["content"][0]["text"]
    assert code == 1, out
    assert "your answer" not in out and "fail after 1 steps" in out and QUESTION in out
    assert "call_user" not in first  # not offered
    rec = load(next((tmp_path / "rec").iterdir()))
    assert rec.outcome.status == "fail" and QUESTION in rec.outcome.message and rec.steps[0].user_answer is None
