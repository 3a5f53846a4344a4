"""The settle row (live only): how long ``AdaptiveSettle`` waits after a click into a static
window before the next capture, against the fixed sleep peers use."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict

from agent.bench.common import SETTLE_BASELINE_S, median_ms
from agent.bench.table import Row
from agent.capture import Screen
from agent.settle import AdaptiveSettle

SETTLE_TARGET_MS = 150


def settle_row() -> Row:
    """The settle row with no figures yet (what an offline run shows)."""
    return Row(
        "settle_ms/static",
        "settle after a click (ms)",
        "static window",
        "ms",
        None,
        None,
        target=f"<= {SETTLE_TARGET_MS} ms",
    )


def clicker() -> Callable[[int, int], None] | None:
    """A left click at screen pixels, with xdotool when installed, else pyautogui; None without either."""
    if shutil.which("xdotool"):

        def xdotool_click(x: int, y: int) -> None:
            subprocess.run(
                ["xdotool", "mousemove", "--sync", str(x), str(y), "click", "1"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        return xdotool_click
    try:
        import pyautogui
    except Exception:  # pyautogui fails at import time without a usable display
        return None

    def pyautogui_click(x: int, y: int) -> None:
        pyautogui.click(x, y, _pause=False)

    return pyautogui_click


def bench_settle(screen: Screen, size: tuple[int, int], repeat: int) -> Row:
    """The settle row on the live bench desktop: ``repeat`` clicks into the editor's text."""
    row = settle_row()
    click = clicker()
    if click is None:
        row.note = "no xdotool or pyautogui to click with"
        return row
    settle = AdaptiveSettle.for_screen(screen)
    ours, probes = [], []
    for i in range(repeat):
        click(int(size[0] * (0.15 + 0.02 * (i % 5))), int(size[1] * 0.3))
        ours.append(settle())
        probes.append(settle.probes)
    base = []
    for _ in range(min(3, repeat)):
        t = time.perf_counter()
        time.sleep(SETTLE_BASELINE_S)
        base.append(time.perf_counter() - t)
    row.ours, row.baseline = median_ms(ours), median_ms(base)
    row.met = row.ours <= SETTLE_TARGET_MS
    row.detail = {"samples_ms": [round(s * 1000, 1) for s in ours], "probes": probes, "config": asdict(settle.config)}
    return row
