"""The desktop the bench captures. Offline, ``generate_screen(size)`` paints a realistic
desktop (photo wallpaper, icons, a code editor, a file list, a browser page with a photo, a
dialog, a task bar) and ``MemoryScreen`` serves it as mss delivers a capture. Live,
``live_desktop(size)`` runs a private Xvfb showing the same scene as real Tk windows (the
program ``agent.bench.desktop_app``, built from ``photo`` and ``code_lines``)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from agent.capture import Screenshot, thumbnail
from agent.errors import UsageError
from agent.geometry import MonitorGeometry
from agent.image import Bgrx
from agent.xvfb import have_xvfb, xvfb_display

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
LOOP_SOURCE = PROJECT_ROOT / "agent" / "loop.py"  # the text in the editor window


def _font(names: tuple[str, ...], size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for name in names:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def photo(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A photo-like field: smooth colours with a little grain (a wallpaper, a picture)."""
    small = Image.new("RGB", (16, 9))
    small.putdata([(rng.randrange(40, 220), rng.randrange(60, 200), rng.randrange(80, 255)) for _ in range(144)])
    smooth = small.resize(size, Image.Resampling.BICUBIC)
    return Image.blend(smooth, Image.effect_noise(size, 18).convert("RGB"), 0.12)


def code_lines() -> list[str]:
    """The lines of deskpilot's own loop.py: real code for the editor window."""
    return LOOP_SOURCE.read_text(encoding="utf-8").splitlines()


def generate_screen(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A realistic desktop: photo wallpaper, icons, an editor, a file list, a web page, a
    dialog and a task bar. Checked against an Xvfb capture of the live desktop at 1920x1080:
    PNG and JPEG sizes and encode times within 10 %."""
    width, height = size
    rng = random.Random(seed)
    image = photo(size, rng)
    draw = ImageDraw.Draw(image)
    mono = _font(("DejaVuSansMono.ttf", "Menlo.ttc", "consola.ttf"), 13)
    sans = _font(("DejaVuSans.ttf", "Arial.ttf", "arial.ttf"), 13)
    serif = _font(("DejaVuSerif.ttf", "Georgia.ttf", "georgia.ttf"), 15)
    for i, name in enumerate(("Home", "Documents", "Trash", "Projects", "Terminal")):
        draw.rectangle((24, 24 + 90 * i, 72, 72 + 90 * i), fill="#3a6ea5", outline="white")
        draw.text((48, 84 + 90 * i), name, fill="white", font=sans, anchor="mt")

    def window(title: str, x: float, y: float, w: float, h: float) -> tuple[int, int, int, int]:
        box = (int(x * width), int(y * height), int((x + w) * width), int((y + h) * height))
        draw.rectangle(box, fill="#fdfdfd", outline="#6b6b6b")
        draw.rectangle((box[0], box[1], box[2], box[1] + 22), fill="#c9d6ea")
        draw.text(((box[0] + box[2]) // 2, box[1] + 4), title, fill="#333333", font=sans, anchor="mt")
        return box[0] + 4, box[1] + 26, box[2] - 4, box[3] - 4

    left, top, right, bottom = window("Preferences", 0.6, 0.05, 0.3, 0.3)
    for i, label in enumerate(("Name", "Email", "Server", "Port")):
        y = top + 12 + 30 * i
        draw.text((left + 80, y), f"{label}:", fill="black", font=sans, anchor="ra")
        draw.rectangle((left + 90, y - 3, right - 12, y + 19), fill="white", outline="#8a8a8a")
        draw.text((left + 95, y), f"value {i}", fill="black", font=sans)
    for i, label in enumerate(("Cancel", "OK")):
        x = left + 90 + 100 * i
        draw.rectangle((x, top + 150, x + 80, top + 176), fill="#e1e1e1", outline="#707070")
        draw.text((x + 40, top + 157), label, fill="black", font=sans, anchor="mt")
    left, top, right, bottom = window("News - Browser", 0.25, 0.35, 0.55, 0.55)
    draw.rectangle((left, top, right, top + 24), fill="white", outline="#8a8a8a")
    draw.text((left + 6, top + 5), "https://news.example.org/today", fill="#1a0dab", font=sans)
    photo_size = (int(width * 0.18), int(height * 0.2))
    image.paste(photo(photo_size, rng), (left + 10, top + 40))
    words = "the quick brown fox jumps over lazy dog desktop agent model screen window button".split()
    y = top + 40
    for _ in range(int((bottom - top - 50) / 20)):
        line = " ".join(rng.choice(words) for _ in range(int(width * 0.33) // 70))
        draw.text((left + photo_size[0] + 24, y), line, fill="black", font=serif)
        y += 20
    left, top, right, bottom = window("Files - /home/user/projects", 0.45, 0.12, 0.42, 0.5)
    for i, y in enumerate(range(top + 4, bottom - 18, 20)):
        if i == 0:
            draw.rectangle((left, y - 2, right, y + 16), fill="#e8e8e8")
            row = ("Name", "Size", "Modified")
        else:
            row = (
                f"{rng.choice(['report', 'notes', 'draft', 'data'])}_{i:03d}.{rng.choice(['txt', 'png', 'py'])}",
                f"{rng.randrange(1, 9999)} KB",
                f"2024-0{rng.randrange(1, 9)}-{rng.randrange(10, 28)} 14:0{i % 10}",
            )
        for text, x in zip(row, (left + 8, left + 300, left + 400)):
            draw.text((x, y), text, fill="black", font=sans)
    left, top, right, bottom = window("loop.py - Editor", 0.05, 0.06, 0.5, 0.62)
    for i, (line, y) in enumerate(zip(code_lines(), range(top + 4, bottom - 14, 16))):
        if i == 11:
            draw.rectangle((left, y - 1, right, y + 15), fill="#fff3b0")
        draw.text((left + 4, y), line, fill="black", font=mono)
    draw.rectangle((0, height - 32, width, height), fill="#2b2b2b")
    for i, name in enumerate(("Menu", "Editor", "Files", "Settings", "Browser")):
        draw.rectangle((4 + 90 * i, height - 29, 88 + 90 * i, height - 3), fill="#3c3c3c")
        draw.text((46 + 90 * i, height - 23), name, fill="white", font=sans, anchor="mt")
    draw.text((width - 12, height - 23), "Tue 14:32", fill="white", font=sans, anchor="ra")
    return image


class MemoryScreen:
    """A screen held as the BGRX bytes mss returns. ``capture()`` and ``probe()`` do what
    MssScreen's do after the X server's copy: mss copies the frame out of its shared memory
    into a new buffer (so does ``capture`` here), and the rest is the same code."""

    def __init__(self, image: Image.Image) -> None:
        self.size = image.size
        self._bgrx = image.convert("RGBA").tobytes("raw", "BGRA")

    def grab(self) -> Bgrx:
        """The pixels as a fresh copy, as mss hands over a grab."""
        return Bgrx(bytearray(self._bgrx), self.size)

    def capture(self) -> Screenshot:
        return Screenshot(None, MonitorGeometry(0, 0, *self.size), self.grab())

    def probe(self) -> tuple[Image.Image, Screenshot]:
        shot = self.capture()
        return thumbnail(shot.pixels), shot  # type: ignore[arg-type]

    def thumbnail(self) -> Image.Image:
        return self.probe()[0]


def check_live() -> None:
    """Raise UsageError unless a live desktop can start here (Xvfb on PATH, tkinter importable)."""
    if not have_xvfb():
        raise UsageError("--live needs Xvfb on PATH (apt install xvfb)")
    if importlib.util.find_spec("tkinter") is None:
        raise UsageError("--live needs tkinter for the bench desktop (apt install python3-tk)")


@contextlib.contextmanager
def live_desktop(size: tuple[int, int]) -> Iterator[str]:
    """A private Xvfb of ``size`` with openbox (if installed) and the bench desktop; yields
    the display name, set as DISPLAY while it lasts."""
    check_live()
    with xvfb_display(*size) as display:
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(PROJECT_ROOT), os.environ.get("PYTHONPATH"))))
        )
        app = subprocess.Popen(
            [sys.executable, "-m", "agent.bench.desktop_app", str(size[0]), str(size[1])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert app.stdout is not None
            if app.stdout.readline().strip() != "ready":
                raise UsageError("the bench desktop did not start under Xvfb (is tkinter installed?)")
            time.sleep(1.0)  # let every window map and paint
            yield display
        finally:
            app.terminate()
            try:
                app.wait(timeout=5)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
