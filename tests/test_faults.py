"""A flaky endpoint in normal operation: every fault is retried and the run still completes;
an endpoint that keeps failing ends the run with exit 3 after the retries, not after every step's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.fakeserver import FakeHTTP, FakeModelServer, completion
from agent.trajectory import load
from tests.conftest import cli_env
from tests.fake_brains import FAULTS, FaultyBrain, FormBrain, steps_done

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


def dry_run(base_url: str, recordings: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", "run", "fill the form", "--provider", "vllm", "--base-url", base_url]
        + ["--screens", str(SCREENS), "--recordings", str(recordings), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )


@pytest.mark.parametrize("name", FAULTS)
def test_dry_run_survives_each_fault(tmp_path, name):
    brain = FaultyBrain(FormBrain("report.txt"), name)
    with FakeModelServer(brain) as server:
        proc = dry_run(server.base_url, tmp_path, "--timeout", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert brain.injected
    (folder,) = tmp_path.iterdir()
    check_recording_shows_the_retry(folder, name)


class DripOnce:
    """Answers the first request of the second step right, but one byte every 0.2 s (minutes in all)."""

    def __init__(self, inner: FormBrain) -> None:
        self.inner, self.dripped = inner, False

    def __call__(self, body: dict) -> object:
        reply = self.inner(body)
        if not self.dripped and steps_done(body) == 1:
            self.dripped = True
            return FakeHTTP(200, completion(reply), drip_s=0.2)
        return reply


def test_a_dripping_reply_is_cut_at_the_timeout_and_retried(tmp_path):
    with FakeModelServer(DripOnce(FormBrain("report.txt"))) as server:
        proc = dry_run(server.base_url, tmp_path, "--timeout", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (folder,) = tmp_path.iterdir()
    step = load(folder).steps[1]
    assert "timeout" in step.attempts[0].transport_retries[0] and step.action["kind"] == "type"
    assert step.timings.model_s < 10


def test_an_endpoint_that_always_answers_empty_choices_ends_the_run(tmp_path):
    with FakeModelServer(lambda body: {"choices": []}) as server:
        proc = dry_run(server.base_url, tmp_path, "--retries", "1")
        requests = len(server.requests)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "no choices" in proc.stderr and requests == 2  # one step's retries, not every step's model retries
