"""deskpilot view: the HTML report, escaped, rendered in a real headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from actions.executor import DryRunExecutor
from agent.capture import ImageScreen
from agent.config import Settings
from agent.loop import Limits, run_episode
from agent.planner import ScriptedPlanner
from agent.report import render, write_report
from agent.trajectory import JsonlRecorder, load
from tests.conftest import cli_env

SCREENS = Path(__file__).parent / "screens" / "dialog"
EVIL = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
REPLIES = [
    f"{EVIL} the field.\n<|begin_of_box|>left_click(start_box='[[344,475,656,520]]', "
    "element_info='name \"><b>field</b>')<|end_of_box|>",
    "no action here " + EVIL,
    "left_drag(start_box='[100,100]', end_box='[300,400]')",
    "scroll(start_box='[500,500]', direction='down', step=3)",
    {
        "content": "Done.",
        "tool_calls": [
            {
                "id": "d",
                "type": "function",
                "function": {"name": "DONE", "arguments": '{"answer": "</pre><script>window.pwned=3</script>"}'},
            }
        ],
    },
]


@pytest.fixture
def recording(tmp_path) -> Path:
    settings = Settings.resolve("openrouter", api_key="k")
    recorder = JsonlRecorder(tmp_path / "recs", "fill <the> form & press OK", settings.public())
    run_episode(
        "fill <the> form & press OK",
        screen=ImageScreen(SCREENS),
        planner=ScriptedPlanner(list(REPLIES)),
        executor=DryRunExecutor(),
        settings=settings,
        limits=Limits(max_steps=6),
        recorder=recorder,
    )
    return recorder.path


def test_report_escapes_model_text_and_draws_each_target(recording):
    page = render(load(recording))
    assert "window.pwned" in page  # the text is shown...
    assert "<script>window.pwned" not in page and "<img src=x" not in page  # ...but never as markup
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page and "fill &lt;the&gt; form &amp; press OK" in page
    assert page.count("<img ") == 4 and page.count("<script>") == 1
    # step 1: the model's box and its centre; step 2: a drag line; step 3: a scroll arrow
    assert re.search(r'<rect x="440.3" y="380.0" width="399.4" height="36.0"', page)
    assert '<circle cx="640" cy="398"' in page
    assert '<line x1="128" y1="80" x2="384" y2="320"' in page
    assert "rejected: UnparseableReply" in page and "0 retried" not in page


def test_view_command_writes_the_report_and_rejects_a_bad_recording(recording, tmp_path):
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "agent", "view", *a],
        capture_output=True,  # noqa: E731
        text=True,
        env=cli_env(),
        timeout=60,
    )
    proc = run(str(recording))
    assert proc.returncode == 0 and (recording / "report.html").stat().st_size > 10_000
    proc = run(str(recording), "--link-images")
    assert proc.returncode == 0 and 'src="screens/step-0001.png"' in (recording / "report.html").read_text()
    (recording / "header.json").unlink()
    proc = run(str(recording))
    assert proc.returncode == 2 and "header.json: missing" in proc.stderr and "Traceback" not in proc.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(tmp_path: Path, *args: str) -> str:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]
    proc = subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(recording, tmp_path):
    report = write_report(recording)
    n_steps = len(load(recording).steps)
    dom = chromium(tmp_path, "--dump-dom", report.as_uri())
    assert f'data-images-loaded="{n_steps}"' in dom  # every screenshot decoded in the browser
    assert dom.count("<img ") == n_steps and dom.count('class="step"') == n_steps
    assert "window.pwned" in dom and "<script>window.pwned" not in dom
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1000", report.as_uri())
    assert shot.stat().st_size > 20_000


def test_model_text_on_the_page_shows_its_control_characters(tmp_path):
    from agent.report import _m

    assert _m("ok\x1b[2K\rhidden<b>") == "ok\\x1b[2K\\rhidden&lt;b&gt;"
