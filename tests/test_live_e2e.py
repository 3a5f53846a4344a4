"""The whole product on a real X server: Xvfb + openbox, the Tk target app, real mss captures,
real pyautogui/XTEST input, and the fake model server over real HTTP. The fake model finds
the widgets by colour in the screenshot it was sent and answers in thousandths of that
image, exactly as GLM-4.5V would; the assertions are on what the app received.

Also the kill switch (issue 4): the hotkey pressed mid-typing leaves only a prefix typed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.fakeserver import FakeModelServer
from agent.trajectory import load
from tests.conftest import cli_env
from tests.fake_brains import FAULTS, FaultyBrain, FormBrain
from tests.live_support import TargetApp, have_xvfb, xvfb_display
from tests.test_faults import check_recording_shows_the_retry

pytestmark = [pytest.mark.live, pytest.mark.skipif(not have_xvfb(), reason="needs Xvfb and openbox")]
TEXT = "Crème brûlée, Grüße 世界 ✓"


@pytest.fixture(scope="module", params=[(1280, 800), (2560, 1440)], ids=["1280x800", "2560x1440"])
def desktop(request):
    with xvfb_display(*request.param):
        yield request.param


@pytest.fixture
def small_desktop():
    """A 1280x800 desktop of the test's own (one size is enough for these checks)."""
    with xvfb_display(1280, 800):
        yield (1280, 800)


def deskpilot(server: FakeModelServer, recordings: Path, *args: str, **popen) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "agent",
        "run",
        f"type {TEXT!r} in the field and press OK",
        "--provider",
        "vllm",
        "--base-url",
        server.base_url,
        "--recordings",
        str(recordings),
        "--max-steps",
        "8",
        *args,
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(DISPLAY=os.environ["DISPLAY"]),
        **popen,
    )


def inside(rect: dict, x: int, y: int) -> bool:
    return rect["x"] <= x < rect["x"] + rect["width"] and rect["y"] <= y < rect["y"] + rect["height"]


@pytest.mark.parametrize("protocol", ["tools", "text"])
def test_live_task_clicks_and_types_exactly(desktop, protocol, tmp_path):
    width, height = desktop
    with TargetApp(tmp_path / "events.jsonl") as app:
        brain = FormBrain(TEXT)
        with FakeModelServer(brain) as server:
            proc = deskpilot(server, tmp_path / "rec", "--protocol", protocol)
            out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        app.wait_for(lambda events: any(e["event"] == "click" and e["widget"] == "ok" for e in events), 5)
        events = app.events()
    ready = events[0]
    clicks = [e for e in events if e["event"] == "click"]
    assert [(c["widget"], c["button"]) for c in clicks] == [("entry", 1), ("ok", 1)]
    assert inside(ready["widgets"]["entry"], clicks[0]["x_root"], clicks[0]["y_root"])
    assert inside(ready["widgets"]["ok"], clicks[1]["x_root"], clicks[1]["y_root"])
    texts = [e["text"] for e in events if e["event"] == "entry"]
    assert texts[-1] == TEXT  # every character, once, in order
    # The model saw a screenshot within the image budget; a large screen was downscaled.
    sent = brain.sent_sizes[0]
    assert (sent == (width, height)) if width <= 1920 else (sent[0] < width and sent[0] % 28 == 0)
    rec = load(next((tmp_path / "rec").iterdir()))
    assert rec.outcome.status == "done" and [s.action["kind"] for s in rec.steps] == [
        "left_click",
        "type",
        "left_click",
        "DONE",
    ]
    assert rec.steps[0].geometry.width == width and rec.steps[1].timings.settle_s > 0


@pytest.mark.parametrize("fault", FAULTS)
def test_live_task_survives_each_endpoint_fault(small_desktop, fault, tmp_path):
    with TargetApp(tmp_path / "events.jsonl") as app:
        brain = FaultyBrain(FormBrain("fault " + fault), fault)
        with FakeModelServer(brain) as server:
            proc = deskpilot(server, tmp_path / "rec", "--timeout", "1")
            out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        texts = [e["text"] for e in app.events() if e["event"] == "entry"]
    assert texts[-1] == "fault " + fault and brain.injected
    check_recording_shows_the_retry(next((tmp_path / "rec").iterdir()), fault)


def test_kill_hotkey_stops_typing_midway(small_desktop, tmp_path):
    long_text = "the quick brown fox jumps over the lazy dog " * 12
    with TargetApp(tmp_path / "events.jsonl") as app:
        with FakeModelServer(FormBrain(long_text)) as server:
            proc = deskpilot(server, tmp_path / "rec")
            app.wait_for(lambda events: any(e["event"] == "entry" and len(e["text"]) >= 20 for e in events), 60)
            subprocess.run(["xdotool", "key", "--delay", "60", "Escape", "Escape", "Escape"], check=True)
            pressed = time.monotonic()
            out, err = proc.communicate(timeout=30)
        stopped_within = time.monotonic() - pressed
        time.sleep(0.3)
        texts = [e["text"] for e in app.events() if e["event"] == "entry"]
    assert proc.returncode == 130, out + err
    assert 20 <= len(texts[-1]) < len(long_text) and long_text.startswith(texts[-1])
    assert stopped_within < 10
    rec = load(next((tmp_path / "rec").iterdir()))
    assert rec.outcome.status == "interrupted" and rec.outcome.message == "stopped by the kill hotkey"
    assert rec.steps[-1].action["kind"] == "type"


def test_a_monitor_that_does_not_exist_is_a_usage_error(small_desktop, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "run",
            "x",
            "--provider",
            "vllm",
            "--monitor",
            "3",
            "--recordings",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(DISPLAY=os.environ["DISPLAY"]),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "monitor 3 does not exist: this desktop has 1 monitor(s)" in proc.stderr


def test_kill_hotkey_aborts_a_model_request_in_flight(small_desktop, tmp_path):
    waiting = []

    def slow_model(body):
        waiting.append(time.monotonic())
        time.sleep(20)  # far longer than the test waits
        return "DONE()"

    with FakeModelServer(slow_model) as server:
        proc = deskpilot(server, tmp_path / "rec")
        deadline = time.monotonic() + 30
        while not waiting and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        subprocess.run(["xdotool", "key", "--delay", "60", "Escape", "Escape", "Escape"], check=True)
        pressed = time.monotonic()
        out, err = proc.communicate(timeout=15)
        stopped_within = time.monotonic() - pressed
    assert proc.returncode == 130, out + err
    assert stopped_within < 3 and "stopped by the kill hotkey" in err
    rec = load(next((tmp_path / "rec").iterdir()))
    assert rec.outcome.status == "interrupted" and rec.steps[0].action is None
