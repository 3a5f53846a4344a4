"""The Screen seam: capture one monitor as an image plus its geometry.

``MssScreen`` captures a live monitor with mss (imported lazily: it needs a display).
``ImageScreen`` serves mocked screens from PNG files (one file, or a folder in name
order, the last one repeating), for dry runs, CI and replay.

``prepare_for_model`` turns a capture into what is sent: downscaled to the image-token
budget, keeping the aspect ratio, and encoded.
"""

from __future__ import annotations

import base64
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from agent.errors import DisplayError, UsageError
from agent.geometry import MonitorGeometry, fit_to_tokens, image_tokens

DEFAULT_IMAGE_TOKENS = 2700  # about what a 1920x1080 screenshot costs (2,691)


@dataclass
class Screenshot:
    """One capture of one monitor: the full-resolution image and where it sits."""

    image: Image.Image
    monitor: MonitorGeometry
    captured_at: float
    source: str = ""  # a file name for ImageScreen, "mss:N" for live captures


class Screen(Protocol):
    """Something that can be captured."""

    def capture(self) -> Screenshot:
        """Return the current screen of the chosen monitor."""
        ...


@dataclass(frozen=True)
class SentImage:
    """A screenshot as sent to the model."""

    data_url: str
    size: tuple[int, int]
    encoding: str
    n_bytes: int
    tokens: int


def encode_image(image: Image.Image, size: tuple[int, int], encoding: str = "png") -> SentImage:
    """Resize (if needed) and encode an image as a data URL."""
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    if encoding == "png":
        image.save(buffer, format="PNG", compress_level=1)
        mime = "image/png"
    elif encoding.startswith("jpeg"):
        quality = int(encoding.partition(":")[2] or 85)
        image.save(buffer, format="JPEG", quality=quality)
        mime = "image/jpeg"
    else:
        raise UsageError(f"unknown image encoding {encoding!r}: use png or jpeg[:QUALITY]")
    raw = buffer.getvalue()
    url = f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"
    return SentImage(url, size, encoding, len(raw), image_tokens(size))


def prepare_for_model(shot: Screenshot, max_tokens: int = DEFAULT_IMAGE_TOKENS,
                      encoding: str = "png", half: bool = False) -> SentImage:
    """The screenshot as the model will see it: within the token budget, encoded.

    ``half`` gives the half-size version used for history screenshots.
    """
    size = fit_to_tokens(shot.image.size, max_tokens)
    if half:
        size = (max(28, size[0] // 2), max(28, size[1] // 2))
    return encode_image(shot.image, size, encoding)


class ImageScreen:
    """Mocked screens from PNG files: one file, or a folder served in name order.

    After the last file the last screen repeats. ``origin`` and ``scale`` let a test
    pretend the images come from a monitor anywhere in the virtual desktop.
    """

    def __init__(self, path: str | os.PathLike[str], origin: tuple[int, int] = (0, 0),
                 scale: float = 1.0) -> None:
        root = Path(path)
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

    def capture(self) -> Screenshot:
        path = self.files[min(self._next, len(self.files) - 1)]
        self._next += 1
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path} is not a readable image ({exc})") from None
        geometry = MonitorGeometry(self.origin[0], self.origin[1], image.width, image.height, self.scale)
        return Screenshot(image, geometry, time.time(), source=path.name)


def check_display() -> None:
    """Raise DisplayError with advice when no X display can be used for live capture/input."""
    if sys.platform.startswith("linux"):
        if not os.environ.get("DISPLAY"):
            if os.environ.get("WAYLAND_DISPLAY"):
                raise DisplayError(
                    "Wayland session without XWayland DISPLAY: deskpilot needs X11, because Wayland "
                    "does not let a program capture the screen or send input to other windows. Log in "
                    "to an X11 session, or use --dry-run --screens PATH"
                )
            raise DisplayError("no X display: set DISPLAY or use --dry-run --screens PATH")


class MssScreen:
    """Live capture of one monitor with mss (1 = first physical monitor, 0 = all of them)."""

    def __init__(self, monitor: int = 1) -> None:
        check_display()
        try:
            import mss
        except ImportError as exc:  # pragma: no cover - mss is a dependency
            raise DisplayError(f"mss is not installed: {exc}") from None
        try:
            self._mss = mss.mss()
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
        image = Image.frombytes("RGB", raw.size, raw.bgra, "raw", "BGRX")
        # mss gives the monitor in screen units and the image in physical pixels: their
        # ratio is the HiDPI scale (2.0 on Retina, 1.0 on X11).
        scale = image.width / self.region["width"]
        geometry = MonitorGeometry(self.region["left"], self.region["top"], image.width, image.height, scale)
        return Screenshot(image, geometry, time.time(), source=f"mss:{self.monitor_index}")

    def close(self) -> None:
        self._mss.close()
