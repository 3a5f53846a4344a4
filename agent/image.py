"""The screenshot as sent to the model: resized within the image-token budget and encoded.

``prepare_for_model`` turns a capture into a ``SentImage`` (a data URL plus its size,
encoding, bytes and visual tokens); ``encode_image`` / ``encode_bytes`` / ``resize_for_model``
are its parts. The planner sees only ``SentImage``s: it never captures.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image

from agent.config import DEFAULT_IMAGE_ENCODING, DEFAULT_IMAGE_TOKENS, parse_encoding
from agent.geometry import PATCH, fit_to_tokens, image_tokens


@dataclass(frozen=True)
class SentImage:
    """A screenshot as sent to the model."""

    data_url: str
    size: tuple[int, int]
    encoding: str
    n_bytes: int
    tokens: int


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
    image = resize_for_model(image, size)
    raw, mime = encode_bytes(image, encoding)
    url = f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"
    return SentImage(url, size, encoding, len(raw), image_tokens(size))


def prepare_for_model(
    image: Image.Image,
    max_tokens: int = DEFAULT_IMAGE_TOKENS,
    encoding: str = DEFAULT_IMAGE_ENCODING,
    half: bool = False,
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
    native = image.size
    width, height = size = fit_to_tokens(native, max_tokens)
    if half:
        if size == native:
            size = (max(PATCH, width // 2), max(PATCH, height // 2))
        else:
            size = (max(PATCH, width // 2 // PATCH * PATCH), max(PATCH, height // 2 // PATCH * PATCH))
    return encode_image(image, size, encoding)
