"""save_png: the recorder's lossless PNG (Up filter, ISA-L or zlib), checked against Pillow's decoder."""

from __future__ import annotations

import importlib
import os
import random
import struct
import sys
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from PIL import Image

import agent.imagefile as imagefile
from agent.bench.scene import generate_screen


def noise(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Every byte value, in no order: the Up filter wraps around in both directions."""
    channels = len(mode)
    data = random.Random(seed).randbytes(size[0] * size[1] * channels)
    return Image.frombytes(mode, size, data)


def chunks(path: Path) -> list[tuple[bytes, int]]:
    """The file's chunks as (type, data length), checking each CRC."""
    data, found, at = path.read_bytes(), [], 8
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + body)
        found.append((kind, length))
        at += 12 + length
    return found


def assert_round_trip(image: Image.Image, path: Path) -> None:
    with Image.open(path) as png:
        png.verify()
    with Image.open(path) as png:
        assert (png.format, png.mode, png.size) == ("PNG", image.mode, image.size)
        assert png.tobytes() == image.tobytes()


SIZES = [(1, 1), (3, 2), (1000, 7), (7, 1000)]
IMAGES: dict[str, Callable[[], Image.Image]] = {
    f"{mode} {w}x{h}": partial(noise, mode, (w, h)) for mode in ("RGB", "L") for w, h in SIZES
}
IMAGES["RGB desktop 2560x1440"] = lambda: generate_screen((2560, 1440))
IMAGES["L desktop 2560x1440"] = lambda: generate_screen((2560, 1440)).convert("L")


@pytest.mark.parametrize("name", IMAGES)
def test_save_png_round_trips_byte_exact_through_pillow(tmp_path, name):
    image = IMAGES[name]()
    path = tmp_path / "shot.png"
    imagefile.save_png(image, path)
    assert_round_trip(image, path)
    found = chunks(path)
    kinds = [kind for kind, _ in found]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and set(kinds[1:-1]) == {b"IDAT"}, kinds
    assert max(length for kind, length in found if kind == b"IDAT") <= imagefile.IDAT_BYTES


def test_a_desktop_is_written_in_several_idat_chunks_with_the_up_filter_on_every_row(tmp_path):
    image = generate_screen((3840, 2160))
    path = tmp_path / "4k.png"
    imagefile.save_png(image, path)
    assert_round_trip(image, path)
    data = path.read_bytes()
    idat, at = b"", 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        if data[at + 4 : at + 8] == b"IDAT":
            idat += data[at + 8 : at + 8 + length]
        at += 12 + length
    assert len(idat) > imagefile.IDAT_BYTES  # so more than one chunk
    raw = zlib.decompress(idat)
    stride = 3840 * 3 + 1
    assert len(raw) == stride * 2160 and set(raw[::stride]) == {imagefile.UP}


@pytest.fixture
def without_isal(monkeypatch):
    """agent.imagefile imported where isal cannot be imported; the real module again afterwards."""
    monkeypatch.setitem(sys.modules, "isal", None)
    yield importlib.reload(imagefile)
    monkeypatch.undo()
    importlib.reload(imagefile)


def test_without_isal_zlib_writes_the_same_pixels(tmp_path, without_isal):
    assert without_isal.deflate is zlib
    for image in (generate_screen((1280, 800)), noise("L", (1000, 7))):
        path = tmp_path / f"{image.mode}.png"
        without_isal.save_png(image, path)
        assert_round_trip(image, path)


def test_isal_is_used_where_it_is_installed():
    pytest.importorskip("isal")
    assert imagefile.deflate.__name__ == "isal.isal_zlib"


@pytest.mark.parametrize("mode", ["RGBA", "I;16", "P", "1"])
def test_other_modes_round_trip_through_pillows_encoder(tmp_path, mode):
    image = noise("RGBA", (33, 17)).convert(mode) if mode != "I;16" else Image.new("I;16", (33, 17), 54321)
    path = tmp_path / "other.png"
    imagefile.save_png(image, path)
    assert_round_trip(image, path)


def test_a_failed_write_raises_oserror(tmp_path):
    image = noise("RGB", (64, 40))
    with pytest.raises(FileNotFoundError):
        imagefile.save_png(image, tmp_path / "no-such-folder" / "shot.png")
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    (tmp_path / "full.png").symlink_to("/dev/full")  # every write fails: a full disk
    with pytest.raises(OSError) as info:
        imagefile.save_png(generate_screen((1280, 800)), tmp_path / "full.png")
    assert info.value.errno == 28
