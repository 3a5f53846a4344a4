"""Recordings as tests: ``deskpilot replay DIR`` over a tree of recordings, and the pytest plugin
(``pytest --deskpilot-recordings DIR``) that makes each recording a test item."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_env

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "recordings" / "examples"


def deskpilot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, env=cli_env(), timeout=120
    )


def pytest_run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """pytest in a folder of its own, with the plugin (from its entry point once installed)."""
    installed = any(ep.name == "deskpilot" for ep in importlib.metadata.entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "agent.pytest_plugin"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=cli_env(),
        timeout=180,
    )


def move_first_target(folder: Path) -> int:
    """Edit the recorded reply of the first pointing step so it points elsewhere; its step number."""
    path = folder / "steps.jsonl"
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        data = json.loads(line)
        if data["targets"] and data["attempts"]:
            x, y = data["targets"][0]["box_model"][:2]
            edited = re.sub(rf"\b{x},(\s*){y}\b", rf"{x // 2},\g<1>{y}", json.dumps(data["attempts"][-1]["raw"]))
            assert edited != json.dumps(data["attempts"][-1]["raw"])
            data["attempts"][-1]["raw"] = json.loads(edited)
            lines[i] = json.dumps(data)
            path.write_text("\n".join(lines) + "\n")
            return data["step"]
    raise AssertionError("no pointing step")


@pytest.fixture
def tree(tmp_path) -> Path:
    """Three example recordings at different depths."""
    examples = sorted(p for p in EXAMPLES.iterdir() if (p / "header.json").exists())
    assert len(examples) >= 3
    root = tmp_path / "tree"
    shutil.copytree(examples[0], root / examples[0].name)
    shutil.copytree(examples[1], root / "nested" / examples[1].name)
    shutil.copytree(examples[2], root / "nested" / "deeper" / examples[2].name)
    return root


def test_replay_dir_checks_every_recording_at_any_depth(tree):
    proc = deskpilot("replay", str(tree))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len([line for line in lines if line.startswith("ok ")]) == 3
    assert any("nested/deeper/" in line for line in lines)
    assert lines[-1].endswith("3 recordings under " + str(tree) + ": 3 match, 0 differ, 0 unreadable")
    proc = deskpilot("replay", str(tree), "--mode", "simulate")
    assert proc.returncode == 0 and "(simulate): 3 recordings" in proc.stdout


def test_replay_dir_names_the_recording_and_step_that_differ(tree):
    broken = next((tree / "nested").glob("form-*"))
    step = move_first_target(broken)
    proc = deskpilot("replay", str(tree))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("DIFFERS"))
    assert f"nested/{broken.name}: step {step}: " in line
    assert "2 match, 1 differ, 0 unreadable" in proc.stdout


def test_replay_dir_with_an_unreadable_recording_exits_2_after_checking_the_others(tree):
    bad = next(tree.glob("form-*"))
    (bad / "header.json").write_text("[1, 2]")
    proc = deskpilot("replay", str(tree))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"UNREADABLE  {bad.name}: " in proc.stdout and "2 match, 0 differ, 1 unreadable" in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("--mode", "execute"), "--mode execute replays one recording"),
        ((), None),  # an empty folder
    ],
)
def test_replay_dir_usage_errors(tmp_path, tree, args, message):
    folder = tree if message else tmp_path / "empty"
    folder.mkdir(exist_ok=True)
    proc = deskpilot("replay", str(folder), *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (message or "holds no recordings") in proc.stderr


def test_the_plugin_makes_each_recording_a_test_item(tree):
    broken = next((tree / "nested").glob("form-*"))
    step = move_first_target(broken)
    proc = pytest_run(tree, "--deskpilot-recordings", str(tree), "-rf")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 2 passed" in proc.stdout
    assert f"step {step}: target was" in proc.stdout  # the difference is the failure message
    assert f"nested/{broken.name}::check" in proc.stdout
    proc = pytest_run(tree, "--deskpilot-recordings", str(tree), "--deskpilot-mode", "simulate", "-k", "deeper")
    assert proc.returncode == 0 and "1 passed, 2 deselected" in proc.stdout, proc.stdout + proc.stderr


def test_the_plugin_reads_its_folders_from_the_ini_file(tree):
    (tree / "pytest.ini").write_text("[pytest]\ndeskpilot_recordings = nested\n")
    proc = pytest_run(tree, "--co")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nested/deeper/" in proc.stdout and "2 tests collected" in proc.stdout


def test_an_unreadable_recording_fails_its_item_with_the_reason(tree):
    bad = next(tree.glob("form-*"))
    (bad / "steps.jsonl").write_text("not json\n")
    proc = pytest_run(tree, "--deskpilot-recordings", str(tree))
    assert proc.returncode == 1 and "1 failed, 2 passed" in proc.stdout
    assert "the recording cannot be read" in proc.stdout and "steps.jsonl:1" in proc.stdout


def test_the_projects_own_suite_runs_the_example_recordings():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", "tests/test_keys.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=cli_env(),
        timeout=120,
    )
    examples = sorted(p.name for p in EXAMPLES.iterdir() if (p / "header.json").exists())
    for name in examples:
        assert f"recordings/examples/{name}::check" in proc.stdout, proc.stdout + proc.stderr
