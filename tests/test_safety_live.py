"""The approval gate on a real X server: Xvfb + openbox, the Tk target app, real input.

A model that spells a risky combination the way people do (``ctrl alt delete``, spaces, no
``+``) is stopped at the prompt: the person skips it, and no key event reaches the app,
while the typing that follows does (so the app was listening).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from agent.fakeserver import FakeModelServer, images_in
from agent.trajectory import load
from tests.conftest import cli_env
from tests.fake_brains import CYAN, reply, steps_done, thousandths_of
from tests.live_support import TargetApp, have_xvfb, xvfb_display

pytestmark = [pytest.mark.live, pytest.mark.skipif(not have_xvfb(), reason="needs Xvfb and openbox")]


def risky_brain(body: dict[str, Any]) -> Any:
    """Click the field, ask for ctrl alt delete, type 'after', DONE."""
    step = steps_done(body)
    if step == 0:
        screenshot = images_in(body)[-1]
        call = ("left_click", {"start_box": str(thousandths_of(screenshot, CYAN)), "element_info": "name field"})
    else:
        call = [("key", {"keys": "ctrl alt delete"}), ("type", {"content": "after"}), ("DONE", {})][min(step, 3) - 1]
    return reply(call, tools="tools" in body)


def test_a_risky_combination_in_any_spelling_is_asked_and_skipping_sends_nothing(tmp_path):
    with xvfb_display(1280, 800), TargetApp(tmp_path / "events.jsonl") as app:
        with FakeModelServer(risky_brain) as server:
            proc = subprocess.run(
                [sys.executable, "-m", "agent", "run", "press ctrl alt delete", "--provider", "vllm"]
                + ["--base-url", server.base_url, "--recordings", str(tmp_path / "rec"), "--max-steps", "6"],
                input="s\n",
                capture_output=True,
                text=True,
                timeout=120,
                env=cli_env(DISPLAY=os.environ["DISPLAY"]),
            )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        events = app.wait_for(lambda evs: any(e["event"] == "entry" and e["text"] == "after" for e in evs), 5)
    assert "planned: key 'ctrl alt delete' (presses ctrl+alt+delete)  (ctrl+alt+delete always needs approval)" in (
        proc.stdout
    )
    clicks = [i for i, e in enumerate(events) if e["event"] == "click"]
    assert [events[i]["widget"] for i in clicks] == ["entry"]
    keys = [e["keysym"] for e in events[clicks[0] :] if e["event"] == "key"]
    assert keys == list("after")  # the entry had focus and got keys; none of ctrl, alt, delete
    rec = load(next((tmp_path / "rec").iterdir()))
    assert [(s.action["kind"], s.decision) for s in rec.steps] == [
        ("left_click", None),
        ("key", "skip"),
        ("type", None),
        ("DONE", None),
    ]
