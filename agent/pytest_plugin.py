"""Recordings as tests: the pytest plugin behind ``pytest --deskpilot-recordings DIR``.

Every recording under DIR (at any depth; DIR may be one recording) becomes one test item
that replays it without a display or a model (``agent.replay.offline``): ``check`` by
default, ``--deskpilot-mode simulate`` for the dry loop. A recording that differs fails with
each differing step as the message; one that cannot be read fails with the reason. The
option may be given several times. Without it, the ini option ``deskpilot_recordings``
(paths relative to the ini file, e.g. ``deskpilot_recordings = ["recordings/examples"]`` in
``[tool.pytest.ini_options]``) names the folders.

Installed, the plugin is found through the ``pytest11`` entry point ``deskpilot`` (disable it
with ``-p no:deskpilot``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.errors import UsageError
from agent.replay.offline import MODES, Difference, find_recordings, replay_offline
from agent.trajectory import load


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("deskpilot", "deskpilot recordings as tests")
    group.addoption(
        "--deskpilot-recordings",
        action="append",
        default=[],
        metavar="DIR",
        help="replay every deskpilot recording under DIR (any depth) as a test item; may be given again",
    )
    group.addoption(
        "--deskpilot-mode",
        choices=MODES,
        default="check",
        help="check: re-parse and re-ground each step (default); simulate: the dry loop on the recorded screens",
    )
    parser.addini(
        "deskpilot_recordings",
        type="paths",
        default=[],
        help="folders of deskpilot recordings replayed as tests when --deskpilot-recordings is not given",
    )


class RecordingDiffers(Exception):
    """A recording replayed with differences."""

    def __init__(self, differences: list[Difference]) -> None:
        super().__init__(f"{len(differences)} difference(s)")
        self.differences = differences


class RecordingItem(pytest.Item):
    """One recording, replayed offline as a test."""

    def __init__(self, *, recording: Path, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recording, self.mode = recording, mode

    def runtest(self) -> None:
        found = replay_offline(load(self.recording), self.mode)
        if found:
            raise RecordingDiffers(found)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        error = excinfo.value
        if isinstance(error, RecordingDiffers):
            steps = sorted({d.step for d in error.differences})
            return f"{self.recording} ({self.mode}): {len(steps)} step(s) differ\n" + "\n".join(
                f"  {d}" for d in error.differences
            )
        if isinstance(error, UsageError):
            return f"{self.recording}: the recording cannot be read: {error}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.recording, None, f"deskpilot replay --mode {self.mode} {self.name}"


class RecordingsFolder(pytest.Collector):
    """A folder given to the plugin: one ``RecordingItem`` per recording under it."""

    def __init__(self, *, folder: Path, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.folder, self.mode = folder, mode

    def collect(self) -> list[RecordingItem]:
        recordings = [self.folder] if (self.folder / "header.json").exists() else find_recordings(self.folder)
        return [
            RecordingItem.from_parent(
                self,
                name=_shown(path, self.config),
                nodeid=f"{_shown(path, self.config)}::{self.mode}",
                path=path,
                recording=path,
                mode=self.mode,
            )
            for path in recordings
        ]


def _shown(path: Path, config: pytest.Config) -> str:
    """A path relative to the rootdir when it is inside it."""
    try:
        return path.resolve().relative_to(config.rootpath).as_posix()
    except ValueError:
        return path.as_posix()


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect items
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    given = [config.invocation_params.dir / folder for folder in config.getoption("deskpilot_recordings")]
    folders = given or [Path(p) for p in config.getini("deskpilot_recordings")]
    mode = config.getoption("deskpilot_mode")
    for folder in folders:
        if not folder.is_dir():
            raise pytest.UsageError(f"deskpilot recordings: {folder} is not a folder")
        collector = RecordingsFolder.from_parent(
            session, name=_shown(folder, config), nodeid=_shown(folder, config), path=folder, folder=folder, mode=mode
        )
        items.extend(session.genitems(collector))  # reported as collected, like any test
