"""The person takes the desktop over between steps, and hands it back.

In the loop (a scripted takeover on mocked screens), in the Takeover toggle itself, in the
report, and live: on Xvfb the F9 hotkey pauses ``deskpilot run`` after its current action,
the "person" moves the window with xdotool, F9 again resumes, and the model's next
screenshot shows the window where the person left it: its click lands there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops

from actions.executor import DryRunExecutor
from agent.capture import ImageScreen
from agent.config import Settings
from agent.errors import Interrupted
from agent.fakeserver import FakeModelServer, images_in
from agent.loop import Limits, run_episode
from agent.planner import ScriptedPlanner
from agent.report import render
from agent.safety import Takeover, describe_hotkey
from agent.trajectory import JsonlRecorder, load
from tests.conftest import cli_env
from tests.fake_brains import CYAN, reply, thousandths_of
from tests.live_support import TargetApp, have_xvfb, xvfb_display

SCREENS = Path(__file__).parent / "screens" / "dialog"
EMPTY, TYPED = SCREENS / "01-empty.png", SCREENS / "02-typed.png"
SETTINGS = Settings.resolve("vllm")


class ScriptedTakeover:
    """The person asks for the desktop before the given agent steps; ``hold`` is their work."""

    def __init__(self, before_calls: set[int], planner: ScriptedPlanner) -> None:
        self.before_calls, self.planner = before_calls, planner
        self.holds = 0

    def requested(self) -> bool:
        return len(self.planner.calls) in self.before_calls and self.holds < len(self.before_calls)

    def hold(self) -> None:
        self.holds += 1


def test_a_takeover_is_a_human_step_and_the_model_is_told(tmp_path):
    # screens in capture order: step 1, the human step's before and after, step 3
    screen = ImageScreen([EMPTY, EMPTY, TYPED, TYPED])
    planner = ScriptedPlanner(["left_click(start_box='[500,497]')", "DONE()"])
    takeover = ScriptedTakeover({1}, planner)
    recorder = JsonlRecorder(tmp_path / "rec", "t", SETTINGS.public())
    result = run_episode(
        "t",
        screen=screen,
        planner=planner,
        executor=DryRunExecutor(),
        settings=SETTINGS,
        limits=Limits(max_steps=2),  # the human step does not use up the agent's steps
        recorder=recorder,
        takeover=takeover,
    )
    assert result.outcome.status == "done" and takeover.holds == 1
    rec = load(recorder.path)
    assert [(s.step, s.decision, s.action and s.action["kind"]) for s in rec.steps] == [
        (1, None, "left_click"),
        (2, "takeover", None),
        (3, None, "DONE"),
    ]
    human = rec.steps[1]
    assert human.attempts == [] and human.note.startswith("the person had the desktop for")
    before, after = (Image.open(p).convert("RGB") for p in rec.screenshot_paths(human))
    assert ImageChops.difference(after, Image.open(TYPED).convert("RGB")).getbbox() is None
    assert ImageChops.difference(before, after).getbbox() is not None
    told = planner.calls[1].history[-1]
    assert told.step == 2 and "the person took the desktop over" in told.result
    assert planner.calls[1].step == 3  # the next step is numbered after the human one
    page = render(rec)
    assert page.count("data:image/png;base64,") == 4 and "when they handed it back" in page


def test_the_report_shows_a_question_and_its_answer(tmp_path):
    planner = ScriptedPlanner(["call_user(question='Which <b>printer</b>?')", "DONE()"])
    recorder = JsonlRecorder(tmp_path / "rec", "t", SETTINGS.public())
    run_episode(
        "t",
        screen=ImageScreen(SCREENS),
        planner=planner,
        executor=DryRunExecutor(),
        settings=SETTINGS,
        recorder=recorder,
        ask_user=lambda question: "the <i>office</i> one",
    )
    page = render(load(recorder.path))
    assert "The model asked: Which &lt;b&gt;printer&lt;/b&gt;?" in page
    assert "The person answered: the &lt;i&gt;office&lt;/i&gt; one" in page


def test_takeover_toggles_and_hold_waits_for_the_hotkey_again():
    said: list[str] = []
    takeover = Takeover("f9", say=said.append)
    assert not takeover.requested()
    takeover.toggle()
    takeover.toggle()  # pressed twice before the agent got there: withdrawn
    assert not takeover.requested()
    takeover.toggle()
    assert takeover.requested()
    threading.Timer(0.2, takeover.toggle).start()  # the person hands back
    takeover.hold()
    assert not takeover.requested()
    assert any("press F9 again to hand it back" in line for line in said) and said[-1].startswith("deskpilot: resumed")


def test_the_kill_switch_ends_a_hold():
    stop = threading.Event()
    takeover = Takeover("f9", stop_event=stop)
    takeover.toggle()
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(Interrupted):
        takeover.hold()


def test_hotkey_names_for_people():
    assert describe_hotkey("f9") == "F9" and describe_hotkey("ctrl+alt+t") == "ctrl+alt+t"


# --- live ---------------------------------------------------------------------------------------


class TakeoverBrain:
    """Step 1: hover over the field, but only once the test has pressed F9. After the person's
    turn: click the field wherever it is now, then DONE. Keeps every screenshot's field centre."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.go = threading.Event()
        self.fields: list[list[int]] = []
        self.texts: list[str] = []

    def __call__(self, body: dict[str, Any]) -> Any:
        text = "".join(p.get("text", "") for p in body["messages"][0]["content"] if p["type"] == "text")
        self.texts.append(text)
        field = thousandths_of(images_in(body)[-1], CYAN)
        self.fields.append(field)
        if "step 1:" not in text:
            self.asked.set()
            self.go.wait(30)
            return reply(("hover", {"start_box": str(field)}), tools="tools" in body)
        if "step 3:" not in text:
            return reply(("left_click", {"start_box": str(field), "element_info": "name field"}), tools="tools" in body)
        return reply(("DONE", {}), tools="tools" in body)


def xdotool(*args: str) -> str:
    return subprocess.run(["xdotool", *args], check=True, capture_output=True, text=True, timeout=10).stdout


@pytest.mark.live
@pytest.mark.skipif(not have_xvfb(), reason="needs Xvfb and openbox")
def test_live_takeover_pauses_and_resumes_with_the_persons_change_visible(tmp_path):
    lines: list[str] = []

    def wait_for_line(text: str, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while not any(text in line for line in lines):
            if time.monotonic() > end:
                raise TimeoutError(f"no {text!r} in the output: {lines}")
            time.sleep(0.05)

    with xvfb_display(1280, 800), TargetApp(tmp_path / "events.jsonl", geometry="720x520+40+40") as app:
        brain = TakeoverBrain()
        with FakeModelServer(brain) as server:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "fill in the name", "--provider", "vllm"]
                + ["--base-url", server.base_url, "--recordings", str(tmp_path / "rec"), "--max-steps", "5"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=cli_env(DISPLAY=os.environ["DISPLAY"]),
            )
            reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
            reader.start()
            try:
                assert brain.asked.wait(60), lines
                xdotool("key", "F9")  # while the model thinks about step 1
                wait_for_line("F9 pressed")
                brain.go.set()
                wait_for_line("paused: the desktop is yours")
                time.sleep(0.5)
                assert len(brain.texts) == 1  # paused: the model is not asked meanwhile
                window = xdotool("search", "--name", "deskpilot target").split()[0]
                xdotool("windowmove", "--sync", window, "460", "240")  # the person moves the window
                xdotool("key", "F9")
                assert proc.wait(60) == 0, "".join(lines)
            finally:
                if proc.poll() is None:
                    proc.kill()
            reader.join(5)
        entry = app.rect("entry")
        clicks = [e for e in app.events() if e["event"] == "click"]
    out = "".join(lines)
    assert "resumed" in out
    # the model saw the field move, and clicked it where the person left it
    assert brain.fields[1] != brain.fields[0]
    assert [c["widget"] for c in clicks] == ["entry"]
    assert clicks[0]["x_root"] - entry["x"] > 300 and clicks[0]["y_root"] - entry["y"] > 150
    assert "the person took the desktop over" in brain.texts[1]
    rec = load(next((tmp_path / "rec").iterdir()))
    assert [(s.decision, s.action and s.action["kind"]) for s in rec.steps] == [
        (None, "hover"),
        ("takeover", None),
        (None, "left_click"),
        (None, "DONE"),
    ]
    before, after = (Image.open(p).convert("RGB") for p in rec.screenshot_paths(rec.steps[1]))
    assert ImageChops.difference(before, after).getbbox() is not None


def test_a_recording_with_a_question_and_a_takeover_checks_and_simulates(tmp_path):
    from agent.replay.offline import check, recorded_actions, simulate

    planner = ScriptedPlanner(["call_user(question='Which?')", "left_click(start_box='[500,497]')", "DONE()"])
    recorder = JsonlRecorder(tmp_path / "rec", "t", SETTINGS.public())
    run_episode(
        "t",
        screen=ImageScreen([EMPTY, EMPTY, EMPTY, TYPED, TYPED]),
        planner=planner,
        executor=DryRunExecutor(),
        settings=SETTINGS,
        limits=Limits(max_steps=3),
        recorder=recorder,
        ask_user=lambda question: "this one",
        takeover=ScriptedTakeover({2}, planner),
    )
    rec = load(recorder.path)
    assert [s.decision for s in rec.steps] == [None, None, "takeover", None]
    assert [p.kind for p in recorded_actions(rec)] == ["left_click"]  # the question pressed nothing
    assert check(rec) == [] and simulate(rec) == []
