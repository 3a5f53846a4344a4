"""deskpilot replay: check, simulate, and execute (with a scripted screen here; live under Xvfb below)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from actions.executor import DryRunExecutor
from agent.config import Settings
from agent.fakeserver import FakeModelServer
from agent.loop import Limits, run_episode
from agent.planner import GLMPlanner, ScriptedPlanner
from agent.replay import (LiveReplayer, ModelHealer, check, patch_difference, recorded_actions, settle_gap,
                          simulate)
from agent.screen import ImageScreen, Screenshot
from agent.trajectory import JsonlRecorder, load
from tests.conftest import cli_env
from tests.fake_brains import CYAN, MAGENTA, reply, thousandths_of

ROOT = Path(__file__).resolve().parent.parent
SCREENS = ROOT / "tests" / "screens" / "dialog"
EXAMPLES = sorted(p for p in (ROOT / "recordings" / "examples").glob("*") if (p / "header.json").exists())
REPLIES = [
    "The field is empty.\n<|begin_of_box|>left_click(start_box='[500,497]', element_info='name field')"
    "<|end_of_box|>\nMemory: []",
    "nothing useful",
    {"content": "Type.", "tool_calls": [{"id": "a", "type": "function",
                                          "function": {"name": "type", "arguments": '{"content": "a.txt"}'}}]},
    "<|begin_of_box|>left_click(start_box='[500,655]', element_info='OK button')<|end_of_box|>",
    "DONE()",
]


def deskpilot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          env=cli_env(), timeout=60)


@pytest.fixture
def recording(tmp_path) -> Path:
    settings = Settings.resolve("vllm")
    recorder = JsonlRecorder(tmp_path / "recs", "name the file a.txt", settings.public())
    run_episode("name the file a.txt", screen=ImageScreen(SCREENS), planner=ScriptedPlanner(list(REPLIES)),
                executor=DryRunExecutor(), settings=settings, limits=Limits(max_steps=6), recorder=recorder)
    return recorder.path


def edit_reply(folder: Path, step: int, attempt: int, old: str, new: str) -> None:
    path = folder / "steps.jsonl"
    lines = path.read_text().splitlines()
    data = json.loads(lines[step - 1])
    raw = data["attempts"][attempt - 1]["raw"]
    assert old in raw["content"]
    raw["content"] = raw["content"].replace(old, new)
    lines[step - 1] = json.dumps(data)
    path.write_text("\n".join(lines) + "\n")


# --- check -----------------------------------------------------------------------------

def test_check_passes_on_a_fresh_recording(recording):
    assert check(load(recording)) == []


@pytest.mark.parametrize("step, attempt, old, new, expected", [
    (1, 1, "[500,497]", "[500,400]", "step 1: target was [500, 497] = image (640, 398)"),
    (4, 1, "left_click", "left_double_click", "step 3: action was left_click(start_box='[500,655]'"),
    (2, 1, "nothing useful", "left_click(start_box='[1,2]')", "step 2: reply 1 was rejected (UnparseableReply), "
                                                                "now parses as left_click(start_box='[1,2]')"),
])
def test_check_names_the_step_whose_reply_was_edited(recording, step, attempt, old, new, expected):
    edit_reply(recording, step if step < 4 else 3, attempt, old, new)
    found = check(load(recording))
    assert len(found) == 1 and str(found[0]).startswith(expected), found


def test_check_reports_an_accepted_reply_that_is_now_rejected(recording):
    edit_reply(recording, 1, 1, "[500,497]", "[500,1497]")
    (found,) = check(load(recording))
    assert found.step == 1 and "now rejected: CoordinateOutOfRange" in found.what


def test_cli_check_exit_codes(recording, tmp_path):
    proc = deskpilot("replay", str(recording))
    assert proc.returncode == 0 and "all 4 steps match" in proc.stdout, proc.stdout + proc.stderr
    copy = tmp_path / "copy"
    shutil.copytree(recording, copy)
    edit_reply(copy, 3, 1, "[500,655]", "[300,655]")
    proc = deskpilot("replay", str(copy), "--mode", "check")
    assert proc.returncode == 1 and "DIFFERS step 3: target was" in proc.stdout
    assert "1 step(s) differ: 3" in proc.stdout and "Traceback" not in proc.stderr
    proc = deskpilot("replay", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and "no such recording folder" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(not EXAMPLES, reason="no committed example recordings")
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_committed_examples_pass_check_and_simulate(example):
    rec = load(example)
    assert check(rec) == [] and simulate(rec) == []


@pytest.mark.skipif(not EXAMPLES, reason="no committed example recordings")
def test_an_edited_example_fails_check_naming_the_step(tmp_path):
    copy = tmp_path / EXAMPLES[0].name
    shutil.copytree(EXAMPLES[0], copy)
    rec = load(copy)
    pointing = next(s for s in rec.steps if s.targets)
    lines = (copy / "steps.jsonl").read_text().splitlines()
    data = json.loads(lines[pointing.step - 1])
    raw = data["attempts"][-1]["raw"]
    box = pointing.targets[0].box_model
    old, new = f"{box[0]}", f"{(box[0] + 100) % 1000}"
    if raw.get("tool_calls"):
        call = raw["tool_calls"][0]["function"]
        call["arguments"] = call["arguments"].replace(old, new, 1)
    else:
        raw["content"] = raw["content"].replace(old, new, 1)
    lines[pointing.step - 1] = json.dumps(data)
    (copy / "steps.jsonl").write_text("\n".join(lines) + "\n")
    proc = deskpilot("replay", str(copy))
    assert proc.returncode == 1 and f"DIFFERS step {pointing.step}: target was" in proc.stdout, proc.stdout


# --- simulate --------------------------------------------------------------------------

def test_simulate_reproduces_the_actions(recording):
    rec = load(recording)
    assert simulate(rec) == []
    assert [str(a) for a in recorded_actions(rec)] == [
        "left_click at (640, 398)", "type 'a.txt'", "left_click at (640, 524)"]


def test_simulate_names_the_step_that_changed(recording):
    edit_reply(recording, 3, 1, "[500,655]", "[500,600]")
    (found,) = simulate(load(recording))
    assert found.step == 3 and found.what.startswith("target was")


def test_simulate_replays_a_recorded_skip(recording):
    path = recording / "steps.jsonl"
    lines = path.read_text().splitlines()
    data = json.loads(lines[0])
    data["note"] = "skipped by the user"
    lines[0] = json.dumps(data)
    path.write_text("\n".join(lines) + "\n")
    rec = load(recording)
    assert [a.step for a in recorded_actions(rec)] == [2, 3] and simulate(rec) == []


def test_a_killed_run_still_checks_and_simulates(recording):
    (recording / "outcome.json").unlink()
    path = recording / "steps.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:2]))
    rec = load(recording)
    assert rec.outcome.status == "incomplete" and check(rec) == [] and simulate(rec) == []


def test_simulate_notices_replies_that_were_never_asked_for(recording):
    path = recording / "steps.jsonl"
    lines = path.read_text().splitlines()
    data = json.loads(lines[0])
    data["attempts"].append(data["attempts"][0])
    lines[0] = json.dumps(data)
    path.write_text("\n".join(lines) + "\n")
    assert simulate(load(recording))  # one more reply than the loop asks for


# --- the screen comparison ---------------------------------------------------------------

def dialog(offset=(0, 0), cursor=False, clock="12:00") -> Image.Image:
    image = Image.new("RGB", (1280, 800), (40, 40, 40))
    base = Image.open(SCREENS / "01-empty.png").convert("RGB")
    image.paste(base, offset)
    draw = ImageDraw.Draw(image)
    if cursor:
        draw.rectangle((600, 385, 601, 410), fill=(0, 0, 0))
    draw.text((600, 440), clock, fill=(0, 0, 0))
    return image


def crop(image, point=(640, 410)):
    from agent.replay import crop_around

    return crop_around(image, point, 160)


def test_patch_difference_ignores_a_cursor_and_a_clock_but_not_a_moved_window():
    same = patch_difference(crop(dialog()), crop(dialog(cursor=True, clock="12:59")))
    moved = patch_difference(crop(dialog()), crop(dialog(offset=(60, 40))))
    assert same < 0.01 and moved > 0.1, (same, moved)
    assert patch_difference(crop(dialog()), crop(dialog())) == 0.0


# --- execute, with a scripted screen -----------------------------------------------------

class FakeScreen:
    def __init__(self, images):
        self.images = list(images)

    def capture(self):
        from agent.geometry import MonitorGeometry

        image = self.images.pop(0) if len(self.images) > 1 else self.images[0]
        return Screenshot(image, MonitorGeometry(0, 0, image.width, image.height), 0.0)


def test_execute_performs_the_recorded_actions_and_honours_timing(recording):
    rec = load(recording)
    executor, sleeps = DryRunExecutor(), []
    replayer = LiveReplayer(rec, FakeScreen([rec.screenshot(rec.steps[0])]), executor,
                            speed=2.0, max_wait=0.05, log=lambda line: None, sleep=sleeps.append)
    assert replayer.run() == []
    assert [(a.kind, a.points_screen) for a in executor.performed] == [
        ("left_click", ((640, 398),)), ("type", ()), ("left_click", ((640, 524),))]
    expected = [min(0.05, settle_gap(a, b) / 2) for a, b in zip(rec.steps, rec.steps[1:3])]
    assert sleeps == pytest.approx(expected)


def test_execute_stops_on_a_changed_screen_and_saves_both_crops(recording):
    rec = load(recording)
    moved = dialog(offset=(200, 120))
    executor = DryRunExecutor()
    replayer = LiveReplayer(rec, FakeScreen([moved]), executor, settle=0, log=lambda line: None,
                            sleep=lambda s: None)
    (found,) = replayer.run()
    assert found.step == 1 and "differs around the target" in found.what and executor.performed == []
    recorded, live = Image.open(recording / "replay" / "step-0001-recorded.png"), Image.open(
        recording / "replay" / "step-0001-live.png")
    assert recorded.size == live.size == (160, 160)
    assert str(recording / "replay" / "step-0001-live.png") in found.what


def heal_brain(body):
    """Finds the element the heal request names, by colour, in the screenshot it is sent."""
    from agent.fakeserver import images_in

    text = "".join(p.get("text", "") for p in body["messages"][0]["content"] if p["type"] == "text")
    colour = MAGENTA if "OK button" in text.split("This step is being replayed")[-1] else CYAN
    box = thousandths_of(images_in(body)[-1], colour)
    return reply(("left_click", {"start_box": str(box), "element_info": "found"}), tools="tools" in body)


def test_execute_with_heal_asks_the_model_and_goes_on(recording):
    rec = load(recording)
    moved = dialog(offset=(100, 60))
    executor = DryRunExecutor()
    with FakeModelServer(heal_brain) as server:
        settings = Settings.resolve("vllm", base_url=server.base_url)
        planner = GLMPlanner(settings)
        replayer = LiveReplayer(rec, FakeScreen([moved]), executor, settle=0, log=lambda line: None,
                                sleep=lambda s: None, healer=ModelHealer(planner, settings, rec.header.task))
        assert replayer.run() == []
    assert [(a.kind, a.points_screen) for a in executor.performed] == [
        ("left_click", ((740, 458),)), ("type", ()), ("left_click", ((740, 584),))]
    assert len(server.requests) == 2 and "name field" in json.dumps(server.requests[0])


# --- execute, live under Xvfb against the real Tk target app -------------------------------
# A small harness of its own (Xvfb on a free display, the target app, its event lines) and an
# xdotool executor as the live input: the loop, MssScreen, the comparison and the healing are real.

import os  # noqa: E402
import select  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402

TARGET_APP = ROOT / "tests" / "apps" / "target_app.py"
LIVE_OK = shutil.which("Xvfb") and shutil.which("xdotool")


def _tk_available() -> bool:
    try:
        import tkinter  # noqa: F401
    except ImportError:
        return False
    return True


live = pytest.mark.skipif(not (LIVE_OK and _tk_available()), reason="needs Xvfb, xdotool and Tk")


@contextmanager
def xvfb(width: int, height: int):
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24",
                             "-nolisten", "tcp"], pass_fds=(write_fd,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 15)
        assert ready, "Xvfb did not start"
        yield ":" + os.read(read_fd, 32).decode().strip()
    finally:
        os.close(read_fd)
        proc.terminate()
        proc.wait(10)


class App:
    """tests/apps/target_app.py on a display; events() reads its JSON lines."""

    def __init__(self, display: str, events: Path, geometry: str) -> None:
        self.events_path = events
        events.write_text("")
        self.proc = subprocess.Popen([sys.executable, str(TARGET_APP), str(events), "--geometry", geometry],
                                     env={**os.environ, "DISPLAY": display},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not any(e["event"] == "ready" for e in self.events()):
            assert time.monotonic() < deadline and self.proc.poll() is None, "the target app did not start"
            time.sleep(0.05)
        time.sleep(0.3)

    def events(self, kind: str | None = None) -> list[dict]:
        lines = self.events_path.read_text().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if kind is None or e["event"] == kind]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class XdotoolExecutor:
    """Live input through xdotool: enough for clicks and typing in these tests."""

    def __init__(self, display: str) -> None:
        self.env = {**os.environ, "DISPLAY": display}

    def execute(self, action, points_screen) -> None:
        if action.kind == "left_click":
            (x, y), = points_screen
            subprocess.run(["xdotool", "mousemove", "--sync", str(x), str(y), "click", "1"], env=self.env, check=True)
        elif action.kind == "type":
            subprocess.run(["xdotool", "type", "--delay", "2", "--", action.content], env=self.env, check=True)
        else:
            raise AssertionError(f"this test executor does not do {action.kind}")
        time.sleep(0.1)


@pytest.fixture
def desktop(monkeypatch):
    with xvfb(1024, 768) as display:
        monkeypatch.setenv("DISPLAY", display)
        yield display


@live
def test_execute_live_replays_stops_on_a_moved_window_and_heals(desktop, tmp_path):
    from agent.screen import MssScreen
    from tests.fake_brains import FormBrain

    # 1. a live run of the real loop against the app, recorded
    app = App(desktop, tmp_path / "run.jsonl", "720x520+140+90")
    with FakeModelServer(FormBrain("report.txt")) as server:
        settings = Settings.resolve("vllm", base_url=server.base_url, protocol="tools")
        recorder = JsonlRecorder(tmp_path / "recs", "type report.txt and press OK", settings.public())
        planner = GLMPlanner(settings)
        result = run_episode("type report.txt and press OK", screen=MssScreen(1), planner=planner,
                             executor=XdotoolExecutor(desktop), settings=settings, recorder=recorder,
                             limits=Limits(max_steps=6), settle=lambda: time.sleep(0.3) or 0.3)
        planner.close()
    assert result.outcome.status == "done"
    assert [e["widget"] for e in app.events("click")] == ["entry", "ok"]
    app.close()
    rec = load(recorder.path)
    assert check(rec) == [] and rec.header.monitor.width == 1024

    def replay(geometry: str, healer=None):
        app = App(desktop, tmp_path / f"replay-{geometry}.jsonl", geometry)
        replayer = LiveReplayer(rec, MssScreen(1), XdotoolExecutor(desktop), healer=healer, settle=0.5,
                                max_wait=0.3, log=lambda line: None)
        found = replayer.run()
        time.sleep(0.2)
        app.close()
        return found, app

    # 2. the same window: replayed without the model
    found, app = replay("720x520+140+90")
    assert found == [] and [e["widget"] for e in app.events("click")] == ["entry", "ok"]
    assert app.events("entry")[-1]["text"] == "report.txt"

    # 3. the window moved: stop at the first pointing step, nothing clicked, both crops saved
    found, app = replay("720x520+260+200")
    assert len(found) == 1 and found[0].step == 1 and app.events("click") == []
    assert (rec.path / "replay" / "step-0001-live.png").is_file()

    # 4. moved, with --heal: the (fake) model finds the elements again and the task completes
    with FakeModelServer(heal_brain) as server:
        settings = Settings.resolve("vllm", base_url=server.base_url)
        planner = GLMPlanner(settings)
        found, app = replay("720x520+260+200", ModelHealer(planner, settings, rec.header.task))
        planner.close()
    assert found == [] and len(server.requests) == 2
    assert [e["widget"] for e in app.events("click")] == ["entry", "ok"]
    assert app.events("entry")[-1]["text"] == "report.txt"
