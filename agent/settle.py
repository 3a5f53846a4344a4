"""Adaptive settle: after an action, wait until the screen has stopped changing.

Instead of a blind sleep (peers sleep a fixed 1-2 s after every action), ``AdaptiveSettle``
polls a cheap probe of the screen, a small grayscale thumbnail, every ``poll_s`` seconds,
and returns as soon as the screen has looked the same for ``quiet_s`` seconds (with the
defaults: three equal probes 40 ms apart), or when ``max_s`` has passed (an animation
or a video that never stops). It returns the seconds it spent, which the loop records as
``timings.settle_s``. The loop calls it after every executed action: clicks, typing and
key presses alike.

Two thumbnails are "the same" when at most ``tolerance`` of their pixels differ by more
than ``pixel_threshold`` gray levels. The default, 0.05 % of the screen, is about a 32x32
pixel area at 1920x1080: a blinking text cursor (2x18 pixels) does not keep the screen
"changing", a tooltip, a menu or a new window does; a small spinner may not. Each probe
is compared with the frame that opened the quiet window, so a slow creep of small
changes still adds up. A thumbnail block-averages the screen to about 480 pixels wide:
a probe costs about 4 ms at 1920x1080 (grab 1.5 ms, convert and reduce 2.5 ms).

The window is short on purpose: an app that shows nothing for longer than ``quiet_s``
after an action and then changes (a slow launch) is caught by the next step's capture
instead, and the model can answer WAIT.

The last thumbnail of each call is kept as ``last_probe``: the loop compares it with the
capture the model saw to tell whether the action changed the screen (``agent.progress``).

``AdaptiveSettle.for_screen(screen)`` probes ``screen.thumbnail()`` (``MssScreen`` has a cheap
one); any other screen is probed through ``capture()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageChops

from agent.capture import thumbnail


@dataclass(frozen=True)
class SettleConfig:
    """How long to wait for the screen to settle. Times in seconds."""

    quiet_s: float = 0.08  # the screen must look unchanged this long
    max_s: float = 2.0  # never wait longer: no slower than the fixed 2 s sleep it replaces
    poll_s: float = 0.04  # between two probes
    tolerance: float = 0.0005  # fraction of thumbnail pixels allowed to differ (cursor blink)
    pixel_threshold: int = 16  # gray levels (0-255) a thumbnail pixel must move to count

    def __post_init__(self) -> None:
        if not (self.quiet_s >= 0 and self.max_s >= 0 and self.poll_s > 0):
            raise ValueError("settle times must not be negative, and the poll interval must be positive")


def changed_fraction(before: Image.Image, after: Image.Image, pixel_threshold: int = 16) -> float:
    """The fraction of pixels that differ by more than ``pixel_threshold`` (1.0 if sizes differ)."""
    if before.size != after.size:
        return 1.0
    histogram = ImageChops.difference(before, after).histogram()
    return sum(histogram[pixel_threshold + 1 :]) / (before.width * before.height)


class AdaptiveSettle:
    """A callable that waits for the screen to settle and returns the seconds it spent.

    ``probe`` returns the current thumbnail of the screen. ``clock`` and ``sleep`` can be
    replaced in tests.
    """

    def __init__(
        self,
        probe: Callable[[], Image.Image],
        config: SettleConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.probe = probe
        self.config = config or SettleConfig()
        self._clock = clock
        self._sleep = sleep
        self.probes = 0  # probes taken by the last call (for the bench and tests)
        self.last_probe: Image.Image | None = None  # the settled screen's thumbnail (the loop's progress check)

    @classmethod
    def for_screen(cls, screen: Any, config: SettleConfig | None = None) -> AdaptiveSettle:
        """An adaptive settle probing ``screen.thumbnail()`` when the screen has one (MssScreen
        grabs its region without building a Screenshot), else a thumbnail of ``capture()``."""
        probe = getattr(screen, "thumbnail", None) or (lambda: thumbnail(screen.capture().image))
        return cls(probe, config)

    def __call__(self) -> float:
        cfg = self.config
        started = self._clock()
        deadline = started + cfg.max_s
        reference = self.last_probe = self.probe()  # the screen as it has looked since quiet_since
        quiet_since = self._clock()
        self.probes = 1
        while True:
            now = self._clock()
            if now - quiet_since >= cfg.quiet_s or now >= deadline:
                return now - started
            self._sleep(min(cfg.poll_s, deadline - now))
            current = self.last_probe = self.probe()
            self.probes += 1
            if changed_fraction(reference, current, cfg.pixel_threshold) > cfg.tolerance:
                reference, quiet_since = current, self._clock()
