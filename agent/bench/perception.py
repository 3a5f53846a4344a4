"""Rows for what one step sends. Perception: the time from a capture to the request body
(capture, resize, encode, base64, the JSON body with 4 history shots), against a peer's
full-size capture saved as a full-size PNG, with a per-stage profile of ours (and a
cProfile on request). Perception beside the previous path (``agent.bench.previous``): capture
to model-ready image on a cold capture, and what is left of it after a settle that prepared
the frame ahead. Tokens: the input tokens of a step with 0 and 4 history shots, against
full-size screenshots kept in full."""

from __future__ import annotations

import base64
import cProfile
import io
import json
import pstats
import time
from collections.abc import Callable

from PIL import Image

from actions.schema import tool_schemas
from agent.bench import previous
from agent.bench.common import PRICE_IN, TASK, bench_settings, history, median_ms
from agent.bench.table import Row
from agent.capture import Screen, thumbnail
from agent.config import Settings
from agent.geometry import MAX_IMAGE_TOKENS, fit_to_tokens, image_tokens
from agent.image import SentImage, encode_bytes, prepare_for_model, resize_for_model, sent_size
from agent.protocol import HistoryEntry, StepRequest, build_body
from agent.settle import AdaptiveSettle, changed_fraction


def perception_step(screen: Screen, settings: Settings, earlier: list[HistoryEntry]) -> int:
    """One step's perception as the loop does it on a fresh capture, up to the request going
    out; returns the bytes of the request body. (The loop makes the half-size history shot in
    a background thread during the model's reply; ``stage_profile`` times it on its own.)"""
    sent = screen.capture().prepare(settings.max_image_tokens, settings.image_encoding).result()
    body, _ = build_body(StepRequest(TASK, len(earlier) + 1, sent, earlier, []), settings, use_tools=True)
    return len(json.dumps(body))


def baseline_step(grab: Callable[[], Image.Image]) -> int:
    """A peer's perception: a full-size capture saved as a full-size PNG, one image per body."""
    image = grab()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # Pillow's default compression, level 6
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    body = {
        "model": "glm-4.5v",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": TASK}, {"type": "image_url", "image_url": {"url": url}}],
            }
        ],
    }
    return len(json.dumps(body))


def stage_profile(screen: Screen, settings: Settings, earlier: list[HistoryEntry], repeat: int) -> dict[str, float]:
    """Median ms of each perception stage, timed one by one (``capture`` is the screen's
    ``capture()``: for MssScreen the X server's copy and mss's; ``convert`` makes it RGB)."""
    stages: dict[str, list[float]] = {
        k: [] for k in ("capture", "convert", "resize", "encode", "base64", "half_shot", "body", "tool_schemas")
    }
    for _ in range(repeat):
        t = time.perf_counter()
        shot = screen.capture()
        stages["capture"].append(time.perf_counter() - t)
        t = time.perf_counter()
        image = shot.image
        stages["convert"].append(time.perf_counter() - t)
        size = sent_size(image.size, settings.max_image_tokens)
        t = time.perf_counter()
        resized = resize_for_model(image, size)
        stages["resize"].append(time.perf_counter() - t)
        t = time.perf_counter()
        raw, _ = encode_bytes(resized, settings.image_encoding)
        stages["encode"].append(time.perf_counter() - t)
        t = time.perf_counter()
        base64.b64encode(raw).decode("ascii")
        stages["base64"].append(time.perf_counter() - t)
        t = time.perf_counter()
        prepare_for_model(image, settings.max_image_tokens, settings.image_encoding, half=True)
        stages["half_shot"].append(time.perf_counter() - t)
        sent = prepare_for_model(image, settings.max_image_tokens, settings.image_encoding)
        t = time.perf_counter()
        body, _ = build_body(StepRequest(TASK, len(earlier) + 1, sent, earlier, []), settings, use_tools=True)
        json.dumps(body)
        stages["body"].append(time.perf_counter() - t)
        t = time.perf_counter()
        tool_schemas()  # the copy build_body puts in the body (their token estimate is cached)
        stages["tool_schemas"].append(time.perf_counter() - t)
    return {k: median_ms(v) for k, v in stages.items()}


def bench_perception(
    size: tuple[int, int], screen: Screen, grab: Callable[[], Image.Image], encoding: str, repeat: int
) -> Row:
    """The perception row at ``size``: ours on ``screen`` against the baseline on ``grab``."""
    settings = bench_settings(image_encoding=encoding)
    half = screen.capture().prepare(settings.max_image_tokens, encoding, half=True).result()
    earlier = history(half, settings.history_images)
    ours, base = [], []
    perception_step(screen, settings, earlier)  # warm up caches and allocators
    for _ in range(repeat):  # interleaved, so both see the same machine load
        t = time.perf_counter()
        body_bytes = perception_step(screen, settings, earlier)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        base_bytes = baseline_step(grab)
        base.append(time.perf_counter() - t)
    sent = screen.capture().prepare(settings.max_image_tokens, encoding).result()
    row = Row(
        f"perception_ms/{size[0]}x{size[1]}",
        "perception per step (ms)",
        f"{size[0]}x{size[1]}",
        "ms",
        median_ms(ours),
        median_ms(base),
    )
    row.detail = {
        "stages_ms": stage_profile(screen, settings, earlier, repeat),
        "encoding": encoding,
        "sent_size": list(sent.size),
        "sent_bytes": sent.n_bytes,
        "body_bytes": body_bytes,
        "baseline_body_bytes": base_bytes,
    }
    if size == (1920, 1080):
        row.target = "<= 15 ms, >= 5x"
        row.met = median_ms(ours) <= 15 and (row.ratio or 0) >= 5
    return row


# Perception targets (ms, median) by screen width, from issue 14: capture to the model-ready
# image, everything on a step's critical path.
PERCEPTION_TARGETS_MS = {2560: 25.0, 3840: 40.0}


def perception_target(row: Row, width: int) -> None:
    """Set the perception target of a row measured at ``width`` (if it has one) and whether it is met."""
    limit = PERCEPTION_TARGETS_MS.get(width)
    if limit is not None and row.ours is not None:
        row.target, row.met = f"<= {limit:g} ms", row.ours <= limit


def bench_perception_previous(size: tuple[int, int], screen: Screen, encoding: str, repeat: int) -> list[Row]:
    """Capture to model-ready image (the data URL), beside the previous path, in two cases:
    a cold capture (the first step, or after a settle that ran out of time: capture, convert,
    resize, encode on the critical path), and the usual step after an action, where the frame
    is the one the settle proved quiet and its image was prepared while the settle waited:
    what is left is comparing the last probe with that frame and collecting the work. The
    previous path captured again after the settle and prepared that capture."""
    settings = bench_settings(image_encoding=encoding)
    budget = settings.max_image_tokens
    cold, settled, previous_path, ahead_used, cold_cpu, previous_cpu = [], [], [], [], [], []
    settle = AdaptiveSettle.for_screen(screen, ahead=(budget, encoding))
    screen.capture().prepare(budget, encoding).result()  # warm up
    for _ in range(repeat):  # interleaved, so both see the same machine load
        t, cpu = time.perf_counter(), time.process_time()
        screen.capture().prepare(budget, encoding).result()
        cold.append(time.perf_counter() - t)
        cold_cpu.append(time.process_time() - cpu)
        settle()
        t = time.perf_counter()
        frame = settle.take_frame()
        assert frame is not None  # a static screen always settles
        frame.prepare(budget, encoding).result()
        settled.append(time.perf_counter() - t)
        ahead_used.append(bool(settle.ahead_used))
        t, cpu = time.perf_counter(), time.process_time()
        previous.prepare(previous.capture(screen.capture().pixels), budget, encoding)  # type: ignore[arg-type]
        previous_path.append(time.perf_counter() - t)
        previous_cpu.append(time.process_time() - cpu)
    case = f"{size[0]}x{size[1]}"
    rows = [
        Row(f"perception_cold_ms/{case}", "perception, cold capture (ms)", case, "ms", median_ms(cold), None),
        Row(f"perception_settled_ms/{case}", "perception after a settle (ms)", case, "ms", median_ms(settled), None),
    ]
    for row in rows:
        row.baseline = median_ms(previous_path)
    # The target is for the critical path of a step: after an action the settle's frame, prepared
    # while it waited. A cold capture is the first step of a run (and a settle that ran out of
    # time): it is shown, with all its work, but it is not what a step pays.
    perception_target(rows[1], size[0])
    rows[0].note = "first step only"
    rows[0].detail = {
        "sent_size": list(sent_size(size, budget)),
        "previous_sent_size": list(fit_to_tokens(size, budget)),
        "cpu_ms": median_ms(cold_cpu),  # every thread of the process: the bands add up here
        "previous_cpu_ms": median_ms(previous_cpu),
    }
    rows[1].detail = {"prepared_ahead": f"{sum(ahead_used)}/{len(ahead_used)}"}
    return rows


def bench_settle_poll(size: tuple[int, int], screen: Screen, repeat: int, live: bool) -> Row:
    """One settle poll: the probe (a thumbnail of a grab) and the comparison with the quiet
    window's first one, beside the previous probe (the whole frame converted and block-averaged).
    Offline the grab is left out of both (it is the same copy); live both include it."""
    ours, before, grabs = [], [], []
    reference, old_reference = thumbnail(screen.capture().pixels), previous.thumbnail(screen.capture().pixels)  # type: ignore[arg-type]
    for _ in range(repeat + 1):
        t = time.perf_counter()
        pixels = screen.capture().pixels
        grabbed = time.perf_counter()
        grabs.append(grabbed - t)
        if not live:
            t = grabbed
        changed_fraction(reference, thumbnail(pixels))  # type: ignore[arg-type]
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        pixels = screen.capture().pixels
        if not live:
            t = time.perf_counter()
        changed_fraction(old_reference, previous.thumbnail(pixels))  # type: ignore[arg-type]
        before.append(time.perf_counter() - t)
    case = f"{size[0]}x{size[1]}" + (", with the grab" if live else "")
    row = Row(
        f"settle_poll_ms/{size[0]}x{size[1]}",
        "settle poll (ms)",
        case,
        "ms",
        median_ms(ours[1:]),
        median_ms(before[1:]),
    )
    row.detail = {"grab_ms": median_ms(grabs[1:]), "thumbnail_size": list(reference.size)}
    if not live:
        row.target, row.met = "<= 3 ms", row.ours is not None and row.ours <= 3.0
    return row


def cprofile_perception(screen: Screen, encoding: str, repeat: int) -> str:
    """pstats' text for ``repeat`` perception steps on ``screen``, the 12 costliest functions first."""
    settings = bench_settings(image_encoding=encoding)
    earlier = history(screen.capture().prepare(settings.max_image_tokens, encoding, half=True).result(), 4)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        perception_step(screen, settings, earlier)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    return out.getvalue()


def bench_tokens(size: tuple[int, int], screen: Screen, encoding: str) -> list[Row]:
    """The token rows at ``size``: ``build_body``'s estimate with 0 and 4 history shots."""
    settings = bench_settings(image_encoding=encoding)
    shot = screen.capture()
    sent = shot.prepare(settings.max_image_tokens, encoding).result()
    half = shot.prepare(settings.max_image_tokens, encoding, half=True).result()
    full = SentImage("data:image/png;base64,", size, "png", 0, image_tokens(size))  # only tokens count here
    rows = []
    for shots in (0, 4):
        _, ours = build_body(StepRequest(TASK, shots + 1, sent, history(half, shots), []), settings, True)
        _, base = build_body(
            StepRequest(TASK, shots + 1, full, history(full, shots), []),
            bench_settings(max_image_tokens=MAX_IMAGE_TOKENS),
            True,
        )
        row = Row(
            f"tokens/{size[0]}x{size[1]}/h{shots}",
            "input tokens per step",
            f"{size[0]}x{size[1]}, {shots} history",
            "tokens",
            ours.estimated_tokens,
            base.estimated_tokens,
        )
        images = sent.tokens + shots * half.tokens
        row.detail = {
            "image_tokens": images,
            "text_tokens": ours.estimated_tokens - images,
            "sent_size": list(sent.size),
            "half_size": list(half.size),
            "usd_per_step": round(ours.estimated_tokens * PRICE_IN / 1e6, 6),
            "baseline_usd_per_step": round(base.estimated_tokens * PRICE_IN / 1e6, 6),
        }
        if size == (1920, 1080) and shots == 4:
            row.target, row.met = "<= 5,600", ours.estimated_tokens <= 5600
        rows.append(row)
    return rows
