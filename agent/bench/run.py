"""``run_bench``: every bench measurement in table order, on generated screens or (``live``)
on a private Xvfb desktop per size, returned as a JSON-ready result."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from PIL import Image, ImageGrab

from agent.bench.common import (
    BASELINE_ENCODING,
    DEFAULT_ENCODING,
    DEFAULT_REPEAT,
    DEFAULT_REPLAY_STEPS,
    DEFAULT_STEPS,
    DEFAULT_ZOOM_TRIALS,
    SIZES,
)
from agent.bench.scene import MemoryScreen, check_live, generate_screen, live_desktop
from agent.bench.table import Row
from agent.capture import MssScreen, Screen
from agent.config import parse_encoding


@contextlib.contextmanager
def screen_at(size: tuple[int, int], live: bool) -> Iterator[tuple[Screen, Callable[[], Image.Image]]]:
    """The screen measured at ``size`` and the baseline's grab of it: a generated desktop in
    memory (the baseline grabs the same capture: only the processing differs), or the live
    desktop on a private Xvfb, captured with mss and grabbed by the baseline with PIL's ImageGrab."""
    if not live:
        memory = MemoryScreen(generate_screen(size))
        yield memory, lambda: memory.capture().image
        return
    with live_desktop(size) as display:
        screen = MssScreen(1)
        try:
            yield screen, functools.partial(ImageGrab.grab, xdisplay=display)
        finally:
            screen.close()


def run_bench(
    *,
    repeat: int = DEFAULT_REPEAT,
    replay_steps: int = DEFAULT_REPLAY_STEPS,
    steps: int = DEFAULT_STEPS,
    encoding: str = DEFAULT_ENCODING,
    live: bool = False,
    profile: bool = False,
    zoom_trials: int = DEFAULT_ZOOM_TRIALS,
    replay_size: tuple[int, int] = (1280, 800),
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every measurement; returns the JSON-ready result: ``meta`` (how it was run), ``rows``
    (each ``Row`` as a dict plus its ``ratio``, in table order) and ``profiles`` (cProfile
    text by name, with ``profile``). ``log`` gets a line as each part starts.

    Raises UsageError for an unknown ``encoding``, or with ``live`` when Xvfb or tkinter is missing.
    """
    # The rows load the loop, the planner and its HTTP client: only when the bench runs.
    from agent.bench.loop_rows import LIVE_STEP_TARGET_MS, bench_live_step, bench_whole_step
    from agent.bench.perception import (
        bench_perception,
        bench_perception_previous,
        bench_settle_poll,
        bench_tokens,
        cprofile_perception,
    )
    from agent.bench.recovery_rows import ZOOM_SIZES, bench_progress, bench_zoom
    from agent.bench.replay_rows import bench_replay
    from agent.bench.settle_rows import bench_settle, settle_row
    from agent.bench.stream_rows import bench_streaming

    say = log or (lambda _: None)
    parse_encoding(encoding)
    if live:
        check_live()
    say("replay check and memory ...")
    replay = bench_replay(replay_steps, repeat, replay_size, encoding)  # first: memory before the big screens
    settle = settle_row()
    settle.note = "live only (--live)"
    perception: list[Row] = []
    against_previous: list[Row] = []
    polls: list[Row] = []
    tokens: list[Row] = []
    live_steps: list[Row] = []
    whole: Row | None = None
    progress: list[Row] = []
    streaming: list[Row] = []
    profiles: dict[str, str] = {}
    for size in SIZES:
        say(f"perception and tokens at {size[0]}x{size[1]} ...")
        with screen_at(size, live) as (screen, grab):
            perception.append(bench_perception(size, screen, grab, encoding, repeat))
            against_previous += bench_perception_previous(size, screen, encoding, repeat)
            polls.append(bench_settle_poll(size, screen, repeat, live))
            tokens += bench_tokens(size, screen, encoding)
            if size[0] >= 1920:
                progress.append(bench_progress(screen, size, repeat))
            if live and (size[0] in LIVE_STEP_TARGET_MS or size == SIZES[-1]):
                say("live step ...")
                live_steps += bench_live_step(size, encoding, steps)
            if size == (1920, 1080):
                if live:
                    say("settle ...")
                    settle = bench_settle(screen, size, repeat)
                say("whole step ...")
                whole = bench_whole_step(screen, size, encoding, steps)
                say("streaming ...")
                streaming = bench_streaming(screen, size, encoding, steps)
                if profile:
                    profiles["perception_1920x1080"] = cprofile_perception(screen, encoding, repeat)
    assert whole is not None  # SIZES holds 1920x1080
    zoom: list[Row] = []
    for size in ZOOM_SIZES:  # generated screens in both modes: the targets must be known
        say(f"zoom at {size[0]}x{size[1]} ({zoom_trials} targets) ...")
        zoom += bench_zoom(size, zoom_trials)
    previous = sorted(against_previous, key=lambda row: row.id.startswith("perception_settled"))
    rows = (
        perception + previous + polls + [settle] + tokens + replay + [whole] + live_steps + progress + zoom + streaming
    )
    return {
        "meta": {
            "mode": "live (Xvfb)" if live else "offline (generated screens)",
            "repeat": repeat,
            "encoding": encoding,
            "baseline_encoding": BASELINE_ENCODING,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        },
        "rows": [dict(asdict(r), ratio=r.ratio) for r in rows],
        "profiles": profiles,
    }
