"""Number types for command-line flags, shared by every subcommand.

A bad value makes argparse exit 2 with a message saying what was expected.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _number(cast: type, low: float, strict: bool) -> Callable[[str], float]:
    word = "a whole number" if cast is int else "a number"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {word}: {text!r}") from None
        if value < low or (strict and value == low):
            bound = f"more than {low:g}" if strict else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


positive_int = _number(int, 1, False)
nonneg_int = _number(int, 0, False)
positive_float = _number(float, 0, True)
nonneg_float = _number(float, 0, False)
