"""A 4K desktop, live: Xvfb at 3840x2160, the Tk target app at a small size, the whole CLI with a
fake model that finds the small OK button by colour in the (downscaled) image it was sent. The
app must receive the click on that button, and the next step must see the frame the settle
proved quiet."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agent.fakeserver import FakeModelServer, images_in
from agent.trajectory import load
from tests.conftest import cli_env
from tests.fake_brains import MAGENTA, reply, steps_done, thousandths_of
from tests.live_support import TargetApp, have_xvfb, xvfb_display

pytestmark = [pytest.mark.live, pytest.mark.skipif(not have_xvfb(), reason="needs Xvfb and openbox")]


class SmallButtonBrain:
    """Click the magenta OK button, then DONE; keeps the size of each image it was sent."""

    def __init__(self) -> None:
        self.sent_sizes: list[tuple[int, int]] = []

    def __call__(self, body):
        shot = images_in(body)[-1]
        self.sent_sizes.append(shot.size)
        if steps_done(body) == 0:
            return reply(("left_click", {"start_box": str(thousandths_of(shot, MAGENTA)), "element_info": "OK"}), True)
        return reply(("DONE", {}), True)


def test_a_small_button_on_a_4k_screen_is_clicked(tmp_path):
    with xvfb_display(3840, 2160):
        with TargetApp(tmp_path / "events.jsonl", geometry="200x150+2900+1500") as app:
            ok = app.rect("ok")
            assert ok["width"] <= 64 and ok["height"] <= 40  # small: about 30x16 pixels in the image sent
            brain = SmallButtonBrain()
            with FakeModelServer(brain) as server:
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "agent",
                        "run",
                        "press OK",
                        "--provider",
                        "vllm",
                        "--base-url",
                        server.base_url,
                        "--recordings",
                        str(tmp_path / "rec"),
                        "--max-steps",
                        "4",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    env=cli_env(DISPLAY=os.environ["DISPLAY"]),
                )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            app.wait_for(lambda events: any(e["event"] == "click" for e in events), 5)
            clicks = [e for e in app.events() if e["event"] == "click"]
    assert [(c["widget"], c["button"]) for c in clicks] == [("ok", 1)]
    assert (
        ok["x"] <= clicks[0]["x_root"] < ok["x"] + ok["width"]
        and ok["y"] <= clicks[0]["y_root"] < ok["y"] + ok["height"]
    )
    assert brain.sent_sizes[0] == (1920, 1080)  # 3840x2160 as 2x2 block averages
    rec = load(next((tmp_path / "rec").iterdir()))
    first, second = rec.steps[0].timings, rec.steps[1].timings
    assert first.frame == "capture" and second.frame == "settle"  # the settled frame, not a new capture
    assert rec.steps[0].geometry.width == 3840 and rec.screenshot(rec.steps[1]).size == (3840, 2160)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("step ")]
    assert "settled" in lines[1] and "act " in lines[0] and "settle " in lines[0]
