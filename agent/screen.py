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
from agent.geometry import PATCH, MonitorGeometry, fit_to_tokens, image_tokens

DEFAULT_IMAGE_TOKENS = 2700  # about what a 1920x1080 screenshot costs (2,691)
PNG_LEVEL = 1  # zlib level for png: see encode_image for the measurements
JPEG_QUALITY = 90
THUMB_WIDTH = 480  # the settle probe's thumbnail is about this wide (block average of the screen)


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


def parse_encoding(encoding: str) -> tuple[str, int]:
    """``png``, ``png:LEVEL`` (zlib 0-9), ``jpeg`` or ``jpeg:QUALITY`` (1-95) -> (format, parameter)."""
    name, _, value = encoding.partition(":")
    defaults = {"png": (PNG_LEVEL, range(0, 10)), "jpeg": (JPEG_QUALITY, range(1, 96))}
    if name not in defaults:
        raise UsageError(f"unknown image encoding {encoding!r}: use png[:LEVEL] or jpeg[:QUALITY]")
    default, allowed = defaults[name]
    try:
        number = int(value) if value else default
    except ValueError:
        number = -1
    if number not in allowed:
        raise UsageError(f"bad image encoding {encoding!r}: png takes a level 0-9, jpeg a quality 1-95")
    return name, number


def resize_for_model(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resample to ``size``: an exact half by 2x2 averaging, anything else bicubic.

    Bicubic is the filter GLM-4.5V's own image processor uses, at 3/4 the cost of
    Lanczos. An exact half (the history shot of a capture within budget) is a 2x2 box
    average, about 15x faster than Lanczos. A reduction by 2x or more is first box-averaged
    by its whole factor, then bicubic for the rest (``reducing_gap=1``): half the time.
    """
    if image.size == size:
        return image
    if image.width == 2 * size[0] and image.height == 2 * size[1]:
        return image.reduce(2)
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=1.0)


def encode_bytes(image: Image.Image, encoding: str = "png") -> tuple[bytes, str]:
    """Encode an image as ``encoding`` (see ``parse_encoding``): (bytes, MIME type)."""
    name, number = parse_encoding(encoding)
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    if name == "png":
        image.save(buffer, format="PNG", compress_level=number)
    else:
        image.save(buffer, format="JPEG", quality=number)  # 4:2:0, no optimize pass: fastest
    return buffer.getvalue(), f"image/{name}"


def encode_image(image: Image.Image, size: tuple[int, int], encoding: str = "png") -> SentImage:
    """Resize (if needed) and encode an image as a data URL.

    Encodings, measured on Xvfb desktop screenshots with windows, text and a photo
    wallpaper at 1920x1080 (2-core machine; ``deskpilot bench`` repeats this):
    ``png`` is zlib level 1 (~90 ms, ~1.1 MB; level 6, Pillow's default, is 3.8x slower
    for 6 % less, level 0 is 5x bigger for barely less time: PNG filtering dominates);
    ``jpeg`` is quality 90 with 4:2:0 chroma (~6 ms, ~0.4 MB, PSNR ~41 dB on text).
    The token cost is the same whatever the encoding: it depends on the size only.
    """
    image = resize_for_model(image, size)
    raw, mime = encode_bytes(image, encoding)
    url = f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"
    return SentImage(url, size, encoding, len(raw), image_tokens(size))


def prepare_for_model(
    shot: Screenshot, max_tokens: int = DEFAULT_IMAGE_TOKENS, encoding: str = "png", half: bool = False
) -> SentImage:
    """The screenshot as the model will see it: within the token budget, encoded.

    ``half`` gives the half-size version used for history screenshots.

    The 28-pixel rule: the server stretches every image to sides that are multiples of
    28 (rounding to the nearest), so whenever we resample anyway we pick such sides
    ourselves and the server leaves the image alone: over-budget captures are
    downscaled onto the 28 grid (``fit_to_tokens``), and their half-size shots stay on
    it (rounded down). A capture within budget is sent at its native size and is not
    snapped: snapping would cost a full-frame bicubic pass (~35 ms at 1080p here) and
    resample every glyph at a ratio like 0.992, to save at most one row and column of
    patches (2,691 -> 2,584 tokens at 1080p); the server's own stretch of at most half
    a patch per side is the one the model was trained with. Grounding is unaffected
    either way: thousandths are fractions of whatever image was sent. Its half-size
    shot is an exact half (a 2x2 average, the cheapest and sharpest reduction).
    """
    native = shot.image.size
    width, height = size = fit_to_tokens(native, max_tokens)
    if half:
        if size == native:
            size = (max(PATCH, width // 2), max(PATCH, height // 2))
        else:
            size = (max(PATCH, width // 2 // PATCH * PATCH), max(PATCH, height // 2 // PATCH * PATCH))
    return encode_image(shot.image, size, encoding)


def thumbnail(image: Image.Image, width: int = THUMB_WIDTH) -> Image.Image:
    """A grayscale block average of ``image`` about ``width`` pixels wide."""
    factor = max(1, image.width // width)
    small = image.reduce(factor) if factor > 1 else image
    return small.convert("L")


class ImageScreen:
    """Mocked screens from PNG files: one file, or a folder served in name order.

    After the last file the last screen repeats. ``origin`` and ``scale`` let a test
    pretend the images come from a monitor anywhere in the virtual desktop.
    """

    def __init__(self, path: str | os.PathLike[str], origin: tuple[int, int] = (0, 0), scale: float = 1.0) -> None:
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


def display_warning() -> str | None:
    """A caution worth printing before a live run, or None."""
    if os.environ.get("XDG_SESSION_TYPE") == "wayland" and os.environ.get("DISPLAY"):
        return (
            "this is a Wayland session: through XWayland deskpilot sees and controls only X11 "
            "windows, and native Wayland windows may show up black. An X11 session works fully"
        )
    return None


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
        return Screenshot(image, geometry, time.time(), source=f"mss:{self.monitor_index}")

    def thumbnail(self, width: int = THUMB_WIDTH) -> Image.Image:
        """A small grayscale image of the monitor (the settle probe): no Screenshot is built."""
        raw = self._mss.grab(self.region)
        return thumbnail(Image.frombytes("RGB", raw.size, raw.raw, "raw", "BGRX"), width)

    def close(self) -> None:
        self._mss.close()
