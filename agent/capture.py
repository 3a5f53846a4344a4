"""The Screen seam: capture one monitor as an image plus its geometry.

``MssScreen`` captures a live monitor with mss (imported lazily: it needs a display).
``ImageScreen`` serves mocked screens from PNG files (one file, or a folder in name
order, the last one repeating), for dry runs, CI and replay. Both have ``thumbnail()``,
the cheap grayscale probe the settle check polls.

What is *sent* to the model (resized, encoded) is ``agent.image``'s business; whether a
display can be used at all is ``agent.display``'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from agent.display import check_display
from agent.errors import DisplayError, UsageError
from agent.geometry import MonitorGeometry
from agent.imagefile import open_image

THUMB_WIDTH = 480  # the settle probe's thumbnail is about this wide (block average of the screen)


@dataclass
class Screenshot:
    """One capture of one monitor: the full-resolution image and where it sits."""

    image: Image.Image
    monitor: MonitorGeometry


class Screen(Protocol):
    """Something that can be captured."""

    def capture(self) -> Screenshot:
        """Return the current screen of the chosen monitor."""
        ...


def thumbnail(image: Image.Image, width: int = THUMB_WIDTH) -> Image.Image:
    """A grayscale block average of ``image`` about ``width`` pixels wide."""
    factor = max(1, image.width // width)
    small = image.reduce(factor) if factor > 1 else image
    return small.convert("L")


class ImageScreen:
    """Mocked screens from PNG files: one file, a folder served in name order, or a list of files.

    After the last file the last screen repeats. ``origin`` and ``scale`` let a test
    pretend the images come from a monitor anywhere in the virtual desktop.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        origin: tuple[int, int] = (0, 0),
        scale: float = 1.0,
    ) -> None:
        if isinstance(path, (list, tuple)):
            files = [Path(p) for p in path]
            if not files:
                raise UsageError("no screens given")
        else:
            root = Path(path)  # type: ignore[arg-type]
            if root.is_dir():
                files = sorted(p for p in root.iterdir() if p.suffix.lower() == ".png")
                if not files:
                    raise UsageError(f"no .png files in {root}: --screens takes one PNG or a folder of PNGs")
            elif root.is_file():
                files = [root]
            else:
                raise UsageError(f"{root} does not exist: --screens takes one PNG or a folder of PNGs")
        self.files = files
        self.origin = origin
        self.scale = scale
        self._next = 0

    def _load(self, index: int) -> Screenshot:
        path = self.files[min(index, len(self.files) - 1)]
        with open_image(path, "mocked screen") as img:
            image = img.convert("RGB")
        geometry = MonitorGeometry(self.origin[0], self.origin[1], image.width, image.height, self.scale)
        return Screenshot(image, geometry)

    def capture(self) -> Screenshot:
        self._next += 1
        return self._load(self._next - 1)

    def thumbnail(self, width: int = THUMB_WIDTH) -> Image.Image:
        """The settle probe: a thumbnail of the screen last served (the next one is not used up)."""
        return thumbnail(self._load(max(0, self._next - 1)).image, width)


class MssScreen:
    """Live capture of one monitor with mss (1 = first physical monitor, 0 = all of them)."""

    def __init__(self, monitor: int = 1) -> None:
        check_display()
        try:
            import mss
        except ImportError as exc:  # pragma: no cover - mss is a dependency
            raise DisplayError(f"mss is not installed: {exc}") from None
        try:
            self._mss = (getattr(mss, "MSS", None) or mss.mss)()  # mss 10 renamed the class
        except Exception as exc:  # mss raises ScreenShotError and friends
            raise DisplayError(f"cannot open the display for capture ({exc}): is DISPLAY right?") from None
        monitors = self._mss.monitors
        if not 0 <= monitor < len(monitors):
            raise DisplayError(
                f"monitor {monitor} does not exist: this desktop has {len(monitors) - 1} monitor(s), "
                f"numbered 1-{len(monitors) - 1} (0 = all of them together)"
            )
        self.monitor_index = monitor
        self.region = dict(monitors[monitor])

    def capture(self) -> Screenshot:
        raw = self._mss.grab(self.region)
        # straight from mss's buffer: .bgra would copy the whole frame first
        image = Image.frombytes("RGB", raw.size, raw.raw, "raw", "BGRX")
        # mss gives the monitor in screen units and the image in physical pixels: their
        # ratio is the HiDPI scale (2.0 on Retina, 1.0 on X11).
        scale = image.width / self.region["width"]
        geometry = MonitorGeometry(self.region["left"], self.region["top"], image.width, image.height, scale)
        return Screenshot(image, geometry)

    def thumbnail(self, width: int = THUMB_WIDTH) -> Image.Image:
        """A small grayscale image of the monitor (the settle probe): no Screenshot is built."""
        raw = self._mss.grab(self.region)
        return thumbnail(Image.frombytes("RGB", raw.size, raw.raw, "raw", "BGRX"), width)

    def close(self) -> None:
        self._mss.close()
