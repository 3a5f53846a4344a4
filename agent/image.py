"""The screenshot as sent to the model: resized within the image-token budget and encoded.

``prepare_for_model`` turns a capture into a ``SentImage`` (a data URL plus its size,
encoding, bytes and visual tokens); ``sent_size``, ``resize_for_model`` and ``encode_image`` /
``encode_bytes`` are its parts. ``Bgrx`` holds pixels as mss delivers them, and converts
them. Importing it has Pillow keep a few freed memory blocks for reuse (``BLOCKS_KEPT``).
The planner sees only ``SentImage``s: it never captures.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from agent.config import DEFAULT_IMAGE_ENCODING, DEFAULT_IMAGE_TOKENS, parse_encoding
from agent.geometry import PATCH, fit_to_tokens, image_tokens
from agent.threads import background_pool

EXACT_SHARE = 0.9  # an exact 1/k reduction is sent when it keeps this share of the fitted size's pixels
TILE_MIN_PIXELS = 400_000  # smaller results are resampled in one piece: threads would not pay
BLOCKS_KEPT = 8  # freed Pillow memory blocks (up to 16 MB each) kept for the next images

# Pillow allocates each image afresh and by default gives the memory back when the image is
# freed, so every big capture pays page faults on fresh memory before any work: at 3840x2160
# that cost more than the work itself (the model's image took 89 ms of CPU time, 35 with the
# blocks kept). Keeping a few freed blocks for reuse (Pillow's PILLOW_BLOCKS_MAX, at most
# 128 MB) avoids it; a larger setting made by the user is left alone.
if Image.core.get_blocks_max() < BLOCKS_KEPT:
    Image.core.set_blocks_max(BLOCKS_KEPT)


@dataclass(frozen=True)
class SentImage:
    """A screenshot as sent to the model."""

    data_url: str
    size: tuple[int, int]
    encoding: str
    n_bytes: int
    tokens: int


@dataclass(frozen=True)
class Bgrx:
    """Pixels as mss delivers them: 4 bytes a pixel (blue, green, red, padding), row by row."""

    data: bytes | bytearray
    size: tuple[int, int]

    def view(self) -> Image.Image:
        """The pixels as a Pillow image without a copy. Its mode says RGBX but its first band
        is blue and its third red. (A bicubic pass over it is a third slower than over an RGB
        image, whose padding byte Pillow skips: more than converting first saves.)"""
        return Image.frombuffer("RGBX", self.size, self.data, "raw", "RGBX", 0, 1)

    def to_rgb(self) -> Image.Image:
        """The whole frame as an RGB image (one conversion pass over every pixel)."""
        return Image.frombytes("RGB", self.size, self.data, "raw", "BGRX")

    def reduce(self, factor: int) -> Image.Image:
        """An exact 1/``factor`` as RGB, without converting the whole frame: the blocks are
        averaged where the pixels lie, then only the small result's bands are put in order
        (at 3840x2160: 22 ms instead of 31 for converting, then averaging)."""
        blue, green, red, _ = self.view().reduce(factor).split()
        return Image.merge("RGB", (red, green, blue))


def exact_factor(native: tuple[int, int], size: tuple[int, int]) -> int:
    """k when ``size`` is exactly 1/k of ``native`` on both sides (1: the same size), else 0."""
    k = native[0] // size[0] if size[0] else 0
    return k if k >= 1 and native == (size[0] * k, size[1] * k) else 0


def sent_size(native: tuple[int, int], max_tokens: int = DEFAULT_IMAGE_TOKENS, half: bool = False) -> tuple[int, int]:
    """The size a capture of ``native`` pixels is sent at (``half``: its history shot).

    The 28-pixel rule: the server stretches every image to sides that are multiples of 28
    (rounding to the nearest), so whenever we resample anyway we pick such sides ourselves
    and the server leaves the image alone: over-budget captures are downscaled onto the 28
    grid (``fit_to_tokens``), and their half-size shots stay on it (rounded down). Two kinds
    of size are sent off the grid: a capture within budget, at its native size (snapping
    would cost a full-frame bicubic pass and resample every glyph at a ratio like 0.992, to
    save at most one row and column of patches; the server's stretch of at most half a patch
    per side is the one the model was trained with), and an exact 1/k of an over-budget
    capture when that fits the budget and keeps at least ``EXACT_SHARE`` of the grid size's
    pixels: a 3840x2160 screen is sent at 1920x1080 (2,691 tokens) rather than 1932x1064
    (2,622): averaging 2x2 blocks is 6x faster than bicubic there, and as sharp. Half-size
    shots of off-grid sizes are exact halves. Grounding is unaffected either way:
    thousandths are fractions of whatever image was sent.
    """
    width, height = native
    fitted = fit_to_tokens(native, max_tokens)
    size, on_grid = fitted, fitted != native
    if on_grid:
        k = 2
        while image_tokens((width // k, height // k)) > max_tokens and k < min(width, height):
            k += 1
        exact = (width // k, height // k)
        if width % k == 0 and height % k == 0 and exact[0] * exact[1] >= EXACT_SHARE * fitted[0] * fitted[1]:
            size, on_grid = exact, False
    if not half:
        return size
    if on_grid:
        return max(PATCH, size[0] // 2 // PATCH * PATCH), max(PATCH, size[1] // 2 // PATCH * PATCH)
    return max(PATCH, size[0] // 2), max(PATCH, size[1] // 2)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _workers() -> int:
    return min(4, os.cpu_count() or 1)


def _resize_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = background_pool("deskpilot-resize", _workers())
        return _pool


def _bicubic(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Bicubic resampling, cut into horizontal bands resampled in parallel (Pillow lets go of
    the GIL while it resamples). Each band is the same rows of one whole-image resize: the
    source box of output rows [a, b) is rows [a * H / h, b * H / h), and Pillow reads the
    filter's support beyond a box's edges, so the bands join without a seam."""
    width, height = size
    bands = min(_workers(), height)
    if bands < 2 or width * height < TILE_MIN_PIXELS:
        return image.resize(size, Image.Resampling.BICUBIC)
    scale_y = image.height / height
    edges = [round(height * i / bands) for i in range(bands + 1)]

    def band(i: int) -> Image.Image:
        top, bottom = edges[i], edges[i + 1]
        box = (0.0, top * scale_y, float(image.width), bottom * scale_y)
        return image.resize((width, bottom - top), Image.Resampling.BICUBIC, box=box)

    out = Image.new(image.mode, size)
    for i, part in enumerate(_resize_pool().map(band, range(bands))):
        out.paste(part, (0, edges[i]))
    return out


def resize_for_model(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resample to ``size``: an exact 1/k by averaging k x k blocks, anything else bicubic.

    Bicubic is the filter GLM-4.5V's own image processor uses. A reduction by 2x or more is
    first box-averaged by its whole factor (Pillow's ``reduce``), then bicubic for the rest;
    the bicubic pass runs in parallel bands on up to 4 cores (``_bicubic``; 2560x1440 -> 1932x1064 is
    about 60 ms of CPU time in one thread, 46 ms of wall time in two bands on this project's
    two cores, for about 83 ms of CPU time in all). An exact 1/k
    (3840x2160 -> 1920x1080, the half-size shot of a capture within budget) is a k x k box
    average: about 10 ms at 4K.
    """
    if image.size == size:
        return image
    width, height = image.size
    k = exact_factor(image.size, size)
    if k > 1:
        return image.reduce(k)
    factor = (max(1, width // size[0]), max(1, height // size[1]))
    if factor != (1, 1):
        image = image.reduce(factor)
    return _bicubic(image, size)


def encode_bytes(image: Image.Image, encoding: str = DEFAULT_IMAGE_ENCODING) -> tuple[bytes, str]:
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


def encode_image(image: Image.Image, size: tuple[int, int], encoding: str = DEFAULT_IMAGE_ENCODING) -> SentImage:
    """Resize (if needed) and encode an image as a data URL.

    Encodings, measured on Xvfb desktop screenshots with windows, text and a photo
    wallpaper at 1920x1080 (2-core machine; ``deskpilot bench`` repeats this):
    ``png`` is zlib level 1 (~90 ms, ~1.1 MB; level 6, Pillow's default, is 3.8x slower
    for 6 % less, level 0 is 5x bigger for barely less time: PNG filtering dominates);
    ``jpeg`` is quality 90 with 4:2:0 chroma (~6 ms, ~0.4 MB, PSNR ~41 dB on text).
    The token cost is the same whatever the encoding: it depends on the size only.
    """
    raw, mime = encode_bytes(resize_for_model(image, size), encoding)
    url = f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"
    return SentImage(url, size, encoding, len(raw), image_tokens(size))


def prepare_for_model(
    image: Image.Image | Bgrx,
    max_tokens: int = DEFAULT_IMAGE_TOKENS,
    encoding: str = DEFAULT_IMAGE_ENCODING,
    half: bool = False,
) -> SentImage:
    """The screenshot as the model will see it: within the token budget (``sent_size``), encoded.

    ``half`` gives the half-size version used for history screenshots. Pixels from mss are
    reduced where they lie when the size is an exact 1/k, else converted first.
    """
    size = sent_size(image.size, max_tokens, half)
    if isinstance(image, Bgrx):
        k = exact_factor(image.size, size)
        image = image.reduce(k) if k > 1 else image.to_rgb()
    return encode_image(image, size, encoding)
