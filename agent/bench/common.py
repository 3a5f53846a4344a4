"""What every group of bench rows shares: the task and screen sizes measured, the baselines'
constants, the scripted model replies, the settings and history a step is built with, and
how samples are summarised (median milliseconds, resident memory)."""

from __future__ import annotations

import os
import statistics
import sys
from typing import Any

from agent.config import Settings
from agent.image import SentImage
from agent.protocol import HistoryEntry

SIZES = ((1280, 800), (1920, 1080), (2560, 1440), (3840, 2160))
TASK = "open the settings and turn on dark mode"
DEFAULT_REPEAT = 7  # runs per median
DEFAULT_REPLAY_STEPS = 500  # steps in the generated recording
DEFAULT_STEPS = 10  # loop steps timed for the whole-step overhead
DEFAULT_ZOOM_TRIALS = 40  # small targets per screen size for the zoom rows
DEFAULT_ENCODING = "jpeg:90"  # our side's image encoding
BASELINE_ENCODING = "png:6"  # Pillow's default PNG level: what a plain image.save(..., "PNG") does
SETTLE_BASELINE_S = 2.0  # the fixed sleep peers use (Anthropic's computer-use demo)
PRICE_IN = 0.14  # USD per million input tokens (SiliconFlow)

# Model replies in the shapes GLM-4.5V sends (text with a box, and a tool call), cycled by the
# scripted recording; the whole-step bench answers every request with the first.
REPLIES: tuple[str | dict[str, Any], ...] = (
    "The Settings button is in the top bar.\n<|begin_of_box|>left_click(start_box='[912,40]', "
    "element_info='Settings button')<|end_of_box|>\nMemory: []",
    "I will type the name.\n<|begin_of_box|>type(content='dark mode')<|end_of_box|>\nMemory: [\"typed\"]",
    "Confirm with the keyboard.\n<|begin_of_box|>key(keys='ctrl+s')<|end_of_box|>\nMemory: []",
    "Scroll to the appearance section.\n<|begin_of_box|>scroll(start_box='[500,600]', direction='down', "
    "step=5)<|end_of_box|>\nMemory: []",
    {
        "content": "Open the item.",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {
                    "name": "left_double_click",
                    "arguments": '{"start_box": "[250,333]", "element_info": "report"}',
                },
            }
        ],
    },
)


def bench_settings(**overrides: Any) -> Settings:
    """The settings a bench step runs with (the vllm preset: no key needed), plus ``overrides``."""
    return Settings.resolve("vllm", **overrides)


def history(shot: SentImage, shots: int) -> list[HistoryEntry]:
    """``shots`` earlier steps, each with ``shot`` as its screenshot."""
    return [
        HistoryEntry(
            i,
            "The settings button is in the top bar; I will click it.",
            "left_click(start_box='[912,40]', element_info='Settings')",
            shot,
        )
        for i in range(1, shots + 1)
    ]


def median_ms(samples: list[float]) -> float:
    """The median of ``samples`` (seconds) in milliseconds, rounded to 0.01."""
    return round(statistics.median(samples) * 1000, 2)


def rss_mb() -> float:
    """Resident memory of this process now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, as the kernel counted it (getrusage)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
