"""Image files: opening one that may be hostile, and saving a recording's lossless screenshot fast.

``open_image``: a PNG can declare a size far beyond its bytes (a decompression bomb); Pillow warns
above ``Image.MAX_IMAGE_PIXELS`` and refuses at twice that. Both are refused here, as is any file
that does not decode, with a message that says which file and what it is for.

``save_png``: the recorder's PNG of every step. Pillow's encoder tries four filters on every row to
pick one (about 60% of its time) and cannot be told not to. One fixed filter (Up), made in C by
Pillow and deflated by ISA-L (the ``isal`` package), costs 39 ms of CPU time instead of 251 ms on a
real 2560x1440 desktop at level 1, for 3% more bytes (stdlib zlib, where isal has no wheel: ~150 ms).
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageChops

from agent.errors import UsageError

try:
    from isal import isal_zlib as deflate
except ImportError:  # no wheel for this machine: the stdlib's zlib, same API, 3-4x the CPU time
    import zlib as deflate  # type: ignore[no-redef]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOUR_TYPES = {"L": (0, 1), "RGB": (2, 3)}  # mode: (PNG colour type, bytes per pixel), 8 bits each
UP = 2  # PNG filter type: each byte minus the byte above it (row 0: minus zeros)
IDAT_BYTES = 1 << 20  # the largest IDAT chunk written, and about the raw bytes filtered at a time


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


def save_png(image: Image.Image, path: str | os.PathLike[str]) -> None:
    """Write ``image`` to ``path`` as a lossless PNG at compression level 1 ("RGB" and "L": Up
    filter on every row, see the module docstring; other modes through Pillow). A failed write
    raises OSError and may leave part of the file."""
    if image.mode not in PNG_COLOUR_TYPES:
        image.save(path, format="PNG", compress_level=1)
        return
    colour, channels = PNG_COLOUR_TYPES[image.mode]
    width, height = image.size
    stride = width * channels
    band_rows = max(1, IDAT_BYTES // stride)
    compressor = deflate.compressobj(1)
    pending = bytearray()
    with open(path, "wb") as file:
        file.write(PNG_SIGNATURE)
        _write_chunk(file, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
        for top in range(0, height, band_rows):
            bottom = min(top + band_rows, height)
            # The rows above, one row up: cropping above the image gives zeros, PNG's row above row 0.
            above = image.crop((0, top - 1, width, bottom - 1))
            up = memoryview(ImageChops.subtract_modulo(image.crop((0, top, width, bottom)), above).tobytes())
            rows = bottom - top
            filtered = bytearray(rows * (stride + 1))
            filtered[:: stride + 1] = bytes([UP]) * rows
            for row in range(rows):
                start = row * (stride + 1) + 1
                filtered[start : start + stride] = up[row * stride : (row + 1) * stride]
            pending += compressor.compress(filtered)
            while len(pending) >= IDAT_BYTES:
                _write_chunk(file, b"IDAT", pending[:IDAT_BYTES])
                del pending[:IDAT_BYTES]
        pending += compressor.flush()
        for start in range(0, len(pending), IDAT_BYTES):
            _write_chunk(file, b"IDAT", pending[start : start + IDAT_BYTES])
        _write_chunk(file, b"IEND", b"")


def _write_chunk(file: BinaryIO, kind: bytes, data: bytes | bytearray) -> None:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    file.write(struct.pack(">I", len(data)) + kind)
    file.write(data)
    file.write(struct.pack(">I", deflate.crc32(data, deflate.crc32(kind))))
