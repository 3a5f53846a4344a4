"""Rows for what one step sends. Perception: the time from a capture to the request body
(capture, resize, encode, base64, the JSON body with 4 history shots), against a peer's
full-size capture saved as a full-size PNG, with a per-stage profile of ours (and a
cProfile on request). Tokens: the input tokens of a step with 0 and 4 history shots,
against full-size screenshots kept in full."""

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
from agent.bench.common import PRICE_IN, TASK, bench_settings, history, median_ms
from agent.bench.table import Row
from agent.capture import Screen
from agent.config import Settings
from agent.geometry import MAX_IMAGE_TOKENS, fit_to_tokens, image_tokens
from agent.image import SentImage, encode_bytes, prepare_for_model, resize_for_model
from agent.protocol import HistoryEntry, StepRequest, build_body


def perception_step(screen: Screen, settings: Settings, earlier: list[HistoryEntry]) -> int:
    """One step's perception as the loop does it, up to the request going out; returns the
    bytes of the request body. (The loop makes the half-size history shot in a background
    thread during the model's reply; ``stage_profile`` times it on its own.)"""
    shot = screen.capture()
    sent = prepare_for_model(shot.image, settings.max_image_tokens, settings.image_encoding)
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
    ``capture()``: for MssScreen the X server copy and the conversion from mss's buffer)."""
    stages: dict[str, list[float]] = {
        k: [] for k in ("capture", "resize", "encode", "base64", "half_shot", "body", "tool_schemas")
    }
    for _ in range(repeat):
        t = time.perf_counter()
        shot = screen.capture()
        stages["capture"].append(time.perf_counter() - t)
        size = fit_to_tokens(shot.image.size, settings.max_image_tokens)
        t = time.perf_counter()
        resized = resize_for_model(shot.image, size)
        stages["resize"].append(time.perf_counter() - t)
        t = time.perf_counter()
        raw, _ = encode_bytes(resized, settings.image_encoding)
        stages["encode"].append(time.perf_counter() - t)
        t = time.perf_counter()
        base64.b64encode(raw).decode("ascii")
        stages["base64"].append(time.perf_counter() - t)
        t = time.perf_counter()
        prepare_for_model(shot.image, settings.max_image_tokens, settings.image_encoding, half=True)
        stages["half_shot"].append(time.perf_counter() - t)
        sent = prepare_for_model(shot.image, settings.max_image_tokens, settings.image_encoding)
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
    half = prepare_for_model(screen.capture().image, settings.max_image_tokens, encoding, half=True)
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
    sent = prepare_for_model(screen.capture().image, settings.max_image_tokens, encoding)
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


def cprofile_perception(screen: Screen, encoding: str, repeat: int) -> str:
    """pstats' text for ``repeat`` perception steps on ``screen``, the 12 costliest functions first."""
    settings = bench_settings(image_encoding=encoding)
    earlier = history(prepare_for_model(screen.capture().image, settings.max_image_tokens, encoding, half=True), 4)
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
    sent = prepare_for_model(shot.image, settings.max_image_tokens, encoding)
    half = prepare_for_model(shot.image, settings.max_image_tokens, encoding, half=True)
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
