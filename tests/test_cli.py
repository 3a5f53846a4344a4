"""The deskpilot command line, run as a user would: a subprocess against the fake server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.fakeserver import FakeModelServer
from agent.trajectory import load
from tests.conftest import cli_env
from tests.fake_brains import FormBrain

SCREENS = Path(__file__).parent / "screens" / "dialog"


def deskpilot(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, env=cli_env(**env), timeout=60
    )


@pytest.mark.parametrize("protocol", ["tools", "text"])
def test_dry_run_against_a_fake_server(tmp_path, protocol):
    brain = FormBrain("report.txt")
    with FakeModelServer(brain) as server:
        proc = deskpilot(
            "run",
            "name the file report.txt and press OK",
            "--provider",
            "vllm",
            "--base-url",
            server.base_url,
            "--protocol",
            protocol,
            "--dry-run",
            "--screens",
            str(SCREENS),
            "--recordings",
            str(tmp_path),
        )
    assert proc.returncode == 0, proc.stderr
    would = [line for line in proc.stdout.splitlines() if line.startswith("dry-run: would")]
    assert would == [
        "dry-run: would left_click at (640, 398) on 'name field'",  # centre of the cyan field (440-840, 380-416)
        "dry-run: would type 'report.txt'",
        "dry-run: would left_click at (640, 524) on 'OK button'",  # centre of the magenta OK (560-720, 500-548)
    ]
    assert "step   1  left_click at (640, 398) on 'name field'" in proc.stdout
    assert ("tools" in server.requests[0]) == (protocol == "tools")
    (folder,) = tmp_path.iterdir()
    rec = load(folder)
    assert rec.outcome.status == "done" and len(rec.steps) == 4
    assert [t.point_screen for s in rec.steps for t in s.targets] == [(640, 398), (640, 524)]


def test_help_works_without_a_display():
    proc = deskpilot("run", "--help", DISPLAY="")
    assert proc.returncode == 0 and "--provider" in proc.stdout and "130" in proc.stdout


def test_missing_key_is_a_clear_usage_error(tmp_path):
    proc = deskpilot("run", "x", "--screens", str(SCREENS), "--recordings", str(tmp_path))
    assert proc.returncode == 2
    assert "SILICONFLOW_API_KEY" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_flag_exits_2_without_traceback():
    proc = deskpilot("run", "x", "--max-steps", "zero")
    assert proc.returncode == 2 and "not a whole number" in proc.stderr and "Traceback" not in proc.stderr


def test_no_display_says_what_to_do(tmp_path):
    proc = deskpilot("run", "x", "--provider", "vllm", "--recordings", str(tmp_path), DISPLAY="", WAYLAND_DISPLAY="")
    assert proc.returncode == 2
    assert "no X display: set DISPLAY or use --dry-run --screens" in proc.stderr and "Traceback" not in proc.stderr


def test_unreachable_endpoint_exits_3(tmp_path):
    with FakeModelServer(lambda body: "DONE()") as server:
        url = server.base_url
    proc = deskpilot(
        "run",
        "x",
        "--provider",
        "vllm",
        "--base-url",
        url,
        "--screens",
        str(SCREENS),
        "--recordings",
        str(tmp_path),
        "--retries",
        "1",
    )
    assert proc.returncode == 3 and "failed" in proc.stderr and "Traceback" not in proc.stderr
    (folder,) = tmp_path.iterdir()
    assert json.loads((folder / "outcome.json").read_text())["status"] == "error"


def test_bad_base_url_is_a_usage_error(tmp_path):
    proc = deskpilot(
        "run",
        "x",
        "--provider",
        "vllm",
        "--base-url",
        "localhost:8000",
        "--screens",
        str(SCREENS),
        "--recordings",
        str(tmp_path),
    )
    assert proc.returncode == 2 and "must start with http://" in proc.stderr and "Traceback" not in proc.stderr


def test_wayland_without_x_is_explained(tmp_path):
    proc = deskpilot(
        "run", "x", "--provider", "vllm", "--recordings", str(tmp_path), DISPLAY="", WAYLAND_DISPLAY="wayland-0"
    )
    assert proc.returncode == 2 and "Wayland" in proc.stderr and "--dry-run --screens" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unwritable_recordings_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = deskpilot("run", "x", "--provider", "vllm", "--screens", str(SCREENS), "--recordings", str(blocker / "rec"))
    assert proc.returncode == 2 and "--recordings" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_screens_path(tmp_path):
    proc = deskpilot("run", "x", "--provider", "vllm", "--screens", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_secret_variable(tmp_path):
    proc = deskpilot(
        "run", "type {{secret:PIN}}", "--provider", "vllm", "--screens", str(SCREENS), "--recordings", str(tmp_path)
    )
    assert proc.returncode == 2 and "DESKPILOT_SECRET_PIN" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_image_encoding_is_a_usage_error(tmp_path):
    proc = deskpilot(
        "run",
        "x",
        "--provider",
        "vllm",
        "--screens",
        str(SCREENS),
        "--image-encoding",
        "webp",
        "--recordings",
        str(tmp_path),
    )
    assert proc.returncode == 2 and "png[:LEVEL] or jpeg[:QUALITY]" in proc.stderr and not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "flags,status,message",
    [
        (["--price-in", "100", "--max-cost", "0.15"], "max_cost", "cost budget ($0.15) was reached"),
        (["--max-steps", "2"], "max_steps", "step budget (2) ran out"),
    ],
)
def test_budgets_end_the_run_cleanly_and_say_which(tmp_path, flags, status, message):
    with FakeModelServer(FormBrain("report.txt")) as server:  # the fake reports 1,000 prompt tokens a request
        proc = deskpilot(
            "run",
            "fill the form",
            "--provider",
            "vllm",
            "--base-url",
            server.base_url,
            "--screens",
            str(SCREENS),
            "--recordings",
            str(tmp_path),
            *flags,
        )
    assert proc.returncode == 1 and message in proc.stdout, proc.stdout + proc.stderr
    rec = load(next(tmp_path.iterdir()))
    assert rec.outcome.status == status and len(rec.steps) == 2
    if status == "max_cost":
        assert rec.outcome.cost_usd == pytest.approx(0.2, rel=0.01) and "$0.1" in proc.stdout


def test_a_question_ends_with_the_answer_printed_and_recorded(tmp_path):
    replies = iter(
        [
            'The original price is $80.00 and the sale price $60.00.\nMemory: ["80", "60"]\n'
            "hover(start_box='[500,500]', element_info='price tag')",
            "DONE(answer='25% off: $80.00 -> $60.00')",
        ]
    )
    with FakeModelServer(lambda body: next(replies)) as server:
        proc = deskpilot(
            "run",
            "what is the discount rate?",
            "--provider",
            "vllm",
            "--base-url",
            server.base_url,
            "--screens",
            str(SCREENS),
            "--recordings",
            str(tmp_path),
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("answer: 25% off: $80.00 -> $60.00")
    assert load(next(tmp_path.iterdir())).outcome.answer == "25% off: $80.00 -> $60.00"


def test_time_budget(tmp_path):
    def slow(body):
        time.sleep(0.4)
        return "WAIT()"

    with FakeModelServer(slow) as server:
        proc = deskpilot(
            "run",
            "x",
            "--provider",
            "vllm",
            "--base-url",
            server.base_url,
            "--screens",
            str(SCREENS),
            "--recordings",
            str(tmp_path),
            "--max-time",
            "0.6",
        )
    assert proc.returncode == 1 and "time budget (0.6 s) ran out" in proc.stdout
    rec = load(next(tmp_path.iterdir()))
    assert rec.outcome.status == "max_time" and 1 <= len(rec.steps) <= 3


@pytest.mark.parametrize(
    "flags,thinking",
    [
        ([], False),
        (["--thinking"], True),
        (["--thinking-budget", "512"], True),
        (["--thinking-budget", "512", "--no-thinking"], False),
    ],
)
def test_thinking_flags_reach_the_request(tmp_path, flags, thinking):
    with FakeModelServer(lambda body: "DONE()") as server:
        proc = deskpilot(
            "run",
            "x",
            "--provider",
            "vllm",
            "--base-url",
            server.base_url,
            "--screens",
            str(SCREENS),
            "--recordings",
            str(tmp_path),
            *flags,
        )
    assert proc.returncode == 0, proc.stderr
    assert server.requests[0]["chat_template_kwargs"] == {"enable_thinking": thinking}
    assert server.requests[0]["skip_special_tokens"] is False


def test_the_readme_exit_code_table_is_the_one_in_errors():
    from agent.errors import EXIT_CODES

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert rows == [f"| {code} | {meaning} |" for code, meaning in EXIT_CODES]
    for command in ("run", "replay", "view"):
        shown = deskpilot(command, "--help").stdout
        assert all(f"  {code:<4} {meaning}" in shown for code, meaning in EXIT_CODES), command
