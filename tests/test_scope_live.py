"""``run --window``, live: only the window is captured and sent, and typing while another window has the
focus is refused, recorded, and shown back to the model, which then clicks into the window and types."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agent.fakeserver import FakeModelServer, images_in
from agent.trajectory import load
from tests.conftest import cli_env
from tests.fake_brains import CYAN, reply, steps_done, thousandths_of
from tests.live_support import TargetApp, have_xvfb, xvfb_display

pytestmark = [pytest.mark.live, pytest.mark.skipif(not have_xvfb(), reason="needs Xvfb and openbox")]


class ScopedBrain:
    """Types before clicking (refused: the other window has the focus), then clicks the field and types."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []
        self.prompts: list[str] = []

    def __call__(self, body):
        image = images_in(body)[-1]
        self.sizes.append(image.size)
        self.prompts.append("".join(p.get("text", "") for p in body["messages"][0]["content"]))
        step = steps_done(body)
        if step == 0:
            call = ("type", {"content": "too early"})
        elif step == 1:
            call = ("left_click", {"start_box": str(thousandths_of(image, CYAN)), "element_info": "name field"})
        elif step == 2:
            call = ("type", {"content": "scoped"})
        else:
            call = ("DONE", {})
        return reply(call, tools=False)


def test_window_scope_refuses_typing_without_focus_and_sends_only_the_window(tmp_path):
    with xvfb_display(1280, 800):
        with TargetApp(tmp_path / "a.jsonl", geometry="600x420+20+40", title="scoped target") as target:
            with TargetApp(tmp_path / "b.jsonl", geometry="500x400+700+300", title="bystander") as other:
                brain = ScopedBrain()
                with FakeModelServer(brain) as server:
                    proc = subprocess.run(
                        [sys.executable, "-m", "agent", "run", "type scoped into the field", "--provider", "vllm",
                         "--base-url", server.base_url, "--recordings", str(tmp_path / "rec"), "--window",
                         "title:scoped target", "--max-steps", "6"],
                        capture_output=True, text=True, timeout=90, env=cli_env(DISPLAY=os.environ["DISPLAY"]),
                    )  # fmt: skip
                assert proc.returncode == 0, proc.stdout + proc.stderr
                typed = target.wait_for(lambda evs: any(e.get("text") == "scoped" for e in evs), 10)
                assert all(e.get("text") != "too early" for e in typed)
                assert not [e for e in other.events() if e["event"] == "entry"]  # nothing reached the bystander
    window = target.rect("window")
    assert set(brain.sizes) == {(window["width"], window["height"])}  # only the window was sent
    assert "refused" in brain.prompts[1] and "too early" in brain.prompts[1]
    (folder,) = (tmp_path / "rec").iterdir()
    rec = load(folder)
    assert rec.header.window is not None and rec.header.window["pattern"] == "title:scoped target"
    first = rec.steps[0]
    assert first.decision == "refused" and "refused" in first.note and first.action["kind"] == "type"
    assert rec.steps[1].geometry.left == window["x"] and rec.steps[1].geometry.width == window["width"]
    assert "refused" in proc.stdout
