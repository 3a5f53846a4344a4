"""The Screen seam: capture one monitor as an image plus its geometry.

``MssScreen`` captures a live monitor with mss (imported lazily: it needs a display).
``ImageScreen`` serves mocked screens from PNG files (one file, or a folder in name
order, the last one repeating), for dry runs, CI and replay. Both have ``thumbnail()``,
the cheap grayscale probe the settle check polls; ``MssScreen.probe()`` also hands over
the capture the thumbnail was taken from, so the frame that proved the screen settled can
be the next step's screenshot.

A ``Screenshot`` keeps what a step makes of its capture: the RGB image (converted from
mss's BGRX pixels only when first asked for, once) and the model's image
(``Screenshot.prepare``, made once per budget and encoding, possibly ahead of time in
another thread). What is *sent* to the model (resized, encoded) is ``agent.image``'s
business; whether a display can be used at all is ``agent.display``'s.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Protocol

from PIL import Image

from agent.display import check_display
from agent.errors import DisplayError, UsageError
from agent.geometry import MonitorGeometry
from agent.image import Bgrx, SentImage, exact_factor, prepare_for_model, sent_size
from agent.imagefile import open_image

THUMB_WIDTH = 480  # the settle probe's thumbnail is about this wide (one pixel sampled per block)


class Screenshot:
    """One capture of one monitor: the full-resolution image and where it sits.

    Built from a Pillow ``image``, or from mss's ``pixels`` (then ``image`` is converted on
    first use, once: the model's image, the history shot and the recorder's PNG share it; a
    settle probe that proves nothing is never converted). Thread-safe."""

    def __init__(self, image: Image.Image | None, monitor: MonitorGeometry, pixels: Bgrx | None = None) -> None:
        if image is None and pixels is None:
            raise ValueError("a Screenshot needs an image or pixels")
        self._image = image
        self.monitor = monitor
        self.pixels = pixels
        self._lock = threading.Lock()
        self._prepared: dict[tuple[int, str, bool], Future[SentImage]] = {}

    @property
    def size(self) -> tuple[int, int]:
        return self._image.size if self._image is not None else self.pixels.size  # type: ignore[union-attr]

    @property
    def image(self) -> Image.Image:
        """The capture as an RGB image (converted from ``pixels`` once, on first use)."""
        with self._lock:
            if self._image is None:
                self._image = self.pixels.to_rgb()  # type: ignore[union-attr]
            return self._image

    def prepare(
        self, max_tokens: int, encoding: str, half: bool = False, executor: Executor | None = None
    ) -> Future[SentImage]:
        """The model's image of this capture (``prepare_for_model``), made once per
        (``max_tokens``, ``encoding``, ``half``): on ``executor`` if given, else here and now.
        Asking again gives the same future, finished or still under way."""
        key = (max_tokens, encoding, half)
        with self._lock:
            future = self._prepared.get(key)
            start = future is None
            if future is None:
                future = self._prepared[key] = Future()
        if start:
            if executor is None:
                self._fill(future, key)
            else:
                executor.submit(self._fill, future, key)
        return future

    def is_prepared(self, max_tokens: int, encoding: str, half: bool = False) -> bool:
        """Whether that model image was asked for already (made, or under way)."""
        with self._lock:
            return (max_tokens, encoding, half) in self._prepared

    def adopt(self, twin: Screenshot) -> None:
        """Take over what was made from ``twin``, a capture with the very same pixels."""
        with twin._lock:
            image, prepared = twin._image, dict(twin._prepared)
        with self._lock:
            if self._image is None:
                self._image = image
            for key, future in prepared.items():
                self._prepared.setdefault(key, future)

    def _fill(self, future: Future[SentImage], key: tuple[int, str, bool]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        max_tokens, encoding, half = key
        with self._lock:
            image = self._image
        # An exact 1/k (3840x2160 sent at 1920x1080) is made from the pixels: the frame's full
        # conversion then happens off the critical path, for the recorder.
        exact = exact_factor(self.size, sent_size(self.size, max_tokens, half)) > 1
        source = self.pixels if image is None and exact and self.pixels is not None else self.image
        try:
            future.set_result(prepare_for_model(source, *key))
        except BaseException as exc:
            future.set_exception(exc)


class Screen(Protocol):
    """Something that can be captured."""

    def capture(self) -> Screenshot:
        """Return the current screen of the chosen monitor."""
        ...


def thumbnail(image: Image.Image | Bgrx, width: int = THUMB_WIDTH) -> Image.Image:
    """The settle probe's picture of a screen: grayscale, about ``width`` pixels wide.

    It samples one pixel (the centre) of every ``stride`` x ``stride`` block, stride =
    ``image.width // width`` (at least 1): the share of sampled pixels that changed is the
    share of the screen that changed, and sampling costs the same at any screen size (under a
    millisecond of CPU time at 1920x1080 and at 3840x2160, where converting the frame and
    averaging the blocks cost 4 and 18 ms). A change thinner than the stride (a 1-pixel caret
    at 4 px stride) can fall between the samples: below the settle's tolerance anyway. Pixels
    from mss are sampled where they lie, without converting the frame first."""
    source = image.view() if isinstance(image, Bgrx) else image
    full_width, full_height = source.size
    stride = max(1, full_width // width)
    if stride > 1:
        cols, rows = max(1, full_width // stride), max(1, full_height // stride)
        source = source.resize((cols, rows), Image.Resampling.NEAREST, box=(0, 0, cols * stride, rows * stride))
    if isinstance(image, Bgrx):
        return Image.frombytes("RGB", source.size, source.tobytes(), "raw", "BGRX").convert("L")
    return source.convert("L")


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
        """A grab of the monitor; its RGB image is converted only when something asks for it."""
        return self._grab()

    def _grab(self) -> Screenshot:
        raw = self._mss.grab(self.region)
        width, height = raw.size
        # mss gives the monitor in screen units and the image in physical pixels: their
        # ratio is the HiDPI scale (2.0 on Retina, 1.0 on X11).
        scale = width / self.region["width"]
        geometry = MonitorGeometry(self.region["left"], self.region["top"], width, height, scale)
        return Screenshot(None, geometry, Bgrx(raw.raw, (width, height)))

    def probe(self) -> tuple[Image.Image, Screenshot]:
        """The settle probe: one grab, as a thumbnail and as the capture it was sampled from."""
        shot = self._grab()
        return thumbnail(shot.pixels), shot  # type: ignore[arg-type]

    def thumbnail(self, width: int = THUMB_WIDTH) -> Image.Image:
        """A small grayscale image of the monitor (see ``thumbnail``)."""
        return thumbnail(self._grab().pixels, width)  # type: ignore[arg-type]

    def close(self) -> None:
        self._mss.close()
