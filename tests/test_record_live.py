"""deskpilot record on a real X server: xdotool drives the Tk target app while ``deskpilot record``
runs; the recording must hold exactly those actions at the right targets, each with the screen
as it was before it, and ``replay --mode execute`` on a fresh app must reproduce what the app
received. Assertions are on the recording and on the app's own event log."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from agent.fakeserver import FakeModelServer
from agent.trajectory import load
from tests.conftest import cli_env
from tests.live_support import TargetApp, have_xvfb, xvfb_display

pytestmark = [pytest.mark.live, pytest.mark.skipif(not have_xvfb(), reason="needs Xvfb and openbox")]
TEXT = "Crème brûlée, Grüße 世界 ✓"
CYAN = (0, 255, 255)


class Recorder:
    """``deskpilot record`` in a subprocess, its output read line by line."""

    def __init__(self, recordings: Path, *args: str) -> None:
        self.recordings = recordings
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "record", "--recordings", str(recordings), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(DISPLAY=os.environ["DISPLAY"]),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.out.append(line)
            self.lines.put(line)
        self.lines.put("")

    def wait_ready(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if "ready" in line:
                return
            if not line:
                break
        raise AssertionError(f"no ready line: {''.join(self.out)} {self.proc.stderr.read()}")

    def wait(self, timeout: float = 60) -> tuple[int, str, str]:
        returncode = self.proc.wait(timeout)
        time.sleep(0.2)
        return returncode, "".join(self.out), self.proc.stderr.read()


def xdotool(*args: object, pause: float = 0.5) -> None:
    subprocess.run(["xdotool", *map(str, args)], check=True)
    time.sleep(pause)  # the rolling capture sees the screen settle before the next action


def bind_characters(text: str) -> None:
    """Give the text's characters keys of their own, as a keyboard layout that has them does.
    xdotool then presses those keys; otherwise it rebinds a spare keycode around each press and
    reverts it at once, which the Tk app on a loaded machine reads too late (it lost the "è" of
    "Crème"). The recorder sees these binding requests and follows them."""
    from Xlib.display import Display

    from actions.x11_typing import keysym_for

    display = Display()
    info = display.display.info
    first = info.min_keycode
    rows = display.get_keyboard_mapping(first, info.max_keycode - first + 1)
    spare = [first + i for i, row in enumerate(rows) if not any(row) and first + i != 8]
    present = {keysym for row in rows for keysym in row}
    wanted = [k for k in dict.fromkeys(keysym_for(c) for c in text) if k not in present]
    assert len(wanted) <= len(spare)
    for keysym, keycode in zip(wanted, spare):
        display.change_keyboard_mapping(keycode, [(keysym,) * len(rows[0])])
    display.sync()
    display.close()
    time.sleep(0.5)  # the app takes the new keymap in


def count(events: list[dict], kind: str, **fields: object) -> int:
    """How many of the app's events are of this kind, with these fields."""
    return sum(e["event"] == kind and all(e.get(k) == v for k, v in fields.items()) for e in events)


def inside(rect: dict, point: tuple[int, int]) -> bool:
    return rect["x"] <= point[0] < rect["x"] + rect["width"] and rect["y"] <= point[1] < rect["y"] + rect["height"]


def cyan_share(path: Path, rect: dict, origin: tuple[int, int] = (0, 0)) -> float:
    """How much of a widget's rectangle is its own colour in a recorded screenshot."""
    with Image.open(path) as image:
        left, top = rect["x"] - origin[0], rect["y"] - origin[1]
        part = image.convert("RGB").crop((left, top, left + rect["width"], top + rect["height"]))
    colours = part.getcolors(part.width * part.height) or []
    return sum(count for count, colour in colours if colour == CYAN) / (part.width * part.height)


def replay(folder: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", "replay", str(folder), "--mode", "execute", "--speed", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(DISPLAY=os.environ["DISPLAY"], **env),
    )


def app_story(events: list[dict]) -> dict:
    """What the app received, in a form two runs can be compared by."""
    return {
        "clicks": [(e["widget"], e["button"], e["x_root"], e["y_root"]) for e in events if e["event"] == "click"],
        "double_clicks": [(e["widget"], e["x_root"], e["y_root"]) for e in events if e["event"] == "double_click"],
        "drags": [(tuple(e["start"]), tuple(e["end"])) for e in events if e["event"] == "drag"],
        "scrolls": [(e["direction"], e["x_root"], e["y_root"]) for e in events if e["event"] == "scroll"],
        "combos": [(e["keysym"], e["state"] & 0x5) for e in events if e["event"] == "key" and e["state"] & 0x4],
        "text": ([e["text"] for e in events if e["event"] == "entry"] or [""])[-1],
    }


@pytest.fixture
def desktop():
    with xvfb_display(1280, 800):
        yield


def test_record_a_demonstration_and_replay_it(desktop, tmp_path):
    with TargetApp(tmp_path / "events.jsonl") as app:
        recorder = Recorder(tmp_path / "rec", "--task", "fill in the form")
        recorder.wait_ready()
        entry, ok, canvas = app.center("entry"), app.center("ok"), app.rect("canvas")
        drag_from = (canvas["x"] + 40, canvas["y"] + 40)
        drag_to = (canvas["x"] + 260, canvas["y"] + 90)
        wheel_at = (canvas["x"] + 400, canvas["y"] + 60)
        double_at = (canvas["x"] + 120, canvas["y"] + 150)
        bind_characters(TEXT)
        # each action waits for the app to have it: on a loaded machine the window manager can
        # hold a click back while keys sent after it go ahead
        xdotool("mousemove", *entry, "click", 1)
        app.wait_for(lambda events: count(events, "click", widget="entry") == 1, 20)
        xdotool("type", "--delay", 60, TEXT)
        app.wait_for(lambda events: count(events, "entry", text=TEXT) == 1, 20)
        xdotool("key", "ctrl+shift+t")
        app.wait_for(lambda events: count(events, "key", keysym="T") == 1, 20)
        xdotool("mousemove", *drag_from, "mousedown", 1, pause=0.2)
        xdotool("mousemove", drag_from[0] + 100, drag_from[1] + 20, pause=0.1)
        xdotool("mousemove", *drag_to, "mouseup", 1)
        app.wait_for(lambda events: count(events, "drag") == 1, 20)
        xdotool("mousemove", *wheel_at, "click", "--repeat", 3, "--delay", 80, 5)
        app.wait_for(lambda events: count(events, "scroll") == 3, 20)
        xdotool("mousemove", *double_at, "click", "--repeat", 2, "--delay", 90, 1)
        app.wait_for(lambda events: count(events, "double_click") == 1, 20)
        time.sleep(0.6)  # past the double-click interval: the next click is a click of its own
        xdotool("mousemove", *ok, "click", 1)
        app.wait_for(lambda events: count(events, "click", widget="ok") == 1, 20)
        xdotool("key", "--delay", 80, "Escape", "Escape", "Escape")  # the kill hotkey
        returncode, out, err = recorder.wait()
        recorded_story = app_story(app.events())
    assert returncode == 0, out + err
    assert "recorded 7 actions; stopped by the kill hotkey" in out and "Traceback" not in err

    rec = load(next((tmp_path / "rec").iterdir()))
    assert rec.header.mode == "human" and rec.outcome.status == "done" and rec.header.task == "fill in the form"
    actions = [s.action for s in rec.steps]
    assert [a["kind"] for a in actions] == [
        "left_click",
        "type",
        "key",
        "left_drag",
        "scroll",
        "left_double_click",
        "left_click",
    ]
    assert actions[1]["content"] == TEXT and actions[2]["keys"] == "ctrl+shift+t"
    assert (actions[4]["direction"], actions[4]["step"]) == ("down", 3)
    points = [[tuple(t.point_screen) for t in s.targets] for s in rec.steps]
    assert points[0] == [entry] and points[3] == [drag_from, drag_to] and points[4] == [wheel_at]
    assert points[5] == [double_at] and points[6] == [ok]
    for step in rec.steps:
        for target in step.targets:  # thousandths of the capture
            x_image, y_image = target.point_image
            assert abs(target.box_model[0] - x_image * 1000 / 1280) <= 0.5
            assert abs(target.box_model[1] - y_image * 1000 / 800) <= 0.5
    # each screenshot is the screen before the action: the field is empty when typing starts,
    # and holds the whole text when the combination is pressed
    entry_rect = app.rect("entry")
    assert cyan_share(rec.path / rec.steps[1].screenshot, entry_rect) > 0.97
    assert cyan_share(rec.path / rec.steps[2].screenshot, entry_rect) < 0.95
    assert recorded_story["text"] == TEXT and len(recorded_story["scrolls"]) == 3

    with TargetApp(tmp_path / "replayed.jsonl") as app:
        proc = replay(rec.path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        app.wait_for(lambda events: any(e["event"] == "click" and e["widget"] == "ok" for e in events), 10)
        replayed_story = app_story(app.events())
    assert "performed 7 recorded actions" in proc.stdout
    assert replayed_story == recorded_story


def test_ctrl_c_ends_a_scoped_masked_described_recording_and_replay_types_the_secret(desktop, tmp_path):
    secret = "hunter2 Grüße"

    def name_the_field(body: dict) -> str:  # the model, asked what the clicked element is
        return "hover(start_box='[400,440]', element_info='Name field')"

    with TargetApp(tmp_path / "events.jsonl") as app, FakeModelServer(name_the_field) as server:
        recorder = Recorder(
            tmp_path / "rec",
            *("--window", "title:deskpilot target", "--mask-typing"),
            *("--describe", "--provider", "vllm", "--base-url", server.base_url),
        )
        recorder.wait_ready()
        bind_characters(secret)
        xdotool("mousemove", 30, 30, "click", 1)  # the desktop, outside the window: left out
        xdotool("mousemove", *app.center("entry"), "click", 1)
        app.wait_for(lambda events: count(events, "click", widget="entry") == 1, 20)
        xdotool("type", "--delay", 60, secret)
        app.wait_for(lambda events: count(events, "entry", text=secret) == 1, 20)
        recorder.proc.send_signal(signal.SIGINT)
        returncode, out, err = recorder.wait()
    assert returncode == 0, out + err
    assert "recorded 2 actions; stopped by Ctrl-C (1 left out)" in out

    rec = load(next((tmp_path / "rec").iterdir()))
    assert [s.action_text for s in rec.steps][1] == "type(content='{{secret:TYPED_1}}')"
    assert rec.steps[0].action["element_info"] == "Name field" and len(server.requests) == 1
    assert rec.header.provider == "vllm" and rec.header.settings["describe"] is True
    window = app.rect("window")
    assert rec.steps[0].geometry.left == window["x"] and rec.steps[0].geometry.width == window["width"]
    assert inside(window, rec.steps[0].targets[0].point_screen)
    assert not any(secret.encode() in p.read_bytes() for p in rec.path.rglob("*") if p.suffix in (".json", ".jsonl"))

    with TargetApp(tmp_path / "replayed.jsonl") as app:
        proc = replay(rec.path)
        assert proc.returncode == 2 and "DESKPILOT_SECRET_TYPED_1" in proc.stderr
        proc = replay(rec.path, DESKPILOT_SECRET_TYPED_1=secret)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        app.wait_for(lambda events: any(e["event"] == "entry" and e["text"] == secret for e in events), 20)
        assert secret not in proc.stdout


def test_the_committed_recording_of_a_person_replays_on_the_target_app(tmp_path):
    example = Path(__file__).resolve().parent.parent / "recordings" / "examples" / "form-recorded-person"
    copy = tmp_path / example.name  # replay writes crops into the recording on a mismatch
    shutil.copytree(example, copy)
    monitor = load(copy).header.monitor
    with xvfb_display(monitor.width, monitor.height), TargetApp(geometry="720x520+120+60") as app:  # as made
        proc = replay(copy)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        app.wait_for(lambda events: count(events, "click", widget="ok") == 1, 10)
        story = app_story(app.events())
    assert [c[0] for c in story["clicks"]] == ["entry", "ok"] and story["text"] == "report.txt"
