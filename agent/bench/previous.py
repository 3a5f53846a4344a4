"""The previous path, kept as a baseline: how deskpilot captured, prepared the model's image and
probed the screen for the settle check before big screens were made fast (issue 14), so each
bench row can show today's figure beside it, measured in the same run.

* capture: the whole frame converted from mss's BGRX bytes to RGB at once;
* the model's image: the 28-grid size for every over-budget capture (3840x2160 -> 1932x1064),
  one bicubic pass after a whole-factor box reduction (``reducing_gap=1``) in one thread, JPEG;
* the settle probe: the whole frame converted, block-averaged to about 480 pixels wide, gray.
"""

from __future__ import annotations

import base64

from PIL import Image

from agent.geometry import fit_to_tokens, image_tokens
from agent.image import Bgrx, SentImage, encode_bytes

THUMB_WIDTH = 480


def capture(pixels: Bgrx) -> Image.Image:
    """The capture as the previous ``MssScreen.capture`` built it."""
    return pixels.to_rgb()


def prepare(image: Image.Image, max_tokens: int, encoding: str) -> SentImage:
    """The model's image as the previous ``prepare_for_model`` made it."""
    size = fit_to_tokens(image.size, max_tokens)
    if image.size == size:
        resized = image
    elif image.width == 2 * size[0] and image.height == 2 * size[1]:
        resized = image.reduce(2)
    else:
        resized = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=1.0)
    raw, mime = encode_bytes(resized, encoding)
    url = f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"
    return SentImage(url, size, encoding, len(raw), image_tokens(size))


def thumbnail(pixels: Bgrx) -> Image.Image:
    """The settle probe as the previous ``MssScreen.thumbnail`` made it from a grab."""
    image = pixels.to_rgb()
    factor = max(1, image.width // THUMB_WIDTH)
    return (image.reduce(factor) if factor > 1 else image).convert("L")
