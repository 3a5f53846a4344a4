"""Recovery on a real X server: Xvfb + openbox, the Tk target app, mss captures, XTEST input and
the fake model over real HTTP. A fake with limited precision hits a 14-px target on a 2560x1440
screen only with zoom; a fake that keeps clicking where nothing happens ends ``stuck`` (exit 1)
long before the step budget. The assertions are on what the app received."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.bench.imprecise import ImpreciseModel
from agent.fakeserver import FakeModelServer
from agent.report import render
from agent.trajectory import load
from tests.conftest import cli_env
from tests.live_support import TargetApp, have_xvfb, xvfb_display

pytestmark = [pytest.mark.live, pytest.mark.skipif(not have_xvfb(), reason="needs Xvfb and openbox")]


def deskpilot(server: FakeModelServer, recordings: Path, task: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "agent", "run", task, "--provider", "vllm", "--base-url", server.base_url]
    command += ["--recordings", str(recordings), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=180, env=cli_env(DISPLAY=os.environ["DISPLAY"])
    )


def clicks(app: TargetApp) -> list[str]:
    return [e["widget"] for e in app.events() if e["event"] == "click"]


def test_a_small_target_on_a_large_screen_is_hit_with_zoom_only(tmp_path):
    with xvfb_display(2560, 1440):
        with TargetApp(tmp_path / "events.jsonl", small_target=14) as app:
            small = app.rect("small")
            assert (small["width"], small["height"]) == (14, 14)
            received = {}
            for zoom in ("off", "auto"):
                model = ImpreciseModel(k=10)  # 1 % of the image it sees: 26 px on this screen, 3 px in a crop
                since = app.mark()
                with FakeModelServer(model) as server:
                    proc = deskpilot(server, tmp_path / zoom, "click the small green square", "--zoom", zoom)
                assert proc.returncode == 0, proc.stdout + proc.stderr
                app.wait_for(lambda events: any(e["event"] == "click" for e in events), 5, since=since)
                received[zoom] = [e for e in app.events()[since:] if e["event"] == "click"]
                assert model.zoom_requests == (zoom == "auto")
    assert [c["widget"] for c in received["off"]] == ["window"]  # next to the target
    assert [c["widget"] for c in received["auto"]] == ["small"]
    rec = load(next((tmp_path / "auto").iterdir()))
    step = rec.steps[0]
    assert step.zoom is not None and step.zoom.used and rec.header.settings["zoom"] == "auto"
    assert step.targets[0].crop_image == step.zoom.crop_image and step.timings.zoom_s > 0
    assert step.zoom.prompt_tokens > 784 and step.prompt_tokens > step.zoom.prompt_tokens
    assert "[zoomed in]" in proc.stdout
    page = render(rec)
    assert f'width="{step.zoom.crop_image[2]}" height="{step.zoom.crop_image[3]}" fill="none" stroke="#bc4c00"' in page


def test_a_fake_repeating_a_no_op_click_ends_stuck_not_at_the_step_budget(tmp_path):
    def repeat_no_op(body: dict[str, Any]) -> str:
        text = "".join(p.get("text", "") for p in body["messages"][0]["content"] if p["type"] == "text")
        # the bare window background does nothing; zoomed in, it points at the same spot again
        point = "[500,500]" if "zoomed-in part of the screen" in text else "[166,210]"
        return f"I click Save.\n<|begin_of_box|>left_click(start_box='{point}', element_info='Save')<|end_of_box|>"

    with xvfb_display(1280, 800):
        with TargetApp(tmp_path / "events.jsonl") as app:
            with FakeModelServer(repeat_no_op) as server:
                proc = deskpilot(server, tmp_path / "rec", "save the file", "--max-steps", "20")
            assert proc.returncode == 1, proc.stdout + proc.stderr
            got = clicks(app)
    assert got == ["window"] * 5
    rec = load(next((tmp_path / "rec").iterdir()))
    assert rec.outcome.status == "stuck" and len(rec.steps) == 5
    assert [s.screen_changed for s in rec.steps] == [False] * 5
    assert [s.loop.response if s.loop else None for s in rec.steps] == [None, None, "told", "zoom", "stuck"]
    assert rec.steps[1].zoom is not None and "changed nothing" in rec.steps[1].zoom.reason
    assert "deskpilot: stuck after 5 steps" in proc.stdout and "(the screen did not change)" in proc.stdout
    texts = ["".join(p.get("text", "") for p in r["messages"][0]["content"]) for r in server.requests]
    step_5 = [t for t in texts if "# History" in t][-1]  # the last step's own request (not its zoom request)
    assert "Result: the screen did not change" in step_5 and "No progress: the same action" in step_5
