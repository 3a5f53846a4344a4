"""The streaming rows: with a fake model that streams like a real GLM-4.5V endpoint (first token
after 300 ms, then 40 tokens a second; ~25 tokens of explanation, the boxed action, ~60 tokens of
Memory), the time from each request to its first input event and the whole step, streaming
(the action runs as soon as it is complete) against waiting for the whole reply. Both sides
must perform the same actions."""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from typing import Any

from actions.executor import DryRunExecutor
from agent.bench.common import TASK, bench_settings
from agent.bench.table import Row
from agent.capture import Screen
from agent.fakeserver import FakeModelServer, StreamProfile
from agent.loop import Limits, run_episode
from agent.planner import GLMPlanner
from agent.trajectory import JsonlRecorder

PROFILE = StreamProfile(first_token_s=0.3, tokens_per_s=40)
EXPLANATION = (
    "The settings window is open and the appearance section is visible on the left side; "
    "the dark mode switch is off, so I will click on it to turn dark mode on now."
)  # ~25 tokens
ACTION = "<|begin_of_box|>left_click(start_box='[912,40]', element_info='dark mode switch')<|end_of_box|>"
MEMORY = "[" + ", ".join(f'"step {i} done"' for i in range(1, 21)) + "]"  # ~60 tokens
REPLY = f"{EXPLANATION}\n{ACTION}\nMemory: {MEMORY}"


class _TimedExecutor(DryRunExecutor):
    """A dry-run executor that notes when each input event would go out."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def execute(self, action: Any, points: Any) -> None:
        self.times.append(time.perf_counter())
        super().execute(action, points)


def streamed_steps(screen: Screen, encoding: str, steps: int, stream: bool) -> tuple[list[float], list[float], list]:
    """``steps`` loop steps against the streaming fake model; per step the seconds from the request
    arriving to the first input event and the step's wall time, and the actions performed."""
    arrivals: list[float] = []
    lock = threading.Lock()

    def brain(body: dict[str, Any]) -> str:
        with lock:
            arrivals.append(time.perf_counter())
        return REPLY

    executor = _TimedExecutor()
    marks: list[float] = []
    with FakeModelServer(brain, profile=PROFILE) as server, tempfile.TemporaryDirectory(prefix="deskpilot-") as tmp:
        settings = bench_settings(base_url=server.base_url, image_encoding=encoding, stream=stream)
        planner = GLMPlanner(settings)
        started = time.perf_counter()
        try:
            run_episode(
                TASK,
                screen=screen,
                planner=planner,
                executor=executor,
                settings=settings,
                limits=Limits(max_steps=steps),
                recorder=JsonlRecorder(tmp, TASK, settings.public()),
                on_step=lambda step: marks.append(time.perf_counter()),
            )
        finally:
            planner.close()
    first_input = [t - a for a, t in zip(arrivals, executor.times)]
    walls = [b - a for a, b in zip([started, *marks], marks)]
    return first_input, walls, [(p.kind, p.points_screen) for p in executor.performed]


def bench_streaming(screen: Screen, size: tuple[int, int], encoding: str, steps: int) -> list[Row]:
    """The two streaming rows at ``size``: ``steps`` steps each side (at most 4: each takes ~2.5 s)."""
    steps = max(1, min(steps, 4))
    first_ours, wall_ours, actions_ours = streamed_steps(screen, encoding, steps, stream=True)
    first_base, wall_base, actions_base = streamed_steps(screen, encoding, steps, stream=False)
    same = actions_ours == actions_base and len(actions_ours) == steps
    ours_ms = round(statistics.median(first_ours) * 1000, 1)
    base_ms = round(statistics.median(first_base) * 1000, 1)
    case = f"{size[0]}x{size[1]}, fake model 300 ms + 40 tok/s"
    first = Row(
        "stream_first_input_ms",
        "request to first input event (ms)",
        case,
        "ms",
        ours_ms,
        base_ms,
        target=">= 25% earlier",
        met=ours_ms <= 0.75 * base_ms and same,
        note="" if same else "the two sides performed different actions",
        detail={"steps": steps, "same_actions": same, "baseline": "the same loop waiting for the whole reply"},
    )
    whole = Row(
        "stream_step_ms",
        "whole step, streamed model (ms)",
        case,
        "ms",
        round(statistics.median(wall_ours) * 1000, 1),
        round(statistics.median(wall_base) * 1000, 1),
        detail={"steps": steps},
    )
    return [first, whole]
