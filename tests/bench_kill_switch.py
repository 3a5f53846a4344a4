"""Benchmark: latency from the kill hotkey to the last input event the app receives.

    python tests/bench_kill_switch.py [--runs 5]

Under a private Xvfb, ``deskpilot run`` types a long text into the Tk target app (the
model is the fake server). Once typing is under way, the third Esc of the default
hotkey (esc*3) is pressed with xdotool; the latency is the time from the app receiving
that third Esc to its last entry change (the target is under 200 ms). Prints every run and the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.fakeserver import FakeModelServer  # noqa: E402
from tests.conftest import cli_env  # noqa: E402
from tests.fake_brains import FormBrain  # noqa: E402
from tests.live_support import TargetApp, xvfb_display  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog " * 20


def one_run(workdir: Path) -> tuple[float, int, int]:
    """(latency in ms, characters typed, exit code) of one interrupted run."""
    with TargetApp(workdir / "events.jsonl") as app, FakeModelServer(FormBrain(TEXT)) as server:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "run",
                "type a long text",
                "--provider",
                "vllm",
                "--base-url",
                server.base_url,
                "--recordings",
                str(workdir / "rec"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=cli_env(DISPLAY=os.environ["DISPLAY"]),
        )
        app.wait_for(lambda events: any(e["event"] == "entry" and len(e["text"]) >= 30 for e in events), 60)
        subprocess.run(["xdotool", "key", "--delay", "50", "Escape", "Escape", "Escape"], check=True)
        code = proc.wait(timeout=30)
        time.sleep(0.5)  # let anything still in flight arrive
        events = app.events()
    # the app saw the third Esc when the X server delivered it, as the kill switch did
    pressed = [e["t"] for e in events if e["event"] == "key" and e["keysym"] == "Escape"][2]
    entries = [e for e in events if e["event"] == "entry"]
    return (entries[-1]["t"] - pressed) * 1000, len(entries[-1]["text"]), code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    latencies = []
    with xvfb_display(1280, 800):
        for i in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                latency, typed, code = one_run(Path(tmp))
            latencies.append(latency)
            print(
                f"run {i + 1}: exit {code}, {typed} of {len(TEXT)} characters typed, "
                f"last input {latency:+.0f} ms after the hotkey (negative: nothing arrived after it)"
            )
    print(
        f"kill hotkey -> last input event: median {statistics.median(latencies):.0f} ms, "
        f"max {max(latencies):.0f} ms (target < 200 ms)"
    )


if __name__ == "__main__":
    main()
