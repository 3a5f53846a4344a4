"""Number types for command-line flags, shared by every command.

A bad value makes argparse exit 2 with a message saying what was expected. Floats must be
finite: ``nan`` compares false with everything and ``inf`` is no budget at all, so both are
refused rather than silently disabling a limit.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from agent.geometry import MAX_IMAGE_TOKENS

MIN_IMAGE_TOKENS = 64  # below this a screenshot is a blur of a few patches: nothing to ground on


def _number(cast: type, low: float, strict: bool, high: float | None = None) -> Callable[[str], float]:
    word = "a whole number" if cast is int else "a number"

    def parse(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {word}: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or (strict and value == low):
            bound = f"more than {low:g}" if strict else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, got {text}")
        return value

    return parse


positive_int = _number(int, 1, False)
nonneg_int = _number(int, 0, False)
positive_float = _number(float, 0, True)
nonneg_float = _number(float, 0, False)
image_token_budget = _number(int, MIN_IMAGE_TOKENS, False, MAX_IMAGE_TOKENS)
