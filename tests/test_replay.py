"""deskpilot replay: check, simulate, and execute (with a scripted screen here; live under Xvfb below)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from actions.executor import DryRunExecutor
from agent.capture import ImageScreen, Screenshot
from agent.config import Settings
from agent.fakeserver import FakeModelServer
from agent.loop import Limits, run_episode
from agent.planner import GLMPlanner, ScriptedPlanner
from agent.replay.live import LiveReplayer, ModelHealer, crop_around, patch_difference, settle_gap
from agent.replay.offline import check, recorded_actions, simulate
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
    {
        "content": "Type.",
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "type", "arguments": '{"content": "a.txt"}'}}
        ],
    },
    "<|begin_of_box|>left_click(start_box='[500,655]', element_info='OK button')<|end_of_box|>",
    "DONE()",
]


def deskpilot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, env=cli_env(), timeout=60
    )


@pytest.fixture
def recording(tmp_path) -> Path:
    settings = Settings.resolve("vllm")
    recorder = JsonlRecorder(tmp_path / "recs", "name the file a.txt", settings.public())
    run_episode(
        "name the file a.txt",
        screen=ImageScreen(SCREENS),
        planner=ScriptedPlanner(list(REPLIES)),
        executor=DryRunExecutor(),
        settings=settings,
        limits=Limits(max_steps=6),
        recorder=recorder,
    )
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


@pytest.mark.parametrize(
    "step, attempt, old, new, expected",
    [
        (1, 1, "[500,497]", "[500,400]", "step 1: target was [500, 497] = image (640, 398)"),
        (4, 1, "left_click", "left_double_click", "step 3: action was left_click(start_box='[500,655]'"),
        (
            2,
            1,
            "nothing useful",
            "left_click(start_box='[1,2]')",
            "step 2: reply 1 was rejected (UnparseableReply), now parses as left_click(start_box='[1,2]')",
        ),
    ],
)
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
        "left_click at (640, 398)",
        "type 'a.txt'",
        "left_click at (640, 524)",
    ]


def test_simulate_names_the_step_that_changed(recording):
    edit_reply(recording, 3, 1, "[500,655]", "[500,600]")
    (found,) = simulate(load(recording))
    assert found.step == 3 and found.what.startswith("target was")


def test_simulate_replays_a_recorded_skip(recording):
    path = recording / "steps.jsonl"
    lines = path.read_text().splitlines()
    data = json.loads(lines[0])
    data["decision"], data["note"] = "skip", "skipped by the user"
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
        return Screenshot(image, MonitorGeometry(0, 0, image.width, image.height))


def test_execute_performs_the_recorded_actions_and_honours_timing(recording):
    rec = load(recording)
    executor, sleeps = DryRunExecutor(), []
    replayer = LiveReplayer(
        rec,
        FakeScreen([rec.screenshot(rec.steps[0])]),
        executor,
        speed=2.0,
        max_wait=0.05,
        log=lambda line: None,
        sleep=sleeps.append,
    )
    assert replayer.run() == []
    assert [(a.kind, a.points_screen) for a in executor.performed] == [
        ("left_click", ((640, 398),)),
        ("type", ()),
        ("left_click", ((640, 524),)),
    ]
    expected = [min(0.05, settle_gap(a, b) / 2) for a, b in zip(rec.steps, rec.steps[1:3])]
    assert sleeps == pytest.approx(expected)


def test_execute_stops_on_a_changed_screen_and_saves_both_crops(recording):
    rec = load(recording)
    moved = dialog(offset=(200, 120))
    executor = DryRunExecutor()
    replayer = LiveReplayer(rec, FakeScreen([moved]), executor, settle=0, log=lambda line: None, sleep=lambda s: None)
    (found,) = replayer.run()
    assert found.step == 1 and "differs around the target" in found.what and executor.performed == []
    recorded, live = (
        Image.open(recording / "replay" / "step-0001-recorded.png"),
        Image.open(recording / "replay" / "step-0001-live.png"),
    )
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
        replayer = LiveReplayer(
            rec,
            FakeScreen([moved]),
            executor,
            settle=0,
            log=lambda line: None,
            sleep=lambda s: None,
            healer=ModelHealer(planner, settings, rec.header.task),
        )
        assert replayer.run() == []
    # the dialog moved by (100, 60): the field's centre is now near (740, 458), OK's near (740, 584)
    # (a pixel or two off where the sent image was a lossy JPEG)
    assert [a.kind for a in executor.performed] == ["left_click", "type", "left_click"]
    for performed, (x, y) in zip(executor.performed[::2], [(740, 458), (740, 584)]):
        ((px, py),) = performed.points_screen
        assert abs(px - x) <= 2 and abs(py - y) <= 2, performed
    assert len(server.requests) == 2 and "name field" in json.dumps(server.requests[0])


# --- execute, live: the CLI under Xvfb against the real Tk target app -----------------------


def live_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        env=cli_env(DISPLAY=os.environ["DISPLAY"]),
        timeout=timeout,
    )


def clicked(app) -> list[str]:
    return [e["widget"] for e in app.events() if e["event"] == "click"]


def typed(app) -> str:
    texts = [e["text"] for e in app.events() if e["event"] == "entry"]
    return texts[-1] if texts else ""


@pytest.mark.live
def test_execute_live_replays_stops_on_a_moved_window_and_heals(tmp_path):
    live_support = pytest.importorskip("tests.live_support")
    if not live_support.have_xvfb():
        pytest.skip("needs Xvfb")
    from tests.fake_brains import FormBrain

    home, moved = "720x520+140+90", "720x520+300+210"
    with live_support.xvfb_display(1024, 768):
        # 1. a live run of `deskpilot run` against the app, recorded
        with live_support.TargetApp(geometry=home) as app, FakeModelServer(FormBrain("report.txt")) as server:
            proc = live_cli(
                "run",
                "type report.txt and press OK",
                "--provider",
                "vllm",
                "--base-url",
                server.base_url,
                "--protocol",
                "tools",
                "--recordings",
                str(tmp_path / "recs"),
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            app.wait_for(lambda events: any(e.get("widget") == "ok" for e in events), 5)
            assert clicked(app) == ["entry", "ok"] and typed(app) == "report.txt"
        (folder,) = (tmp_path / "recs").iterdir()
        assert live_cli("replay", str(folder)).returncode == 0

        # 2. the same window again: replayed without the model
        with live_support.TargetApp(geometry=home) as app:
            proc = live_cli("replay", str(folder), "--mode", "execute", "--speed", "4")
            assert proc.returncode == 0, proc.stdout + proc.stderr
            app.wait_for(lambda events: any(e.get("widget") == "ok" for e in events), 5)
            assert clicked(app) == ["entry", "ok"] and typed(app) == "report.txt"

        # 3. the window moved: stop at the first pointing step, nothing clicked, both crops saved
        with live_support.TargetApp(geometry=moved) as app:
            proc = live_cli("replay", str(folder), "--mode", "execute", "--speed", "4", "--settle", "0.5")
            assert proc.returncode == 1, proc.stdout + proc.stderr
            assert "DIFFERS step 1: the live screen differs around the target" in proc.stdout
            time.sleep(0.3)
            assert clicked(app) == [] and (folder / "replay" / "step-0001-live.png").is_file()

        # 4. moved, with --heal: the (fake) model finds each element again and the task completes
        with live_support.TargetApp(geometry=moved) as app, FakeModelServer(heal_brain) as server:
            proc = live_cli(
                "replay",
                str(folder),
                "--mode",
                "execute",
                "--speed",
                "4",
                "--settle",
                "0.5",
                "--heal",
                "--base-url",
                server.base_url,
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            app.wait_for(lambda events: any(e.get("widget") == "ok" for e in events), 5)
            assert clicked(app) == ["entry", "ok"] and typed(app) == "report.txt"
            assert len(server.requests) == 2 and "performed 3 recorded actions; healed steps 1, 3" in proc.stdout


@pytest.mark.live
def test_the_committed_live_example_replays_on_the_target_app(tmp_path):
    live_support = pytest.importorskip("tests.live_support")
    example = ROOT / "recordings" / "examples" / "form-live-xvfb"
    if not live_support.have_xvfb() or not example.exists():
        pytest.skip("needs Xvfb and the live example")
    copy = tmp_path / example.name  # replay writes crops into the recording on a mismatch
    shutil.copytree(example, copy)
    monitor = load(copy).header.monitor
    with live_support.xvfb_display(monitor.width, monitor.height):
        with live_support.TargetApp(geometry="720x520+120+60") as app:  # as in tests/make_examples.py
            proc = live_cli("replay", str(copy), "--mode", "execute", "--speed", "4")
            assert proc.returncode == 0, proc.stdout + proc.stderr
            app.wait_for(lambda events: any(e.get("widget") == "ok" for e in events), 5)
            assert clicked(app) == ["entry", "ok"] and typed(app) == "report.txt"


def test_check_compares_the_models_own_action_on_an_edited_step(tmp_path):
    import io

    from actions.executor import DryRunExecutor
    from agent.capture import ImageScreen
    from agent.config import Settings
    from agent.loop import Limits, run_episode
    from agent.planner import ScriptedPlanner
    from agent.safety import Approver
    from agent.trajectory import JsonlRecorder

    approve = Approver(True, stdin=io.StringIO("e\nhover(start_box='[10,10]')\n"), stdout=io.StringIO())
    recorder = JsonlRecorder(tmp_path, "t")
    run_episode(
        "t",
        screen=ImageScreen(Path(__file__).parent / "screens" / "dialog"),
        planner=ScriptedPlanner(["left_click(start_box='[500,500]')", "DONE()"]),
        executor=DryRunExecutor(),
        settings=Settings.resolve("vllm"),
        limits=Limits(max_steps=3),
        recorder=recorder,
        approve=approve,
    )
    rec = load(recorder.path)
    assert rec.steps[0].proposed_action["kind"] == "left_click" and rec.steps[0].action["kind"] == "hover"
    assert check(rec) == []
    edit_reply(recorder.path, 1, 1, "[500,500]", "[600,500]")  # the model's reply, not the user's edit
    (found,) = check(load(recorder.path))
    assert found.step == 1 and "edited by the user" in found.what
