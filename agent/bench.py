"""``deskpilot bench``: what everything around the model costs, each figure beside a baseline.

Every figure is a median over ``--repeat`` runs, measured in the same process as its
baseline (interleaved where both are timed):

* perception per step: what stands between a capture and the request going out
  (capture, resize, encode, base64 and the JSON request body with 4 history shots) at
  1280x800, 1920x1080 and 2560x1440; the half-size history shot of the step is made
  in the background while the model thinks (as the loop does) and profiled apart,
  against a full-size capture (PIL ImageGrab when live) saved as a full-size PNG at
  Pillow's default level; a per-stage profile of ours is printed under the table;
* settle after a click on a static window (live only) against a fixed 2.0 s sleep;
* input tokens per step (``agent.protocol.build_body``'s estimate) with 0 and 4 history
  shots at each size, against full-size screenshots kept in full;
* replay check throughput over a generated 500-step recording (ScriptedPlanner,
  ImageScreen, DryRunExecutor, JsonlRecorder), against re-running those steps through
  the loop (``replay.simulate``), and resident memory across the 500-step run;
* whole-step overhead without the model: ``run_episode`` against a FakeModelServer that
  answers at once, against the same loop sending full-size PNGs.

Without ``--live`` the screens are generated desktops (wallpaper, icons, a code editor,
a file list, a browser page with a photo, a dialog, a task bar) held in memory as mss
delivers them; with ``--live`` each size is a private Xvfb (+ openbox) showing the same
kind of desktop as real Tk windows, captured with mss. ``--json PATH`` writes every row.
"""

from __future__ import annotations

import base64
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from agent.argtypes import positive_int
from agent.capture import Screenshot
from agent.config import parse_encoding
from agent.errors import UsageError
from agent.geometry import MAX_IMAGE_TOKENS, MonitorGeometry, fit_to_tokens, image_tokens
from agent.image import SentImage, encode_bytes, prepare_for_model, resize_for_model

SIZES = ((1280, 800), (1920, 1080), (2560, 1440))
TASK = "open the settings and turn on dark mode"
DEFAULT_ENCODING = "jpeg:90"
BASELINE_ENCODING = "png:6"  # Pillow's default PNG level: what a plain image.save(..., "PNG") does
SETTLE_BASELINE_S = 2.0  # the fixed sleep peers use (Anthropic's computer-use demo)
PRICE_IN = 0.14  # USD per million input tokens (SiliconFlow)


@dataclass
class Row:
    """One line of the table."""

    id: str
    metric: str
    case: str
    unit: str
    ours: float | None
    baseline: float | None
    better: str = "lower"  # lower | higher: which way is good (for the ratio)
    target: str = ""
    met: bool | None = None
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if not self.ours or not self.baseline:
            return None
        return self.baseline / self.ours if self.better == "lower" else self.ours / self.baseline


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def rss_mb() -> float:
    """Resident memory of this process now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# --- screens -----------------------------------------------------------------------------


def _font(names: tuple[str, ...], size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for name in names:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def _photo(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A photo-like field: smooth colours with a little grain (a wallpaper, a picture)."""
    small = Image.new("RGB", (16, 9))
    small.putdata([(rng.randrange(40, 220), rng.randrange(60, 200), rng.randrange(80, 255)) for _ in range(144)])
    smooth = small.resize(size, Image.Resampling.BICUBIC)
    return Image.blend(smooth, Image.effect_noise(size, 18).convert("RGB"), 0.12)


def _code_lines() -> list[str]:
    return (Path(__file__).with_name("loop.py")).read_text(encoding="utf-8").splitlines()


def generate_screen(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A realistic desktop: photo wallpaper, icons, an editor, a file list, a web page, a
    dialog and a task bar. Checked against an Xvfb capture of the live desktop at 1920x1080:
    PNG and JPEG sizes and encode times within 10 %."""
    width, height = size
    rng = random.Random(seed)
    image = _photo(size, rng)
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
    image.paste(_photo(photo_size, rng), (left + 10, top + 40))
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
    for i, (line, y) in enumerate(zip(_code_lines(), range(top + 4, bottom - 14, 16))):
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
    """A screen held as the BGRX bytes mss returns; capture() does what MssScreen.capture
    does after its grab, so offline perception times everything but the X server copy."""

    def __init__(self, image: Image.Image) -> None:
        self.size = image.size
        self._bgrx = image.convert("RGBA").tobytes("raw", "BGRA")

    def capture(self) -> Screenshot:
        image = Image.frombytes("RGB", self.size, self._bgrx, "raw", "BGRX")
        return Screenshot(
            image,
            MonitorGeometry(0, 0, *self.size),
        )


DESKTOP_APP = r"""
import random, sys, tkinter as tk
from tkinter import ttk
from PIL import ImageTk
from agent.bench import _code_lines, _photo
W, H = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(0)
root = tk.Tk(); root.withdraw(); keep = []
def top(title, x, y, w, h, kind=None):
    t = tk.Toplevel(root); t.title(title); t.geometry(f"{int(w * W)}x{int(h * H)}+{int(x * W)}+{int(y * H)}")
    if kind: t.attributes("-type", kind)
    return t
wall = top("wallpaper", 0, 0, 1, 1, "desktop"); canvas = tk.Canvas(wall, highlightthickness=0)
canvas.pack(fill="both", expand=True); keep.append(ImageTk.PhotoImage(_photo((W, H), rng)))
canvas.create_image(0, 0, image=keep[-1], anchor="nw")
for i, name in enumerate(("Home", "Documents", "Trash", "Projects", "Terminal")):
    canvas.create_rectangle(24, 24 + 90 * i, 72, 72 + 90 * i, fill="#3a6ea5", outline="white")
    canvas.create_text(48, 84 + 90 * i, text=name, fill="white")
bar = top("panel", 0, 1 - 32 / H, 1, 32 / H, "dock"); bar.configure(bg="#2b2b2b")
for name in ("Menu", "Editor", "Files", "Settings", "Browser"):
    tk.Button(bar, text=name, bg="#3c3c3c", fg="white", relief="flat").pack(side="left", padx=2)
tk.Label(bar, text="Tue 14:32", bg="#2b2b2b", fg="white").pack(side="right", padx=8)
dialog = top("Preferences", 0.6, 0.05, 0.3, 0.3)
for i, label in enumerate(("Name", "Email", "Server", "Port")):
    tk.Label(dialog, text=label + ":").grid(row=i, column=0, sticky="e", padx=6, pady=4)
    entry = tk.Entry(dialog); entry.insert(0, f"value {i}"); entry.grid(row=i, column=1, padx=6)
tk.Button(dialog, text="Cancel").grid(row=5, column=0, pady=8); tk.Button(dialog, text="OK").grid(row=5, column=1)
browser = top("News - Browser", 0.25, 0.35, 0.55, 0.55)
tk.Entry(browser).pack(fill="x"); body = tk.Frame(browser, bg="white"); body.pack(fill="both", expand=True)
keep.append(ImageTk.PhotoImage(_photo((int(W * 0.18), int(H * 0.2)), rng)))
tk.Label(body, image=keep[-1], bg="white").pack(side="left", anchor="n", padx=10, pady=10)
words = "the quick brown fox jumps over lazy dog desktop agent model screen window button".split()
tk.Message(body, width=int(W * 0.33), bg="white", font=("DejaVu Serif", 11),
           text="\n\n".join(" ".join(rng.choice(words) for _ in range(60)) for _ in range(4))).pack(side="left")
files = top("Files - /home/user/projects", 0.45, 0.12, 0.42, 0.5)
tree = ttk.Treeview(files, columns=("size", "modified")); tree.pack(fill="both", expand=True)
for i in range(60):
    tree.insert("", "end", text=f"{rng.choice(['report', 'notes', 'draft', 'data'])}_{i:03d}.txt",
                values=(f"{rng.randrange(1, 9999)} KB", f"2024-0{rng.randrange(1, 9)}-{rng.randrange(10, 28)}"))
editor = top("loop.py - Editor", 0.05, 0.06, 0.5, 0.62)
text = tk.Text(editor, font=("DejaVu Sans Mono", 10)); text.pack(fill="both", expand=True)
text.insert("1.0", "\n".join(_code_lines()))
root.after(300, lambda: print("ready", flush=True))
root.mainloop()
"""


@contextlib.contextmanager
def live_desktop(size: tuple[int, int]) -> Iterator[str]:
    """A private Xvfb of ``size`` with openbox (if installed) and the bench desktop; yields
    the display name, set as DISPLAY while it lasts."""
    from agent.xvfb import have_xvfb, xvfb_display

    if not have_xvfb():
        raise UsageError("--live needs Xvfb on PATH (apt install xvfb)")
    with xvfb_display(*size) as display:
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        app = subprocess.Popen(
            [sys.executable, "-c", DESKTOP_APP, str(size[0]), str(size[1])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            if app.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
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


# --- perception --------------------------------------------------------------------------


def _settings(**overrides: Any):
    from agent.config import Settings

    return Settings.resolve("vllm", **overrides)


def _history(half: SentImage, shots: int) -> list:
    from agent.protocol import HistoryEntry

    return [
        HistoryEntry(
            i,
            "The settings button is in the top bar; I will click it.",
            "left_click(start_box='[912,40]', element_info='Settings')",
            half,
        )
        for i in range(1, shots + 1)
    ]


def perception_step(screen: Any, settings: Any, history: list) -> int:
    """One step's perception as the loop does it, up to the request going out; returns the
    bytes of the request body. (The loop makes the half-size history shot in a background
    thread during the model's reply; ``stage_profile`` times it on its own.)"""
    from agent.protocol import StepRequest, build_body

    shot = screen.capture()
    sent = prepare_for_model(shot.image, settings.max_image_tokens, settings.image_encoding)
    body, _ = build_body(StepRequest(TASK, len(history) + 1, sent, history, []), settings, use_tools=True)
    return len(json.dumps(body))


def baseline_step(grab: Callable[[], Image.Image]) -> int:
    """A peer's perception: a full-size capture saved as a full-size PNG, one image per body."""
    image = grab()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # Pillow's default compression, level 6
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    body = {
        "model": "glm-4.5v",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": TASK}, {"type": "image_url", "image_url": {"url": url}}],
            }
        ],
    }
    return len(json.dumps(body))


def stage_profile(screen: Any, settings: Any, history: list, repeat: int) -> dict[str, float]:
    """Median ms of each perception stage, timed one by one."""
    from actions.schema import tool_schemas
    from agent.protocol import StepRequest, build_body

    stages: dict[str, list[float]] = {
        k: [] for k in ("capture", "resize", "encode", "base64", "half_shot", "body", "tool_schemas")
    }
    for _ in range(repeat):
        t = time.perf_counter()
        shot = screen.capture()
        stages["capture"].append(time.perf_counter() - t)
        size = fit_to_tokens(shot.image.size, settings.max_image_tokens)
        t = time.perf_counter()
        resized = resize_for_model(shot.image, size)
        stages["resize"].append(time.perf_counter() - t)
        t = time.perf_counter()
        raw, _ = encode_bytes(resized, settings.image_encoding)
        stages["encode"].append(time.perf_counter() - t)
        t = time.perf_counter()
        base64.b64encode(raw).decode("ascii")
        stages["base64"].append(time.perf_counter() - t)
        t = time.perf_counter()
        prepare_for_model(shot.image, settings.max_image_tokens, settings.image_encoding, half=True)
        stages["half_shot"].append(time.perf_counter() - t)
        sent = prepare_for_model(shot.image, settings.max_image_tokens, settings.image_encoding)
        t = time.perf_counter()
        body, _ = build_body(StepRequest(TASK, len(history) + 1, sent, history, []), settings, use_tools=True)
        json.dumps(body)
        stages["body"].append(time.perf_counter() - t)
        t = time.perf_counter()
        tool_schemas()  # the copy build_body puts in the body (their token estimate is cached)
        stages["tool_schemas"].append(time.perf_counter() - t)
        if hasattr(screen, "_mss"):  # MssScreen: the same grab converted from mss's buffer, no bytes copy
            t = time.perf_counter()
            raw = screen._mss.grab(screen.region)
            Image.frombytes("RGB", raw.size, raw.raw, "raw", "BGRX")
            stages.setdefault("capture_from_buffer", []).append(time.perf_counter() - t)
    return {k: median_ms(v) for k, v in stages.items()}


def bench_perception(
    size: tuple[int, int], screen: Any, grab: Callable[[], Image.Image], encoding: str, repeat: int
) -> Row:
    settings = _settings(image_encoding=encoding)
    half = prepare_for_model(screen.capture().image, settings.max_image_tokens, encoding, half=True)
    history = _history(half, settings.history_images)
    ours, base = [], []
    perception_step(screen, settings, history)  # warm up caches and allocators
    for _ in range(repeat):  # interleaved, so both see the same machine load
        t = time.perf_counter()
        body_bytes = perception_step(screen, settings, history)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        base_bytes = baseline_step(grab)
        base.append(time.perf_counter() - t)
    sent = prepare_for_model(screen.capture().image, settings.max_image_tokens, encoding)
    row = Row(
        f"perception_ms/{size[0]}x{size[1]}",
        "perception per step (ms)",
        f"{size[0]}x{size[1]}",
        "ms",
        median_ms(ours),
        median_ms(base),
    )
    row.detail = {
        "stages_ms": stage_profile(screen, settings, history, repeat),
        "encoding": encoding,
        "sent_size": list(sent.size),
        "sent_bytes": sent.n_bytes,
        "body_bytes": body_bytes,
        "baseline_body_bytes": base_bytes,
    }
    if size == (1920, 1080):
        row.target = "<= 15 ms, >= 5x"
        row.met = row.ours <= 15 and (row.ratio or 0) >= 5
    return row


# --- settle (live) -----------------------------------------------------------------------


def _clicker() -> Callable[[int, int], None] | None:
    if shutil.which("xdotool"):
        return lambda x, y: subprocess.run(
            ["xdotool", "mousemove", "--sync", str(x), str(y), "click", "1"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        import pyautogui
    except Exception:  # pyautogui fails at import time without a usable display
        return None
    return lambda x, y: pyautogui.click(x, y, _pause=False)


def bench_settle(screen: Any, size: tuple[int, int], repeat: int) -> Row:
    from agent.settle import AdaptiveSettle

    row = Row("settle_ms/static", "settle after a click (ms)", "static window", "ms", None, None, target="<= 150 ms")
    click = _clicker()
    if click is None:
        row.note = "no xdotool or pyautogui to click with"
        return row
    settle = AdaptiveSettle.for_screen(screen)
    ours, probes = [], []
    for i in range(repeat):
        click(int(size[0] * (0.15 + 0.02 * (i % 5))), int(size[1] * 0.3))  # into the editor's text
        ours.append(settle())
        probes.append(settle.probes)
    base = []
    for _ in range(min(3, repeat)):
        t = time.perf_counter()
        time.sleep(SETTLE_BASELINE_S)
        base.append(time.perf_counter() - t)
    row.ours, row.baseline = median_ms(ours), median_ms(base)
    row.met = row.ours <= 150
    row.detail = {"samples_ms": [round(s * 1000, 1) for s in ours], "probes": probes, "config": asdict(settle.config)}
    return row


# --- tokens ------------------------------------------------------------------------------


def bench_tokens(size: tuple[int, int], screen: Any, encoding: str) -> list[Row]:
    from agent.protocol import StepRequest, build_body

    settings = _settings(image_encoding=encoding)
    shot = screen.capture()
    sent = prepare_for_model(shot.image, settings.max_image_tokens, encoding)
    half = prepare_for_model(shot.image, settings.max_image_tokens, encoding, half=True)
    full = SentImage("data:image/png;base64,", size, "png", 0, image_tokens(size))  # only tokens count here
    rows = []
    for shots in (0, 4):
        _, ours = build_body(StepRequest(TASK, shots + 1, sent, _history(half, shots), []), settings, True)
        _, base = build_body(
            StepRequest(TASK, shots + 1, full, _history(full, shots), []),
            _settings(max_image_tokens=MAX_IMAGE_TOKENS),
            True,
        )
        row = Row(
            f"tokens/{size[0]}x{size[1]}/h{shots}",
            "input tokens per step",
            f"{size[0]}x{size[1]}, {shots} history",
            "tokens",
            ours.estimated_tokens,
            base.estimated_tokens,
        )
        images = sent.tokens + shots * half.tokens
        row.detail = {
            "image_tokens": images,
            "text_tokens": ours.estimated_tokens - images,
            "sent_size": list(sent.size),
            "half_size": list(half.size),
            "usd_per_step": round(ours.estimated_tokens * PRICE_IN / 1e6, 6),
            "baseline_usd_per_step": round(base.estimated_tokens * PRICE_IN / 1e6, 6),
        }
        if size == (1920, 1080) and shots == 4:
            row.target, row.met = "<= 5,600", ours.estimated_tokens <= 5600
        rows.append(row)
    return rows


# --- replay check and memory ---------------------------------------------------------------

REPLIES = (
    "The Settings button is in the top bar.\n<|begin_of_box|>left_click(start_box='[912,40]', "
    "element_info='Settings button')<|end_of_box|>\nMemory: []",
    "I will type the name.\n<|begin_of_box|>type(content='dark mode')<|end_of_box|>\nMemory: [\"typed\"]",
    "Confirm with the keyboard.\n<|begin_of_box|>key(keys='ctrl+s')<|end_of_box|>\nMemory: []",
    "Scroll to the appearance section.\n<|begin_of_box|>scroll(start_box='[500,600]', direction='down', "
    "step=5)<|end_of_box|>\nMemory: []",
    {
        "content": "Open the item.",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {
                    "name": "left_double_click",
                    "arguments": '{"start_box": "[250,333]", "element_info": "report"}',
                },
            }
        ],
    },
)


def simulated_recording(
    folder: Path, steps: int, screen_size: tuple[int, int], encoding: str, samples: list[float]
) -> Path:
    """A ``steps``-step recording made by the loop with scripted parts; RSS sampled per step.

    The ScriptedPlanner's log of calls is emptied after each step: it keeps every request
    with its images (about 1 MB a step at 1280x800), which a live GLMPlanner does not.
    """
    from actions.executor import DryRunExecutor
    from agent.capture import ImageScreen
    from agent.loop import Limits, run_episode
    from agent.planner import ScriptedPlanner
    from agent.trajectory import JsonlRecorder

    screens = folder / "screens"
    screens.mkdir()
    for seed in range(3):
        generate_screen(screen_size, seed).save(screens / f"{seed}.png", compress_level=1)
    replies: list[Any] = [REPLIES[i % len(REPLIES)] for i in range(steps - 1)] + ["DONE(answer='dark mode is on')"]
    settings = _settings(max_steps=steps, image_encoding=encoding)
    recorder = JsonlRecorder(folder / "recordings", TASK, settings.public(), mode="dry-run")
    planner = ScriptedPlanner(replies)

    def on_step(step: Any) -> None:
        planner.calls.clear()
        samples.append(rss_mb())

    run_episode(
        TASK,
        screen=ImageScreen(screens),
        planner=planner,
        executor=DryRunExecutor(),
        settings=settings,
        limits=Limits(max_steps=steps),
        recorder=recorder,
        on_step=on_step,
    )
    return Path(recorder.path)


def _check(path: Path) -> int:
    """Load and re-parse + re-ground every step; returns the number of differences."""
    from agent.replay.offline import check
    from agent.trajectory import load

    return len(check(load(path)))


def _rerun(path: Path, steps: int) -> None:
    """The baseline: the first ``steps`` steps re-run through the loop (replay simulate)."""
    from agent.trajectory import load

    recording = load(path)
    recording.steps = recording.steps[:steps]
    try:
        from agent.replay.offline import simulate
    except ImportError:
        simulate = None
    if simulate is not None:
        simulate(recording)
        return
    from actions.executor import DryRunExecutor
    from agent.capture import ImageScreen
    from agent.loop import Limits, run_episode
    from agent.planner import ScriptedPlanner
    from agent.protocol import RawReply

    screen = ImageScreen(path / recording.steps[0].screenshot)
    screen.files = [path / s.screenshot for s in recording.steps]
    replies = [RawReply.model_validate(a.raw) for s in recording.steps for a in s.attempts]
    run_episode(
        recording.header.task,
        screen=screen,
        planner=ScriptedPlanner(replies),
        executor=DryRunExecutor(),
        settings=_settings(),
        limits=Limits(max_steps=len(recording.steps)),
    )


def bench_replay(steps: int, repeat: int, screen_size: tuple[int, int], encoding: str) -> list[Row]:
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="deskpilot-bench-") as tmp:
        before = rss_mb()
        t = time.perf_counter()
        path = simulated_recording(Path(tmp), steps, screen_size, encoding, samples)
        made_s = time.perf_counter() - t
        ours, base, differences = [], [], 0
        rerun_steps = min(steps, 50)
        for _ in range(max(1, min(repeat, 5))):
            t = time.perf_counter()
            differences = _check(path)
            ours.append(steps / (time.perf_counter() - t))
            t = time.perf_counter()
            _rerun(path, rerun_steps)
            base.append(rerun_steps / (time.perf_counter() - t))
        after_check = rss_mb()
    throughput = Row(
        "replay_check_steps_per_s",
        "replay check (steps/s)",
        f"{steps} steps",
        "steps/s",
        round(statistics.median(ours), 1),
        round(statistics.median(base), 1),
        better="higher",
        target=">= 500",
        detail={"differences": differences, "baseline_steps": rerun_steps, "screen_size": list(screen_size)},
    )
    throughput.met = throughput.ours >= 500 and differences == 0
    if differences:
        throughput.note = f"{differences} steps differed on re-check"
    early = samples[min(len(samples) - 1, max(0, steps // 10 - 1))]
    peak = Row(
        "memory_peak_mb",
        "resident memory (MB)",
        f"peak over {steps}-step run",
        "MB",
        round(max(samples + [after_check]), 1),
        round(before, 1),
        target="<= 200",
        detail={
            "before_mb": round(before, 1),
            "after_check_mb": round(after_check, 1),
            "samples_mb": [round(s, 1) for s in samples[:: max(1, steps // 20)]],
            "run_s": round(made_s, 2),
        },
    )
    peak.met = peak.ours <= 200
    growth = Row(
        "memory_growth_mb",
        "resident memory growth (MB)",
        f"step {max(1, steps // 10)} -> {steps}",
        "MB",
        round(samples[-1] - early, 1),
        None,
        target="flat",
    )
    return [throughput, peak, growth]


# --- whole step ----------------------------------------------------------------------------


def _step_brain(body: dict[str, Any]) -> str:
    return REPLIES[0]


def loop_steps(screen: Any, settings: Any, steps: int) -> tuple[list[float], dict[str, float]]:
    """Run the loop for ``steps`` steps against the fake server; wall seconds per step (the
    first step, which opens the connection, left out) and median timings by part."""
    from actions.executor import DryRunExecutor
    from agent.loop import Limits, run_episode
    from agent.planner import GLMPlanner
    from agent.trajectory import JsonlRecorder

    marks: list[float] = []
    recorded: list[Any] = []

    def on_step(step: Any) -> None:
        marks.append(time.perf_counter())
        recorded.append(step.timings)

    planner = GLMPlanner(settings)
    with tempfile.TemporaryDirectory(prefix="deskpilot-bench-") as tmp:
        recorder = JsonlRecorder(tmp, TASK, settings.public())
        try:
            run_episode(
                TASK,
                screen=screen,
                planner=planner,
                executor=DryRunExecutor(),
                settings=settings,
                limits=Limits(max_steps=steps + 1),
                recorder=recorder,
                on_step=on_step,
            )
        finally:
            planner.close()
    walls = [b - a for a, b in zip(marks, marks[1:])]
    parts = {name: median_ms([getattr(t, name) for t in recorded[1:]]) for name in ("capture_s", "model_s")}
    return walls, parts


def bench_whole_step(screen: Any, size: tuple[int, int], encoding: str, steps: int) -> Row:
    from agent.fakeserver import FakeModelServer
    from agent.trajectory import JsonlRecorder, Outcome

    with FakeModelServer(_step_brain) as server:
        ours, ours_parts = loop_steps(screen, _settings(base_url=server.base_url, image_encoding=encoding), steps)
        base, base_parts = loop_steps(
            screen,
            _settings(base_url=server.base_url, image_encoding=BASELINE_ENCODING, max_image_tokens=MAX_IMAGE_TOKENS),
            steps,
        )
    with tempfile.TemporaryDirectory(prefix="deskpilot-bench-") as tmp:  # the recorder's share of a step
        recorder, image, saves = JsonlRecorder(tmp, TASK), screen.capture().image, []
        for number in range(1, steps + 1):
            t = time.perf_counter()
            recorder.save_screenshot(number, image)
            saves.append(time.perf_counter() - t)
        recorder.finish(Outcome(status="done"))
    ours_parts["recorder_png"] = median_ms(saves)
    return Row(
        "whole_step_ms",
        "whole step without model (ms)",
        f"{size[0]}x{size[1]}, instant fake model",
        "ms",
        median_ms(ours),
        median_ms(base),
        detail={
            "ours_parts_ms": ours_parts,
            "baseline_parts_ms": base_parts,
            "steps": steps,
            "note": "capture_s includes the recorder's lossless PNG of the capture; "
            "model_s is the HTTP round trip to the fake server",
        },
    )


# --- the run -------------------------------------------------------------------------------


def run_bench(
    *,
    repeat: int = 7,
    replay_steps: int = 500,
    steps: int = 10,
    encoding: str = DEFAULT_ENCODING,
    live: bool = False,
    replay_size: tuple[int, int] = (1280, 800),
    profile: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Every measurement; returns the JSON-ready result (``rows`` in table order)."""
    parse_encoding(encoding)
    rows: list[Row] = []
    log("replay check and memory ...")
    rows += bench_replay(replay_steps, repeat, replay_size, encoding)  # first: memory before the big screens
    settle_row = Row(
        "settle_ms/static",
        "settle after a click (ms)",
        "static window",
        "ms",
        None,
        None,
        target="<= 150 ms",
        note="live only (--live)",
    )
    perception, tokens, whole, profiles = [], [], None, {}
    for size in SIZES:
        log(f"perception and tokens at {size[0]}x{size[1]} ...")
        with live_desktop(size) if live else contextlib.nullcontext() as display:
            if live:
                from PIL import ImageGrab

                from agent.capture import MssScreen

                screen: Any = MssScreen(1)
                grab: Callable[[], Image.Image] = lambda: ImageGrab.grab(xdisplay=display)
            else:
                screen = MemoryScreen(generate_screen(size))
                grab = lambda screen=screen: screen.capture().image  # the same capture: only the processing differs
            try:
                perception.append(bench_perception(size, screen, grab, encoding, repeat))
                tokens += bench_tokens(size, screen, encoding)
                if size == (1920, 1080):
                    if live:
                        log("settle ...")
                        settle_row = bench_settle(screen, size, repeat)
                    log("whole step ...")
                    whole = bench_whole_step(screen, size, encoding, steps)
                    if profile:
                        profiles["perception_1920x1080"] = _cprofile(screen, encoding, repeat)
            finally:
                if hasattr(screen, "close"):
                    screen.close()
    rows = perception + [settle_row] + tokens + rows + [whole]  # type: ignore[list-item]
    return {
        "meta": {
            "mode": "live (Xvfb)" if live else "offline (generated screens)",
            "repeat": repeat,
            "encoding": encoding,
            "baseline_encoding": BASELINE_ENCODING,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        },
        "rows": [dict(asdict(r), ratio=r.ratio) for r in rows],
        "profiles": profiles,
    }


def _cprofile(screen: Any, encoding: str, repeat: int) -> str:
    settings = _settings(image_encoding=encoding)
    history = _history(prepare_for_model(screen.capture().image, settings.max_image_tokens, encoding, half=True), 4)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        perception_step(screen, settings, history)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    return out.getvalue()


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("tokens", "steps/s") or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def format_table(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"deskpilot bench: {meta['mode']}, median of {meta['repeat']}, encoding {meta['encoding']}, "
        f"Python {meta['python']}, {meta['cpus']} CPUs"
        + (f", load average {meta['load_average'][0]:.2f}" if meta.get("load_average") else ""),
        f"{'metric':<32}{'case':<32}{'ours':>9}{'baseline':>11}{'ratio':>8}  {'target':<17}met",
    ]
    previous = None
    for row in result["rows"]:
        metric = row["metric"] if row["metric"] != previous else ""
        previous = row["metric"]
        ratio = f"{row['ratio']:.1f}x" if row["ratio"] else "-"
        met = {True: "yes", False: "NO", None: ""}[row["met"]]
        lines.append(
            f"{metric:<32}{row['case']:<32}{_fmt(row['ours'], row['unit']):>9}"
            f"{_fmt(row['baseline'], row['unit']):>11}{ratio:>8}  {row['target']:<17}{met}"
            + (f"  ({row['note']})" if row["note"] else "")
        )
    lines.append("")
    for row in result["rows"]:
        if row["id"].startswith("perception_ms/"):
            st = dict(row["detail"]["stages_ms"])
            capture = f"capture {st['capture']:.1f}" + (
                f" (from mss's buffer {st['capture_from_buffer']:.1f})" if "capture_from_buffer" in st else ""
            )
            lines.append(
                f"profile {row['case']:>9} (ms): {capture} | resize {st['resize']:.1f} | encode "
                f"{st['encode']:.1f} | base64 {st['base64']:.1f} | "
                f"body {st['body']:.1f} (tool schemas {st['tool_schemas']:.1f} of it); stages sum to "
                f"{sum(st[k] for k in ('capture', 'resize', 'encode', 'base64', 'body')):.1f}; sent "
                f"{row['detail']['sent_size'][0]}x{row['detail']['sent_size'][1]}, "
                f"{row['detail']['sent_bytes'] / 1024:.0f} KB; half shot {st['half_shot']:.1f} "
                "(made while the model thinks)"
            )
        if row["id"] == "whole_step_ms":
            ours, base = row["detail"]["ours_parts_ms"], row["detail"]["baseline_parts_ms"]
            lines.append(
                f"whole step (ms): ours capture+encode+record {ours['capture_s']:.1f} (the recorder's "
                f"lossless PNG alone: {ours['recorder_png']:.1f}), model round trip {ours['model_s']:.1f}; "
                f"baseline {base['capture_s']:.1f}, {base['model_s']:.1f}"
            )
    lines += [
        "baselines: perception = full-size capture (ImageGrab when live) + full-size PNG (level 6) + base64 + body;",
        f"  settle = fixed {SETTLE_BASELINE_S:.1f} s sleep; tokens = full-size screenshots, history kept full-size;",
        "  replay = re-running the loop on the recorded screens (replay simulate), first 50 steps;",
        "  memory = RSS before the run; whole step = same loop sending full-size PNG (level 6).",
        "ratio = how many times better ours is than the baseline.",
    ]
    return "\n".join(lines)


def add_arguments(bench: Any) -> None:
    """The bench's options (the command in agent.commands.bench declares the parser)."""
    bench.add_argument(
        "--live",
        action="store_true",
        help="capture real Xvfb desktops (one per size) instead of generated screens; adds the settle measurement",
    )
    bench.add_argument("--repeat", type=positive_int, default=7, metavar="N", help="runs per median (default: 7)")
    bench.add_argument(
        "--replay-steps",
        type=positive_int,
        default=500,
        metavar="N",
        help="steps in the simulated recording (default: 500)",
    )
    bench.add_argument(
        "--steps",
        type=positive_int,
        default=10,
        metavar="N",
        help="loop steps timed for the whole-step overhead (default: 10)",
    )
    bench.add_argument(
        "--encoding",
        default=DEFAULT_ENCODING,
        metavar="ENC",
        help=f"png[:LEVEL] or jpeg[:QUALITY] for our side (default: {DEFAULT_ENCODING})",
    )
    bench.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    bench.add_argument("--profile", action="store_true", help="print a cProfile of perception at 1920x1080")
