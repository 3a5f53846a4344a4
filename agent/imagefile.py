"""Opening an image file that may be hostile: every failure is a UsageError naming the file.

A PNG can declare a size far beyond its bytes (a decompression bomb); Pillow warns above
``Image.MAX_IMAGE_PIXELS`` and refuses at twice that. Both are refused here, as is any file
that does not decode, with a message that says which file and what it is for.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from agent.errors import UsageError


@contextmanager
def open_image(path: Path, what: str) -> Iterator[Image.Image]:
    """``Image.open(path)`` for ``what`` (e.g. "screenshot of step 3"), failures as UsageError."""
    if not path.is_file():
        raise UsageError(f"{path}: {what} is missing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UsageError(f"{path}: {what} is refused: it declares more pixels than is safe to decode ({exc})") from None
    except UsageError:
        raise
    except Exception as exc:  # PIL raises many kinds for bad data
        raise UsageError(f"{path}: {what} does not decode ({exc})") from None
