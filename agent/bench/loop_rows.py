"""The whole-step row: the loop's own cost per step without the model (``run_episode``
against a FakeModelServer that answers at once, recording every step), against the same
loop sending full-size PNGs; the recorder's share of a step is timed apart."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from actions.executor import DryRunExecutor
from agent.bench.common import BASELINE_ENCODING, REPLIES, TASK, bench_settings, median_ms
from agent.bench.table import Row
from agent.capture import Screen
from agent.config import Settings
from agent.fakeserver import FakeModelServer
from agent.geometry import MAX_IMAGE_TOKENS
from agent.loop import Limits, run_episode
from agent.planner import GLMPlanner
from agent.trajectory import JsonlRecorder, Outcome


def _instant_reply(body: dict[str, Any]) -> str | dict[str, Any]:
    return REPLIES[0]


def loop_steps(screen: Screen, settings: Settings, steps: int) -> tuple[list[float], dict[str, float]]:
    """Run the loop for ``steps`` steps against the fake server; wall seconds per step (the
    first step, which opens the connection, left out) and median timings by part."""
    marks: list[float] = []
    recorded: list[Any] = []

    def on_step(step: Any) -> None:
        marks.append(time.perf_counter())
        recorded.append(step.timings)

    planner = GLMPlanner(settings)
    with tempfile.TemporaryDirectory(prefix="deskpilot-bench-") as tmp:
        recorder = JsonlRecorder(tmp, TASK, settings.public())
        try:
            run_episode(
                TASK,
                screen=screen,
                planner=planner,
                executor=DryRunExecutor(),
                settings=settings,
                limits=Limits(max_steps=steps + 1),
                recorder=recorder,
                on_step=on_step,
            )
        finally:
            planner.close()
    walls = [b - a for a, b in zip(marks, marks[1:])]
    parts = {name: median_ms([getattr(t, name) for t in recorded[1:]]) for name in ("capture_s", "model_s")}
    return walls, parts


def bench_whole_step(screen: Screen, size: tuple[int, int], encoding: str, steps: int) -> Row:
    """The whole-step row at ``size``: ``steps`` timed loop steps each side."""
    with FakeModelServer(_instant_reply) as server:
        ours, ours_parts = loop_steps(screen, bench_settings(base_url=server.base_url, image_encoding=encoding), steps)
        base, base_parts = loop_steps(
            screen,
            bench_settings(
                base_url=server.base_url, image_encoding=BASELINE_ENCODING, max_image_tokens=MAX_IMAGE_TOKENS
            ),
            steps,
        )
    with tempfile.TemporaryDirectory(prefix="deskpilot-bench-") as tmp:  # the recorder's share of a step
        recorder, image, saves = JsonlRecorder(tmp, TASK), screen.capture().image, []
        for number in range(1, steps + 1):
            t = time.perf_counter()
            recorder.save_screenshot(number, image)
            saves.append(time.perf_counter() - t)
        recorder.finish(Outcome(status="done"))
    ours_parts["recorder_png"] = median_ms(saves)
    return Row(
        "whole_step_ms",
        "whole step without model (ms)",
        f"{size[0]}x{size[1]}, instant fake model",
        "ms",
        median_ms(ours),
        median_ms(base),
        detail={
            "ours_parts_ms": ours_parts,
            "baseline_parts_ms": base_parts,
            "steps": steps,
            "note": "capture_s includes the recorder's lossless PNG of the capture; "
            "model_s is the HTTP round trip to the fake server",
        },
    )
