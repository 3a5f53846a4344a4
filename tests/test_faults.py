"""A flaky endpoint in normal operation: every fault is retried and the run still completes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.fakeserver import FakeModelServer
from agent.trajectory import load
from tests.conftest import cli_env
from tests.fake_brains import FAULTS, FaultyBrain, FormBrain

SCREENS = Path(__file__).parent / "screens" / "dialog"
TRANSPORT_FAULTS = {"429": "HTTP 429", "500": "HTTP 500", "hang": "timeout"}
MODEL_FAULTS = {"truncated_json": "InvalidArguments", "no_action": "UnparseableReply", "starved": "EmptyReply"}


def check_recording_shows_the_retry(folder: Path, name: str) -> None:
    rec = load(folder)
    assert rec.outcome.status == "done"
    step = rec.steps[1]  # the fault hit the first request of step 2
    if name in TRANSPORT_FAULTS:
        assert len(step.attempts) == 1 and TRANSPORT_FAULTS[name] in step.attempts[0].transport_retries[0]
    else:
        assert [a.error_type for a in step.attempts] == [MODEL_FAULTS[name], None]
    assert step.action["kind"] == "type"


@pytest.mark.parametrize("name", FAULTS)
def test_dry_run_survives_each_fault(tmp_path, name):
    brain = FaultyBrain(FormBrain("report.txt"), name)
    with FakeModelServer(brain) as server:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent",
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
                "--timeout",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env(),
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert brain.injected
    (folder,) = tmp_path.iterdir()
    check_recording_shows_the_retry(folder, name)
