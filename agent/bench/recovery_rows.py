"""The recovery rows: what zoom-in re-grounding gains and costs, and what the progress check costs.

* **zoom** (generated 2560x1440 and 3840x2160 desktops, each with one 12-20 px target):
  one pointing step of ``run_episode`` against a ``FakeModelServer`` whose brain is the
  limited-precision fake (``agent.bench.imprecise.ImpreciseModel``: answers ``ZOOM_K``
  thousandths off in whatever image it receives), with ``--zoom auto`` against ``--zoom
  off``: the share of clicks that land on the target, the input tokens of the step (the
  fake counts them as a server would) and its time (capture to answer, the zoom request
  included; the fake answers at once, so this is our side: crop, enlarge, encode, HTTP).
* **progress check** per step: comparing the settle's last probe after the previous action
  with its last probe after this one (the thumbnails the settle made anyway), against
  comparing two full-resolution captures.
"""

from __future__ import annotations

import statistics
import time

from PIL import Image

from actions.executor import DryRunExecutor
from agent.bench.common import bench_settings, median_ms
from agent.bench.imprecise import ImpreciseModel, small_target_screen
from agent.bench.scene import MemoryScreen
from agent.bench.table import Row
from agent.capture import Screen, thumbnail
from agent.fakeserver import FakeModelServer
from agent.loop import Limits, Recovery, run_episode
from agent.planner import GLMPlanner
from agent.progress import PIXEL_THRESHOLD, changed_since
from agent.settle import changed_fraction
from agent.trajectory import Step

ZOOM_SIZES = ((2560, 1440), (3840, 2160))
ZOOM_K = 5  # the fake's error in thousandths of the image it sees (GLM-4.5V's is about 10)
HIT_TARGET, MISS_BASELINE = 95.0, 50.0  # percent: with zoom at least, without it below
PROGRESS_TARGET_MS = 5.0
TASK = "click the small green square"


def _trial(image: Image.Image, server: FakeModelServer, zoom: str) -> Step:
    """One pointing step on ``image``; the recorded Step."""
    settings = bench_settings(base_url=server.base_url)
    planner = GLMPlanner(settings)
    try:
        result = run_episode(
            TASK,
            screen=MemoryScreen(image),
            planner=planner,
            executor=DryRunExecutor(),
            settings=settings,
            limits=Limits(max_steps=1),
            recovery=Recovery(zoom=zoom),  # type: ignore[arg-type]
        )
    finally:
        planner.close()
    return result.steps[0]


def bench_zoom(size: tuple[int, int], trials: int, k: float = ZOOM_K) -> list[Row]:
    """The zoom rows at ``size``: hit rate, tokens and time per pointing step, with and without zoom."""
    hits: dict[str, list[bool]] = {"auto": [], "off": []}
    tokens: dict[str, list[int]] = {"auto": [], "off": []}
    seconds: dict[str, list[float]] = {"auto": [], "off": []}
    zoom_parts: dict[str, list[float]] = {"crop_s": [], "model_s": []}
    zoomed = 0
    model = ImpreciseModel(k)
    with FakeModelServer(model) as server:
        for seed in range(trials):
            image, (left, top, right, bottom) = small_target_screen(size, seed)
            for zoom in ("off", "auto"):  # interleaved: both see the same load
                step = _trial(image, server, zoom)
                x, y = step.targets[0].point_image
                hits[zoom].append(left <= x < right and top <= y < bottom)
                tokens[zoom].append(step.prompt_tokens)
                seconds[zoom].append(step.timings.capture_s + step.timings.model_s + step.timings.zoom_s)
                if zoom == "auto" and step.zoom is not None:
                    zoomed += 1
                    zoom_parts["crop_s"].append(step.zoom.crop_s)
                    zoom_parts["model_s"].append(step.zoom.model_s)
    rate = {mode: round(100 * sum(h) / len(h), 1) for mode, h in hits.items()}
    case = f"{size[0]}x{size[1]}, off by {k:g}‰"
    name = f"{size[0]}x{size[1]}"
    detail = {"trials": trials, "k_thousandths": k, "zoomed_steps": zoomed, "target_px": "12-20"}
    extra_tokens = statistics.median(a - b for a, b in zip(tokens["auto"], tokens["off"]))
    return [
        Row(
            f"zoom_hit_rate/{name}",
            "click hits a 12-20 px target (%)",
            case,
            "%",
            rate["auto"],
            rate["off"],
            better="higher",
            target=f">= {HIT_TARGET:g} % (< {MISS_BASELINE:g} without)",
            met=rate["auto"] >= HIT_TARGET and rate["off"] < MISS_BASELINE,
            note="baseline: --zoom off",
            detail=detail,
        ),
        Row(
            f"zoom_tokens/{name}",
            "input tokens per pointing step",
            case,
            "tokens",
            statistics.median(tokens["auto"]),
            statistics.median(tokens["off"]),
            note=f"+{extra_tokens:,.0f} for the zoom request",
            detail={**detail, "extra_tokens": extra_tokens},
        ),
        Row(
            f"zoom_step_ms/{name}",
            "pointing step, instant fake (ms)",
            case,
            "ms",
            median_ms(seconds["auto"]),
            median_ms(seconds["off"]),
            note="a real model adds its own latency for the extra request",
            detail={**detail, "zoom_parts_ms": {k: median_ms(v) for k, v in zoom_parts.items() if v}},
        ),
    ]


def bench_progress(screen: Screen, size: tuple[int, int], repeat: int) -> Row:
    """The progress check at ``size``, as the loop does it: the settle's last probe after the
    previous action against its last probe after this one (both made by the settle anyway),
    against comparing two full-resolution captures. A first step has no previous probe and
    thumbnails its capture in the background instead (timed apart)."""
    ours, first, base = [], [], []
    for _ in range(repeat):
        before_image = screen.capture().image
        after_image = screen.capture().image
        before, after = thumbnail(before_image), thumbnail(after_image)  # the settle's probes
        t0 = time.perf_counter()
        changed_since(before, after)
        t1 = time.perf_counter()
        thumbnail(before_image)
        t2 = time.perf_counter()
        changed_fraction(before_image.convert("L"), after_image.convert("L"), PIXEL_THRESHOLD)
        t3 = time.perf_counter()
        ours.append(t1 - t0)
        first.append(t2 - t1)
        base.append(t3 - t2)
    row = Row(
        f"progress_check_ms/{size[0]}x{size[1]}",
        "progress check per step (ms)",
        f"{size[0]}x{size[1]}",
        "ms",
        median_ms(ours),
        median_ms(base),
        target=f"< {PROGRESS_TARGET_MS:g} ms",
        note=f"first step: + {median_ms(first):.1f} ms thumbnail, in the background",
        detail={"first_step_thumbnail_ms": median_ms(first)},
    )
    row.met = row.ours is not None and row.ours < PROGRESS_TARGET_MS
    return row
