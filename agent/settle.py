"""Adaptive settle: after an action, wait until the screen has stopped changing.

Instead of a blind sleep (peers sleep a fixed 1-2 s after every action), ``AdaptiveSettle``
polls a cheap probe of the screen, a small grayscale thumbnail, and returns as soon as the
screen has looked the same for ``quiet_s`` seconds, or when ``max_s`` has passed (an
animation or a video that never stops). The first probe is taken as the action ends, the
second ``early_s`` later (most apps repaint within a few milliseconds: seeing that change at
once starts the quiet window early), the rest on a ``poll_s`` grid from the start of the
quiet window, so the probes' own cost does not stretch the wait. With the defaults, a screen
that changes once, at once, is proved quiet by probes at 0, 10, 50 and 90 ms. It returns the
seconds it spent, which the loop records as ``timings.settle_s``. The loop calls it after
every executed action: clicks, typing and key presses alike.

Two thumbnails are "the same" when at most ``tolerance`` of their pixels differ by more
than ``pixel_threshold`` gray levels. The default, 0.05 % of the screen, is about a 32x32
pixel area at 1920x1080: a blinking text cursor (2x18 pixels) does not keep the screen
"changing", a tooltip, a menu or a new window does; a small spinner may not. Each probe
is compared with the frame that opened the quiet window, so a slow creep of small
changes still adds up. A thumbnail samples one pixel of each block of the screen, about
480 of them across (``agent.capture.thumbnail``), so a probe costs the grab plus about a
millisecond whatever the screen's size.

The frame that proved the screen quiet is kept (``take_frame()``): the loop sends it as the
next step's screenshot instead of capturing again. It is the last probe's capture, taken
after the action; a settle that ran out of time keeps none. With ``ahead`` (an image budget
and an encoding), the model's image of a frame that looks final is prepared in a background
thread while the settle waits for its last probe: the first frame after a change (an app
usually repaints once), or the first probe once the next one matched it (the first probe is
taken as the action ends, often before the app repainted). A preparation not yet started
for a frame the screen has moved on from is dropped. When the last probe's pixels are the
same bytes, that work is the last frame's, and the next step's perception is off the
critical path.

The window is short on purpose: an app that shows nothing for longer than ``quiet_s``
after an action and then changes (a slow launch) is caught by the next step's capture
instead, and the model can answer WAIT.

The last thumbnail of each call is kept as ``last_probe``: the loop compares it with the
capture the model saw to tell whether the action changed the screen (``agent.progress``).

``AdaptiveSettle.for_screen(screen)`` probes ``screen.probe()`` (a thumbnail and its frame:
``MssScreen``), else ``screen.thumbnail()``, else a thumbnail of ``capture()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageChops

from agent.capture import Screenshot, thumbnail
from agent.image import SentImage
from agent.threads import background_pool

_EPSILON = 1e-4  # probes due every poll_s land a hair early or late: a quiet window of 0.08 s is 0.08 s

Probe = Callable[[], "Image.Image | tuple[Image.Image, Screenshot]"]


@dataclass(frozen=True)
class SettleConfig:
    """How long to wait for the screen to settle. Times in seconds."""

    quiet_s: float = 0.08  # the screen must look unchanged this long
    max_s: float = 2.0  # never wait longer: no slower than the fixed 2 s sleep it replaces
    poll_s: float = 0.04  # between two probes
    # The second probe comes this soon after the first, which is taken as the action ends: most
    # apps repaint within a few milliseconds of the input (3-9 ms measured for Tk windows raised
    # by a click under Xvfb), and seeing that change early starts the quiet window early.
    early_s: float = 0.01
    tolerance: float = 0.0005  # fraction of thumbnail pixels allowed to differ (cursor blink)
    pixel_threshold: int = 16  # gray levels (0-255) a thumbnail pixel must move to count

    def __post_init__(self) -> None:
        if not (self.quiet_s >= 0 and self.max_s >= 0 and self.poll_s > 0 and 0 <= self.early_s <= self.poll_s):
            raise ValueError(
                "settle times must not be negative, the poll interval must be positive and early_s at most poll_s"
            )


def changed_fraction(before: Image.Image, after: Image.Image, pixel_threshold: int = 16) -> float:
    """The fraction of pixels that differ by more than ``pixel_threshold`` (1.0 if sizes differ)."""
    if before.size != after.size:
        return 1.0
    histogram = ImageChops.difference(before, after).histogram()
    return sum(histogram[pixel_threshold + 1 :]) / (before.width * before.height)


class AdaptiveSettle:
    """A callable that waits for the screen to settle and returns the seconds it spent.

    ``probe`` returns the current thumbnail of the screen, or a thumbnail and the capture it
    was taken from (then the quiet frame is kept for ``take_frame``). ``ahead`` is the
    (image budget, encoding) to prepare a frame that looks final with (see the module
    docstring). ``clock`` and ``sleep`` can be replaced in tests.
    """

    def __init__(
        self,
        probe: Probe,
        config: SettleConfig | None = None,
        *,
        ahead: tuple[int, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.probe = probe
        self.config = config or SettleConfig()
        self.ahead = ahead
        self._clock = clock
        self._sleep = sleep
        self.probes = 0  # probes taken by the last call (for the bench and tests)
        self.ahead_used: bool | None = None  # the last frame's image was prepared ahead (None: not tried)
        self.last_probe: Image.Image | None = None  # the settled screen's thumbnail (the loop's progress check)
        self._frame: Screenshot | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._pending: Future[SentImage] | None = None  # the latest preparation started ahead

    @classmethod
    def for_screen(
        cls, screen: Any, config: SettleConfig | None = None, ahead: tuple[int, str] | None = None
    ) -> AdaptiveSettle:
        """An adaptive settle probing ``screen.probe()`` (a thumbnail and its frame) when the
        screen has one, else ``screen.thumbnail()``, else a thumbnail of ``capture()``."""
        probe = (
            getattr(screen, "probe", None)
            or getattr(screen, "thumbnail", None)
            or (lambda: thumbnail(screen.capture().image))
        )
        return cls(probe, config, ahead=ahead)

    def take_frame(self) -> Screenshot | None:
        """The capture that proved the screen quiet in the last call, once (then None); None
        when the probe gives no captures or the settle ran out of time."""
        frame, self._frame = self._frame, None
        return frame

    def _probe(self) -> tuple[Image.Image, Screenshot | None]:
        result = self.probe()
        self.probes += 1
        thumb, shot = result if isinstance(result, tuple) else (result, None)
        self.last_probe = thumb
        return thumb, shot

    def _due(self, taken: float, quiet_since: float) -> float:
        """When the next probe is due: ``early_s`` after the first, else on a ``poll_s`` grid
        from the start of the quiet window, and at its end exactly."""
        cfg = self.config
        if self.probes == 1:
            return taken + cfg.early_s
        into = taken - quiet_since
        return quiet_since + min(cfg.poll_s * (int(into / cfg.poll_s + _EPSILON) + 1), cfg.quiet_s)

    def _prepare_ahead(self, shot: Screenshot | None) -> Screenshot | None:
        """Start preparing ``shot``'s model image in the background (when the probe gives
        captures and ``ahead`` is set); returns the frame being prepared, or None."""
        if shot is None or self.ahead is None:
            return None
        if self._worker is None:
            self._worker = background_pool("deskpilot-ahead")
        self._pending = shot.prepare(*self.ahead, executor=self._worker)
        return shot

    def _cancel_ahead(self) -> None:
        """Drop the preparation of a frame the screen has moved on from, if it has not started."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def __call__(self) -> float:
        cfg = self.config
        self._frame, self.probes, self.ahead_used = None, 0, None
        started = self._clock()
        deadline = started + cfg.max_s
        taken = started  # when the last probe grabbed the screen (probes are due every poll_s from it)
        reference, latest = self._probe()  # the screen as it has looked since quiet_since
        quiet_since = taken
        ahead: Screenshot | None = None  # the frame being prepared ahead
        while True:
            if taken - quiet_since >= cfg.quiet_s - _EPSILON:
                if ahead is not None and latest is not None:
                    self.ahead_used = latest is ahead or _same_pixels(ahead, latest)
                    if self.ahead_used and latest is not ahead:
                        latest.adopt(ahead)
                self._frame = latest
                return self._clock() - started
            now = self._clock()
            if now >= deadline:
                return now - started
            due = self._due(taken, quiet_since)
            self._sleep(max(0.0, min(due, deadline) - now))
            taken = self._clock()
            current, latest = self._probe()
            if changed_fraction(reference, current, cfg.pixel_threshold) > cfg.tolerance:
                reference, quiet_since = current, taken
                # A frame that follows a change is usually the final one (an app repaints once):
                # prepare it now, while the quiet window runs, and give up the one superseded.
                self._cancel_ahead()
                ahead = self._prepare_ahead(latest)
            elif ahead is None:
                ahead = self._prepare_ahead(latest)  # the first probe (taken before the app repainted) matched


def _same_pixels(a: Screenshot, b: Screenshot) -> bool:
    if a.pixels is not None and b.pixels is not None:
        return a.pixels.size == b.pixels.size and a.pixels.data == b.pixels.data
    return a.size == b.size and a.image.tobytes() == b.image.tobytes()
