"""Recordings under faults: a full or read-only disk while recording or writing the report, a
run cut in the middle of a non-ASCII line, screenshot paths and images that a hostile recording
could hold. Each error is a UsageError naming the file and saying what to do; what was written
before stays loadable."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from actions.executor import DryRunExecutor
from agent import trajectory
from agent.capture import ImageScreen
from agent.config import Settings
from agent.errors import UsageError
from agent.loop import Limits, run_episode
from agent.planner import ScriptedPlanner
from agent.report import render, write_report
from agent.trajectory import JsonlRecorder, load
from tests.conftest import cli_env
from tests.test_trajectory import REPLIES, SCREENS, png_declaring, record

SETTINGS = Settings.resolve("siliconflow", api_key="k")
ADVICE = "free some space or choose another folder with --recordings DIR"


def run(recorder: JsonlRecorder) -> None:
    """The three-step scripted run of test_trajectory, into ``recorder``."""
    run_episode(
        "name the file",
        screen=ImageScreen(SCREENS),
        planner=ScriptedPlanner(list(REPLIES)),
        executor=DryRunExecutor(),
        settings=SETTINGS,
        limits=Limits(max_steps=5),
        recorder=recorder,
    )


def oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


# --- disk errors while recording ---------------------------------------------------------


def fail_step_line(monkeypatch, recorder: JsonlRecorder, line: int, code: int) -> None:
    """The ``line``-th step line: half of it reaches the disk, then the write fails."""
    real = recorder._steps.write
    calls = 0

    def write(data):
        nonlocal calls
        calls += 1
        if calls == line:
            real(bytes(data[: len(data) // 2]))
            raise oserror(code)
        return real(data)

    monkeypatch.setattr(recorder._steps, "write", write)


def fail_screenshot(monkeypatch, recorder: JsonlRecorder, name: str, code: int) -> None:
    """Saving the screenshot ``name`` leaves part of a file, then fails (in the PNG thread)."""
    real = trajectory.save_png

    def save(image, path):
        if str(path).endswith(name):
            Path(path).write_bytes(b"\x89PNG\r\n\x1a\n partial")
            raise oserror(code)
        return real(image, path)

    monkeypatch.setattr(trajectory, "save_png", save)


def fail_json_file(monkeypatch, recorder: JsonlRecorder, prefix: str, code: int) -> None:
    """Writing a file whose name starts with ``prefix`` writes half of it, then fails."""
    real_open = Path.open

    def open_(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        if "w" in mode and self.name.startswith(prefix) and self.parent == recorder.path:
            real_write = f.write

            def write(data):
                real_write(data[: len(data) // 2])
                raise oserror(code)

            f.write = write
        return f

    monkeypatch.setattr(Path, "open", open_)


# (how the fault is injected, what the error names, the steps that load, the loaded status)
FAULTS = {
    "step line": (lambda mp, rec, code: fail_step_line(mp, rec, 3, code), "step 3 to", 2, "error"),
    "screenshot": (lambda mp, rec, code: fail_screenshot(mp, rec, "step-0003.png", code), "step-0003.png", 2, "error"),
    "header": (lambda mp, rec, code: fail_json_file(mp, rec, "header.json", code), "header.json", 0, "error"),
    "outcome": (lambda mp, rec, code: fail_json_file(mp, rec, "outcome.json", code), "outcome.json", 3, "incomplete"),
}


@pytest.mark.parametrize("where", FAULTS)
def test_a_full_disk_while_recording_is_a_clear_error_and_keeps_every_step_before(tmp_path, monkeypatch, where):
    inject, names, kept, status = FAULTS[where]
    recorder = JsonlRecorder(tmp_path / "recs", "name the file", SETTINGS.public())
    inject(monkeypatch, recorder, errno.ENOSPC)
    with pytest.raises(UsageError) as info:
        run(recorder)
    message = str(info.value)
    assert names in message and str(recorder.path) in message, message
    assert "(the disk is full)" in message and ADVICE in message
    monkeypatch.undo()
    rec = load(recorder.path)
    assert len(rec.steps) == kept and rec.outcome.status == status and rec.outcome.steps == kept
    assert [s.step for s in rec.steps] == list(range(1, kept + 1))
    if status == "error":  # the outcome that could be written says why the run stopped
        assert "the disk is full" in rec.outcome.message
    assert not list(recorder.path.glob("*.tmp")), "a half-written JSON file was left behind"
    if where == "screenshot":  # the partial PNG is removed: no step names it
        assert sorted(p.name for p in (recorder.path / "screens").iterdir()) == ["step-0001.png", "step-0002.png"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_screenshot_written_to_a_full_device_is_a_clear_error_and_is_removed(tmp_path):
    recorder = JsonlRecorder(tmp_path / "recs", "name the file", SETTINGS.public())
    shot = recorder.path / "screens" / "step-0002.png"
    shot.symlink_to("/dev/full")  # every write to it fails as on a full disk
    with pytest.raises(UsageError) as info:
        run(recorder)
    assert f"cannot write the screenshot {shot} (the disk is full): {ADVICE}" in str(info.value)
    assert not shot.is_symlink() and not shot.exists()
    rec = load(recorder.path)
    assert [s.step for s in rec.steps] == [1] and rec.outcome.status == "error"


def test_a_screenshot_folder_that_went_away_is_a_clear_error(tmp_path):
    recorder = JsonlRecorder(tmp_path / "recs", "name the file", SETTINGS.public())
    (recorder.path / "screens").rmdir()  # removed under the running recorder
    with pytest.raises(UsageError) as info:
        run(recorder)
    message = str(info.value)
    assert f"cannot write the screenshot {recorder.path / 'screens' / 'step-0001.png'} (" in message
    assert os.strerror(errno.ENOENT) in message and ADVICE in message
    rec = load(recorder.path, check_screens=False)
    assert rec.steps == [] and rec.outcome.status == "error"


@pytest.mark.parametrize(
    "code, reason",
    [
        (errno.EROFS, "the file system is read-only"),
        (errno.EACCES, "permission denied"),
        (errno.EIO, os.strerror(errno.EIO)),
    ],
)
def test_any_oserror_on_a_step_line_says_why_and_cuts_the_half_line_off(tmp_path, monkeypatch, code, reason):
    recorder = JsonlRecorder(tmp_path / "recs", "name the file", SETTINGS.public())
    fail_step_line(monkeypatch, recorder, 2, code)
    with pytest.raises(UsageError, match=f"cannot write step 2 to .*steps.jsonl \\({reason}\\): {ADVICE}"):
        run(recorder)
    assert (recorder.path / "steps.jsonl").read_bytes().count(b"\n") == 1  # the half line is gone
    rec = load(recorder.path)
    assert len(rec.steps) == 1 and rec.outcome.steps == 1 and rec.outcome.status == "error"


def test_a_half_line_that_cannot_be_cut_off_is_dropped_by_the_loader(tmp_path, monkeypatch):
    recorder = JsonlRecorder(tmp_path / "recs", "name the file", SETTINGS.public())
    fail_step_line(monkeypatch, recorder, 3, errno.EROFS)

    def ftruncate(fd, size):
        raise oserror(errno.EROFS)

    monkeypatch.setattr(os, "ftruncate", ftruncate)
    with pytest.raises(UsageError, match="read-only"):
        run(recorder)
    monkeypatch.undo()
    assert not (recorder.path / "steps.jsonl").read_bytes().endswith(b"\n")
    assert not (recorder.path / "outcome.json").exists()  # its count would not match the file
    rec = load(recorder.path)
    assert len(rec.steps) == 2 and rec.outcome.status == "incomplete"
    assert "line 3) was cut off and dropped" in rec.outcome.message


# --- a run killed in the middle of a non-ASCII line ----------------------------------------


def test_a_line_cut_inside_a_multibyte_character_is_dropped_in_an_unfinished_run(tmp_path):
    folder = record(tmp_path)
    (folder / "outcome.json").unlink()
    lines = (folder / "steps.jsonl").read_bytes().splitlines(keepends=True)
    last = lines[2].replace(b'"thought":"', '"thought":"naïve 漢字 ✓ '.encode(), 1)
    cut = last.index("漢".encode()) + 1  # inside the character's three bytes
    (folder / "steps.jsonl").write_bytes(b"".join(lines[:2]) + last[:cut])
    rec = load(folder)
    assert len(rec.steps) == 2 and rec.outcome.status == "incomplete"
    assert "line 3) was cut off and dropped" in rec.outcome.message


def test_a_bad_line_that_ends_with_its_newline_is_an_error_even_in_an_unfinished_run(tmp_path):
    folder = record(tmp_path)
    (folder / "outcome.json").unlink()
    lines = (folder / "steps.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][:40] + b"\xe6\xbc\n"
    (folder / "steps.jsonl").write_bytes(b"".join(lines))
    with pytest.raises(UsageError, match=r"steps.jsonl:3: the line is not UTF-8 text"):
        load(folder)


# --- screenshots a hostile recording could name -------------------------------------------


@pytest.mark.parametrize("elsewhere", ["../outside.png", "/etc/hostname", "screens/../../outside.png"])
def test_screenshot_and_report_refuse_a_path_outside_the_recording(tmp_path, elsewhere):
    folder = record(tmp_path)
    (folder.parent / "outside.png").write_bytes((folder / "screens" / "step-0001.png").read_bytes())
    rec = load(folder)
    rec.steps[0].screenshot = elsewhere
    for use in (rec.screenshot, lambda s: render(rec), lambda s: render(rec, link_images=True)):
        with pytest.raises(UsageError, match="outside the recording folder; refused"):
            use(rec.steps[0])


def test_a_decompression_bomb_is_refused_by_screenshot_and_the_report(tmp_path):
    folder = record(tmp_path)
    bomb = folder / "screens" / "step-0002.png"
    bomb.write_bytes(png_declaring(30000, 30000))
    rec = load(folder, check_screens=False)
    expected = f"{bomb}: screenshot of step 2 is refused: it declares more pixels than is safe to decode"
    with pytest.raises(UsageError) as info:
        rec.screenshot(rec.steps[1])
    assert expected in str(info.value)
    with pytest.raises(UsageError) as info:
        write_report(folder)
    assert expected in str(info.value) and not (folder / "report.html").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "view", str(folder)], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr


def test_an_image_over_the_warning_limit_is_refused_too(tmp_path, monkeypatch):
    folder = record(tmp_path)
    # 1280x800 = 1,024,000 pixels: over this limit, under twice it (Pillow only warns there)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 700_000)
    with pytest.raises(UsageError, match="step-0001.png: screenshot of step 1 is refused"):
        load(folder)
    rec = load(folder, check_screens=False)
    with pytest.raises(UsageError, match="step-0001.png: screenshot of step 1 is refused"):
        rec.screenshot(rec.steps[0])


# --- the report on a read-only or full disk -----------------------------------------------


def test_a_report_that_cannot_be_written_suggests_out(tmp_path):
    folder = record(tmp_path)
    (folder / "report.html").mkdir()  # root ignores chmod; a directory in the way fails for everyone
    with pytest.raises(UsageError) as info:
        write_report(folder)
    message = str(info.value)
    assert f"cannot write the report {folder / 'report.html'}" in message
    assert f"write it elsewhere with: deskpilot view {folder} --out FILE" in message
    assert not list(folder.glob("*.tmp"))
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "view", str(folder)], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert proc.returncode == 2 and "--out FILE" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "code, reason",
    [
        (errno.EROFS, "the file system is read-only"),
        (errno.EACCES, "permission denied"),
        (errno.ENOSPC, "the disk is full"),
    ],
)
def test_a_read_only_recording_folder_names_the_reason(tmp_path, monkeypatch, code, reason):
    folder = record(tmp_path)
    real_open = Path.open

    def open_(self, mode="r", *args, **kwargs):
        if "w" in mode and self.parent == folder:
            raise oserror(code)
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    with pytest.raises(
        UsageError, match=f"report .*report.html \\({reason}\\): write it elsewhere with: deskpilot view"
    ):
        write_report(folder)


def test_out_writes_the_report_elsewhere_with_images_linked_from_there(tmp_path):
    folder = record(tmp_path)
    out = tmp_path / "reports" / "run.html"
    out.parent.mkdir()
    assert write_report(folder, link_images=True, out=out) == out and not (folder / "report.html").exists()
    sources = [line.split('src="', 1)[1].split('"', 1)[0] for line in out.read_text().split("<img ")[1:]]
    assert [(out.parent / src).resolve() for src in sources] == [
        (folder / "screens" / f"step-{n:04d}.png").resolve() for n in (1, 2, 3)
    ]
    with pytest.raises(UsageError, match="choose another file with --out FILE"):
        write_report(folder, out=tmp_path / "no-such-folder" / "run.html")
