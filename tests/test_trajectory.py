"""The recording format: schema round-trip, no secrets, crash safety, and the loader's errors (untrusted files)."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from actions.executor import DryRunExecutor
from agent.bench.scene import generate_screen
from agent.capture import ImageScreen
from agent.config import Settings
from agent.errors import UsageError
from agent.fakeserver import FakeModelServer
from agent.geometry import MonitorGeometry, Target
from agent.loop import Limits, run_episode
from agent.planner import ScriptedPlanner
from agent.trajectory import QUEUE_STEPS, SCHEMA_VERSION, JsonlRecorder, Outcome, Step, load
from tests.conftest import cli_env
from tests.fake_brains import FormBrain, steps_done

SCREENS = Path(__file__).parent / "screens" / "dialog"
REPLIES = [
    "The field is empty.\n<|begin_of_box|>left_click(start_box='[500,497]', element_info='name field')"
    '<|end_of_box|>\nMemory: ["started"]',
    "nothing useful",
    {
        "content": "Type.",
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "type", "arguments": '{"content": "a.txt"}'}}
        ],
    },
    "DONE(answer='ok')",
]


def record(tmp_path: Path, settings: Settings | None = None, origin=(0, 0), scale=1.0) -> Path:
    settings = settings or Settings.resolve("siliconflow", api_key="sk-very-secret-1234")
    recorder = JsonlRecorder(tmp_path / "recs", "name the file", settings.public())
    run_episode(
        "name the file",
        screen=ImageScreen(SCREENS, origin=origin, scale=scale),
        planner=ScriptedPlanner(list(REPLIES)),
        executor=DryRunExecutor(),
        settings=settings,
        limits=Limits(max_steps=5),
        recorder=recorder,
    )
    return recorder.path


def test_schema_round_trip(tmp_path):
    folder = record(tmp_path, origin=(-1280, 0), scale=2.0)
    rec = load(folder)
    assert rec.header.schema_version == SCHEMA_VERSION == 1
    assert (rec.header.provider, rec.header.model, rec.header.protocol) == ("siliconflow", "zai-org/GLM-4.5V", "auto")
    assert rec.header.monitor == MonitorGeometry(-1280, 0, 1280, 800, 2.0)
    assert rec.header.prices.model_dump() == {
        "input_per_million": 0.14,
        "output_per_million": 0.86,
        "source": "preset siliconflow",
    }
    assert rec.header.max_image_tokens == 2700 and rec.header.monitor_index == 1
    assert rec.outcome.status == "done" and rec.outcome.answer == "ok" and len(rec.steps) == 3
    first, second = rec.steps[0], rec.steps[1]
    assert first.targets[0] == Target((500, 497), (640, 398), (-1280 + 320, 199))
    assert first.memory == ["started"] and first.sent.tokens > 0 and first.sent.width == 1280
    assert [a.error_type for a in second.attempts] == ["UnparseableReply", None]
    assert second.attempts[1].raw["tool_calls"][0]["function"]["name"] == "type"
    assert second.memory_in == ["started"] and second.history_lines == 1
    # every model survives a dump and a reload unchanged
    for line, step in zip((folder / "steps.jsonl").read_text().splitlines(), rec.steps):
        assert Step.model_validate_json(line) == step == Step.model_validate(json.loads(step.model_dump_json()))
    assert Outcome.model_validate_json((folder / "outcome.json").read_text()) == rec.outcome


def test_no_key_anywhere_in_a_recording(tmp_path):
    folder = record(tmp_path)
    for path in folder.rglob("*"):
        if path.is_file():
            assert b"sk-very-secret-1234" not in path.read_bytes(), path
    assert load(folder).header.settings["api_key_set"] is True


def test_overridden_prices_are_marked(tmp_path):
    settings = Settings.resolve("openrouter", api_key="k", price_in=1.0, price_out=2.0)
    header = load(record(tmp_path, settings)).header
    assert header.prices.source == "override" and header.prices.input_per_million == 1.0


def test_a_run_killed_mid_line_loads_without_the_cut_off_step(tmp_path):
    folder = record(tmp_path)
    (folder / "outcome.json").unlink()
    text = (folder / "steps.jsonl").read_text()
    (folder / "steps.jsonl").write_text(text[: len(text) - 200])
    rec = load(folder)
    assert rec.outcome.status == "incomplete" and len(rec.steps) == 2
    assert "line 3) was cut off" in rec.outcome.message
    assert rec.outcome.prompt_tokens == sum(s.prompt_tokens for s in rec.steps)


# --- the recorder's writer thread -----------------------------------------------------------


def slow_image(seconds: float, started: list[float] | None = None):
    """A screenshot that takes ``seconds`` to make (a slow disk or a 4K PNG), noting when it starts."""

    def make() -> Image.Image:
        if started is not None:
            started.append(time.monotonic())
        time.sleep(seconds)
        return Image.new("RGB", (64, 40), "teal")

    return make


def bare_step(number: int, screenshot: str) -> Step:
    return Step(step=number, started_at=time.time(), screenshot=screenshot, geometry=MonitorGeometry(0, 0, 64, 40))


def test_the_loop_does_not_wait_for_screenshots_until_the_queue_is_full(tmp_path):
    recorder = JsonlRecorder(tmp_path, "queue")
    waits = []
    for number in range(1, QUEUE_STEPS + 3):
        t = time.monotonic()
        path = recorder.save_screenshot(number, slow_image(0.3))
        waits.append(time.monotonic() - t)
        recorder.write_step(bare_step(number, path))
    # The first QUEUE_STEPS steps are queued at once; each later one waits for a place.
    assert max(waits[:QUEUE_STEPS]) < 0.15 and min(waits[QUEUE_STEPS:]) > 0.15
    recorder.finish(Outcome(status="done"))
    rec = load(recorder.path)
    assert [s.step for s in rec.steps] == list(range(1, QUEUE_STEPS + 3)) and rec.outcome.steps == QUEUE_STEPS + 2


def test_a_step_line_is_written_after_its_screenshot(tmp_path, monkeypatch):
    recorder = JsonlRecorder(tmp_path, "order")
    seen = []
    real_append = JsonlRecorder._append

    def append(self, step, line):
        seen.append((step, (self.path / f"screens/step-{step:04d}.png").exists()))
        real_append(self, step, line)

    monkeypatch.setattr(JsonlRecorder, "_append", append)
    for number in (1, 2):
        recorder.write_step(bare_step(number, recorder.save_screenshot(number, slow_image(0.1))))
    recorder.finish(Outcome(status="done"))
    assert seen == [(1, True), (2, True)]


def test_screenshots_on_disk_are_the_captures_exact_pixels(tmp_path):
    desktop = generate_screen((2560, 1440), seed=3)
    small = Image.frombytes("RGB", (3, 2), bytes(range(0, 255, 14)))  # every byte wraps in the Up filter
    recorder = JsonlRecorder(tmp_path, "pixels")
    recorder.write_step(bare_step(1, recorder.save_screenshot(1, desktop)))
    step = bare_step(2, recorder.save_screenshot(2, lambda: small))  # made in the writer thread
    step.screenshot_after = recorder.save_screenshot(2, desktop.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "after")
    recorder.write_step(step)
    recorder.finish(Outcome(status="done"))
    rec = load(recorder.path)
    shots = [path for step in rec.steps for path in rec.screenshot_paths(step)]
    expected = [desktop, small, desktop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    assert [p.name for p in shots] == ["step-0001.png", "step-0002.png", "step-0002-after.png"]
    for path, image in zip(shots, expected):
        with Image.open(path) as png:
            assert (png.mode, png.size) == ("RGB", image.size) and png.tobytes() == image.tobytes(), path


def test_a_run_records_the_screens_it_was_shown_exactly(tmp_path):
    served = {}
    for path in SCREENS.iterdir():
        with Image.open(path) as img:
            served[img.convert("RGB").tobytes()] = path.name
    rec = load(record(tmp_path))
    for step in rec.steps:
        assert rec.screenshot(step).tobytes() in served, step.screenshot


def test_a_failure_found_only_at_finish_makes_the_outcome_an_error(tmp_path, monkeypatch):
    recorder = JsonlRecorder(tmp_path, "late failure")
    recorder.write_step(bare_step(1, recorder.save_screenshot(1, slow_image(0.0))))

    def broken() -> Image.Image:
        time.sleep(0.2)  # still being made when the step line is queued
        raise OSError(28, os.strerror(28))

    recorder.write_step(bare_step(2, recorder.save_screenshot(2, broken)))  # queued: no error yet
    with pytest.raises(UsageError, match="step-0002.png .the disk is full"):
        recorder.finish(Outcome(status="done", message="the model declared the task done"))
    rec = load(recorder.path)
    assert len(rec.steps) == 1 and rec.outcome.status == "error" and "disk is full" in rec.outcome.message


# --- the loader's errors: each names the file (and line) ---------------------------------


def _missing_header(folder):
    (folder / "header.json").unlink()
    return "header.json: missing"


def _missing_steps(folder):
    (folder / "steps.jsonl").unlink()
    return "steps.jsonl: missing"


def _truncated_last_line(folder):
    text = (folder / "steps.jsonl").read_text()
    (folder / "steps.jsonl").write_text(text[:-300])
    return "steps.jsonl:3: the last line is truncated"


def _bad_middle_line(folder):
    lines = (folder / "steps.jsonl").read_text().splitlines()
    lines[1] = lines[1][:50]
    (folder / "steps.jsonl").write_text("\n".join(lines) + "\n")
    return "steps.jsonl:2: the line is not valid JSON"


def _wrong_field(folder):
    lines = (folder / "steps.jsonl").read_text().splitlines()
    data = json.loads(lines[0])
    data["geometry"] = "big"
    lines[0] = json.dumps(data)
    (folder / "steps.jsonl").write_text("\n".join(lines) + "\n")
    return "steps.jsonl:1: geometry"


def _unknown_version(folder):
    header = json.loads((folder / "header.json").read_text())
    header["schema_version"] = 7
    (folder / "header.json").write_text(json.dumps(header))
    return "header.json: schema version 7 is not supported (this deskpilot reads version 1)"


def _garbage_screenshot(folder):
    (folder / "screens" / "step-0002.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return "step-0002.png: screenshot of step 2 does not decode"


def _truncated_screenshot(folder):
    path = folder / "screens" / "step-0003.png"
    path.write_bytes(path.read_bytes()[:-100])
    return "step-0003.png: screenshot of step 3 does not decode"


def _missing_screenshot(folder):
    (folder / "screens" / "step-0001.png").unlink()
    return "step-0001.png: screenshot of step 1 is missing"


def _no_folder(folder):
    import shutil

    shutil.rmtree(folder)
    return ": no such recording folder"


def _non_utf8_middle_line(folder):
    lines = (folder / "steps.jsonl").read_bytes().splitlines()
    lines[1] = lines[1].replace(b'"thought":', b'"thought\xff":', 1)
    (folder / "steps.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return "steps.jsonl:2: the line is not UTF-8 text"


def _steps_empty_but_outcome_counts_3(folder):
    (folder / "steps.jsonl").write_bytes(b"")
    return f"{folder / 'outcome.json'} says the run had 3 steps but {folder / 'steps.jsonl'} holds 0"


def _fewer_steps_than_outcome(folder):
    lines = (folder / "steps.jsonl").read_text().splitlines()
    (folder / "steps.jsonl").write_text("\n".join(lines[:2]) + "\n")
    return "says the run had 3 steps but"


def _steps_out_of_order(folder):
    lines = (folder / "steps.jsonl").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (folder / "steps.jsonl").write_text("\n".join(lines) + "\n")
    return "steps.jsonl:1: step 2 where step 1 was expected"


def _step_repeated(folder):
    lines = (folder / "steps.jsonl").read_text().splitlines()
    lines[1] = lines[0]
    (folder / "steps.jsonl").write_text("\n".join(lines) + "\n")
    return "steps.jsonl:2: step 1 where step 2 was expected"


def _header_not_an_object(folder):
    (folder / "header.json").write_text('["schema_version", 1]')
    return "header.json: holds an array, not a JSON object"


def _outcome_not_an_object(folder):
    (folder / "outcome.json").write_text('"done"')
    return "outcome.json: holds a string, not a JSON object"


def _outcome_not_utf8(folder):
    (folder / "outcome.json").write_bytes(b'{"status": "done", "message": "\xe9"}')
    return "outcome.json: not UTF-8 text"


def _set_screenshot(folder, number, value):
    lines = (folder / "steps.jsonl").read_text().splitlines()
    data = json.loads(lines[number - 1])
    data["screenshot"] = value
    lines[number - 1] = json.dumps(data)
    (folder / "steps.jsonl").write_text("\n".join(lines) + "\n")


def _outside_png(folder):
    """A valid screenshot next to the recording (outside it)."""
    outside = folder.parent / "outside.png"
    outside.write_bytes((folder / "screens" / "step-0001.png").read_bytes())
    return outside


def _screenshot_absolute(folder):
    _set_screenshot(folder, 1, str(_outside_png(folder)))
    return "the screenshot of step 1 is '/"


def _screenshot_dotdot(folder):
    _outside_png(folder)
    _set_screenshot(folder, 2, "screens/../../outside.png")
    return "the screenshot of step 2 is 'screens/../../outside.png', outside the recording folder; refused"


def _screenshot_symlink_out(folder):
    shot = folder / "screens" / "step-0003.png"
    shot.unlink()
    shot.symlink_to(_outside_png(folder))
    return "the screenshot of step 3 is 'screens/step-0003.png', outside the recording folder"


def _screens_folder_symlinked_out(folder):
    outside = folder.parent / "elsewhere"
    (folder / "screens").rename(outside)
    (folder / "screens").symlink_to(outside)
    return "the screenshot of step 1 is 'screens/step-0001.png', outside the recording folder"


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _screenshot_bomb(folder):
    (folder / "screens" / "step-0002.png").write_bytes(png_declaring(30000, 30000))
    return "step-0002.png: screenshot of step 2 is refused: it declares more pixels than is safe to decode"


CORRUPTIONS = [
    _missing_header,
    _missing_steps,
    _truncated_last_line,
    _bad_middle_line,
    _wrong_field,
    _unknown_version,
    _garbage_screenshot,
    _truncated_screenshot,
    _missing_screenshot,
    _no_folder,
    _non_utf8_middle_line,
    _steps_empty_but_outcome_counts_3,
    _fewer_steps_than_outcome,
    _steps_out_of_order,
    _step_repeated,
    _header_not_an_object,
    _outcome_not_an_object,
    _outcome_not_utf8,
    _screenshot_absolute,
    _screenshot_dotdot,
    _screenshot_symlink_out,
    _screens_folder_symlinked_out,
    _screenshot_bomb,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_corrupted_recordings_give_clear_errors(tmp_path, corrupt):
    folder = record(tmp_path)
    expected = corrupt(folder)
    with pytest.raises(UsageError) as info:
        load(folder)
    assert expected in str(info.value) and str(folder) in str(info.value)


# --- a real run killed with SIGKILL ------------------------------------------------------


def test_sigkill_mid_run_leaves_a_loadable_recording(tmp_path):
    release = threading.Event()
    form = FormBrain("report.txt")

    def brain(body):
        if steps_done(body) == 2:  # the third step's request: hang until the test is over
            release.wait(30)
        return form(body)

    with FakeModelServer(brain) as server:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "run",
                "name the file report.txt and press OK",
                "--provider",
                "vllm",
                "--base-url",
                server.base_url,
                "--screens",
                str(SCREENS),
                "--recordings",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=cli_env(),
        )
        try:

            def written() -> bool:  # the writer thread wrote steps 1 and 2, and started step 3's screenshot
                folders = list(tmp_path.iterdir())
                if len(server.requests) < 3 or not folders:
                    return False
                lines = (folders[0] / "steps.jsonl").read_bytes().count(b"\n")
                return lines == 2 and (folders[0] / "screens" / "step-0003.png").exists()

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not written():
                time.sleep(0.02)
            assert len(server.requests) >= 3, "the run never reached step 3"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == -signal.SIGKILL
    (folder,) = tmp_path.iterdir()
    assert not (folder / "outcome.json").exists()
    rec = load(folder)
    assert rec.outcome.status == "incomplete" and len(rec.steps) == 2
    assert [s.action["kind"] for s in rec.steps] == ["left_click", "type"]
    assert rec.header.monitor.width == 1280 and (folder / "screens" / "step-0003.png").exists()


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_corrupted_recordings_exit_2_from_the_cli_without_a_traceback(tmp_path, corrupt):
    folder = record(tmp_path)
    expected = corrupt(folder)
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "replay", str(folder)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stderr and str(folder) in proc.stderr and "Traceback" not in proc.stderr
